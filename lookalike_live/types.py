"""Frozen data types that flow between the stages.

Conventions, everywhere in the package:

* images are **BGR uint8, H x W x 3** (OpenCV's order) unless a name says otherwise;
* boxes are ``xyxy`` in pixels of the frame they were found in, float32;
* all faces of one frame live in one object as parallel numpy arrays (N first).

These classes only validate; they hold no behaviour beyond indexing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ShapeError

__all__ = [
    "Frame",
    "FaceDetections",
    "FaceCrops",
    "Embeddings",
    "Match",
    "Track",
    "TrackState",
    "FrameResult",
]


def _check(name: str, arr: Any, shape: tuple[int | None, ...], dtype: Any | None = None) -> np.ndarray:
    """Return ``arr`` as an ndarray after checking its rank, fixed dims and dtype.

    ``shape`` uses ``None`` for a free dimension, e.g. ``(None, 4)`` for (N, 4).
    """
    if not isinstance(arr, np.ndarray):
        raise ShapeError(f"{name} must be a numpy array of shape {_fmt(shape)}, got {type(arr).__name__}")
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape, strict=False)):
        raise ShapeError(f"{name} must have shape {_fmt(shape)}, got {tuple(arr.shape)}")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise ShapeError(f"{name} must have dtype {np.dtype(dtype).name}, got {arr.dtype.name}")
    return arr


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if i == 0 and s is None else ("*" if s is None else str(s)) for i, s in enumerate(shape)) + ")"


def _same_n(owner: str, **arrays: np.ndarray) -> int:
    ns = {k: len(v) for k, v in arrays.items()}
    if len(set(ns.values())) > 1:
        raise ShapeError(f"{owner}: all arrays must have the same length N, got {ns}")
    return next(iter(ns.values())) if ns else 0


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded video frame or photo.

    ``image`` is BGR uint8 (H, W, 3); ``ts_ms`` is the source's timestamp in
    milliseconds (monotonic within a source); ``index`` counts frames from 0. A capture thread
    also stamps ``captured_at`` (``time.monotonic()`` when the frame entered the pipeline: decoded,
    and due when a file plays at its own pace) and ``decode_ms`` (the backend read's duration).
    """

    source_id: str
    index: int
    ts_ms: float
    image: np.ndarray
    captured_at: float | None = None
    decode_ms: float | None = None

    def __post_init__(self) -> None:
        _check("Frame.image (BGR uint8)", self.image, (None, None, 3), np.uint8)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True, eq=False)
class FaceDetections:
    """All faces of one frame: boxes (N,4) xyxy float32, scores (N,), keypoints (N,K,2) pixels.

    MediaPipe BlazeFace gives K=6 keypoints in this order: right eye, left eye
    (from the viewer's side: the subject's right eye appears on the image's left),
    nose tip, mouth centre, right ear tragion, left ear tragion.
    """

    xyxy: np.ndarray
    score: np.ndarray
    keypoints: np.ndarray

    def __post_init__(self) -> None:
        _check("FaceDetections.xyxy", self.xyxy, (None, 4), np.float32)
        _check("FaceDetections.score", self.score, (None,), np.float32)
        _check("FaceDetections.keypoints", self.keypoints, (None, None, 2), np.float32)
        _same_n("FaceDetections", xyxy=self.xyxy, score=self.score, keypoints=self.keypoints)

    @classmethod
    def empty(cls, num_keypoints: int = 6) -> FaceDetections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            score=np.zeros((0,), np.float32),
            keypoints=np.zeros((0, num_keypoints, 2), np.float32),
        )

    @classmethod
    def concat(cls, parts: list[FaceDetections]) -> FaceDetections:
        if not parts:
            return cls.empty()
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            score=np.concatenate([p.score for p in parts]),
            keypoints=np.concatenate([p.keypoints for p in parts]),
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Any) -> FaceDetections:
        """Select faces with a boolean mask, an index array or a slice (always returns FaceDetections)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return FaceDetections(
            xyxy=self.xyxy[index], score=self.score[index], keypoints=self.keypoints[index]
        )

    @property
    def area(self) -> np.ndarray:
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]

    @property
    def side(self) -> np.ndarray:
        """(N,) the longer side of each box, pixels."""
        return np.maximum(self.xyxy[:, 2] - self.xyxy[:, 0], self.xyxy[:, 3] - self.xyxy[:, 1])

    def scaled(self, factor: float) -> FaceDetections:
        """The same faces in an image ``factor`` times larger (boxes and keypoints scaled)."""
        f = np.float32(factor)
        return FaceDetections(xyxy=self.xyxy * f, score=self.score, keypoints=self.keypoints * f)


@dataclass(frozen=True, eq=False)
class FaceCrops:
    """Aligned face crops, RGB or BGR as the embedder's spec says, uint8 (N,S,S,3).

    ``det_index[i]`` is the row in the frame's FaceDetections that crop i came from;
    ``quality[i]`` in [0, 1] (higher is better: size, sharpness, frontal pose).
    ``color`` names the channel order of ``pixels`` ("RGB" or "BGR").
    """

    pixels: np.ndarray
    det_index: np.ndarray
    quality: np.ndarray
    color: str = "RGB"

    def __post_init__(self) -> None:
        _check("FaceCrops.pixels", self.pixels, (None, None, None, 3), np.uint8)
        if self.pixels.shape[1] != self.pixels.shape[2]:
            raise ShapeError(f"FaceCrops.pixels must be square (N,S,S,3), got {tuple(self.pixels.shape)}")
        _check("FaceCrops.det_index", self.det_index, (None,), np.int64)
        _check("FaceCrops.quality", self.quality, (None,), np.float32)
        _same_n("FaceCrops", pixels=self.pixels, det_index=self.det_index, quality=self.quality)
        if self.color not in ("RGB", "BGR"):
            raise ShapeError(f"FaceCrops.color must be 'RGB' or 'BGR', got {self.color!r}")

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def size(self) -> int:
        return int(self.pixels.shape[1])


@dataclass(frozen=True, eq=False)
class Embeddings:
    """L2-normalised face vectors (N,D) float32 with the detection row each came from."""

    vectors: np.ndarray
    det_index: np.ndarray

    def __post_init__(self) -> None:
        _check("Embeddings.vectors", self.vectors, (None, None), np.float32)
        _check("Embeddings.det_index", self.det_index, (None,), np.int64)
        _same_n("Embeddings", vectors=self.vectors, det_index=self.det_index)
        if len(self.vectors):
            norms = np.linalg.norm(self.vectors, axis=1)
            if not np.allclose(norms, 1.0, atol=1e-3):
                raise ShapeError(
                    "Embeddings.vectors must be L2-normalised (row norms 1), "
                    f"got norms in [{norms.min():.4f}, {norms.max():.4f}]"
                )

    @classmethod
    def empty(cls, dim: int) -> Embeddings:
        return cls(np.zeros((0, dim), np.float32), np.zeros((0,), np.int64))

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


@dataclass(frozen=True)
class Match:
    """One gallery hit: the identity, a display name (or the CelebA id), cosine similarity,
    and a reference to the matched photo (gallery image path or thumbnail key)."""

    identity: str
    name: str
    score: float
    image_ref: str = ""
    face_id: int | None = None


class TrackState(str, enum.Enum):
    TENTATIVE = "tentative"  # seen, no decision yet
    DECIDED = "decided"  # identity chosen (match above threshold)
    UNKNOWN = "unknown"  # decided: best score below the threshold ("a bit like"; open set: unknown)
    SEARCH_UNAVAILABLE = "search_unavailable"  # gallery unreachable for now
    LOST = "lost"  # not matched in recent frames, about to end


@dataclass(frozen=True)
class Track:
    """A face followed across frames, with its current best match and the vote behind it."""

    track_id: int
    xyxy: tuple[float, float, float, float]
    best: Match | None
    votes: Mapping[str, float] = field(default_factory=dict)
    state: TrackState = TrackState.TENTATIVE
    top_k: tuple[Match, ...] = ()


@dataclass(frozen=True, eq=False)
class FrameResult:
    """What the GUI and the monitor consume: a frame, its faces, its tracks, stage timings (ms)."""

    frame: Frame
    detections: FaceDetections
    tracks: tuple[Track, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
