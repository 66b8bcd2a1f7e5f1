"""Face detection: every face of a frame with MediaPipe BlazeFace (Tasks API ``FaceDetector``).

:class:`FaceDetector` wraps ``mediapipe.tasks.python.vision.FaceDetector`` and returns one
:class:`~lookalike_live.types.FaceDetections` per frame: boxes ``xyxy`` (N,4) float32 pixels
clipped to the frame, scores (N,) float32 and BlazeFace's 6 keypoints (N,6,2) float32 pixels in
MediaPipe's order (subject's right eye, which appears on the image's left in a non-mirrored
image; subject's left eye; nose tip; mouth centre; right ear tragion; left ear tragion).

Input frames are **BGR uint8 (H,W,3)** like everywhere in the package; the conversion to the
RGB MediaPipe expects happens here.

Small faces. BlazeFace sees the whole frame at 128x128 (short range) or 192x192 (full range),
letterboxed to keep the aspect ratio: a 640x360 frame is shrunk to 192x108, so a 20 px face
becomes 6 px and is lost. ``small_faces="tile"`` adds passes over overlapping square tiles
(default: two squares of the frame's height for a 16:9 frame, 22 % overlap), each resized by
MediaPipe to the model's input (a 360 px tile at 192 px is 1.8x the full-frame scale), maps their
detections back to frame pixels and adds those that are new faces (see :func:`merge_passes`):
the full-frame pass is kept as it is, so tiling never loses a face. Tile detections cut by an
inner tile edge, or whose keypoints are not laid out like a face (:func:`plausible_keypoints`),
are dropped. The tile passes run on a separate IMAGE-mode task, so VIDEO-mode timestamps of the
main task are unaffected.

Measured on the Hamilton clip (640x360, 275 frames, shared 2-core CPU; see
``lookalike_live.bench.detect``; two runs under different load): full range 1.86 faces/frame at
5.0-7.5 ms; with tiles 2.12 at 14.7-22 ms (3.0x). Upscaling the whole frame does nothing (1.865 faces/frame): MediaPipe resizes every
input to the model's resolution. Smaller tiles (3x2, 4x2, 4x3) or the short-range model on tiles
report more faces per frame (up to 2.7) but, checked by eye on contact sheets of what they add,
mostly hands, lamps and duplicates of profiles (precision ~40-60 %). The default adds 70
detections over the clip's 275 frames: 59 real faces (the pianist, audience members, profiles),
10 waving hands and 1 unclear dark patch (~85 % precision); out-of-focus lamps it used to add
are removed by the keypoint check.
"""

from __future__ import annotations

import logging
import math
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import cv2
import numpy as np

from .errors import ConfigError, ModelFormatError, ShapeError
from .models import ModelSpec, require
from .types import FaceDetections

log = logging.getLogger(__name__)

__all__ = [
    "FaceDetector",
    "RunningMode",
    "SmallFaces",
    "tile_layout",
    "nms",
    "same_face",
    "merge_passes",
    "plausible_keypoints",
]

RunningMode = Literal["image", "video"]
SmallFaces = Literal["off", "tile"]
_NUM_KEYPOINTS = 6
# A tile detection whose box comes this close (pixels of the tile) to a tile edge that lies
# inside the frame is cut by the tile: dropped, the neighbouring tile or the full frame sees it whole.
_EDGE_PX = 2.0
# Two boxes of similar size (side ratio at most this) with the centre of one inside the other are
# the same face boxed differently by two passes (typical of profiles across models/scales).
_SAME_FACE_SIZE_RATIO = 2.0
# A box mostly inside another one at most this much larger is a fragment of the same face.
_FRAGMENT_SIZE_RATIO = 3.0


def tile_layout(
    height: int, width: int, grid: tuple[int, int], overlap: float = 0.2
) -> list[tuple[int, int, int, int]]:
    """Square, overlapping tiles covering an ``height`` x ``width`` frame.

    ``grid`` is (columns, rows) for a landscape frame; for a portrait frame it is transposed.
    Neighbouring tiles overlap by at least ``overlap`` of their side. The tile side is the
    smallest that lets the grid cover the frame with that overlap; a tile is square unless that
    side exceeds the frame's short side (then the tile is cut to the frame, e.g. grid (1, 1)
    gives the whole frame).

    Returns a list of ``(x0, y0, x1, y1)`` integer pixel rectangles (end-exclusive).
    """
    cols, rows = grid
    if cols < 1 or rows < 1:
        raise ConfigError(f"tile grid must be (columns, rows) with both >= 1, got {grid}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"tile overlap must be in [0, 1), got {overlap}")
    if height > width:
        cols, rows = rows, cols
    side_w = width / (cols - (cols - 1) * overlap)
    side_h = height / (rows - (rows - 1) * overlap)
    side = min(max(side_w, side_h), max(height, width))
    tw, th = min(int(math.ceil(side)), width), min(int(math.ceil(side)), height)
    xs = np.linspace(0, width - tw, cols).round().astype(int) if cols > 1 else np.array([(width - tw) // 2])
    ys = np.linspace(0, height - th, rows).round().astype(int) if rows > 1 else np.array([(height - th) // 2])
    tiles = []
    for y in ys:
        for x in xs:
            tiles.append((int(x), int(y), int(x) + tw, int(y) + th))
    # a tile grid that collapses (frame smaller than a tile) would repeat the same rectangle
    return list(dict.fromkeys(tiles))


def same_face(
    box: np.ndarray, others: np.ndarray, iou_threshold: float = 0.3, iomin_threshold: float = 0.7
) -> np.ndarray:
    """Which of ``others`` (M,4) xyxy are the same face as ``box`` (4,): bool (M,).

    True when the IoU exceeds ``iou_threshold``; when the intersection covers more than
    ``iomin_threshold`` of the smaller box and the sides differ by at most 3x (a face found whole
    in one pass and as a fragment in another; a much larger box, e.g. a false positive over a
    crowd, does not hide the faces inside it); or when the sides differ by at most 2x and the
    centre of either box lies inside the other (the same face boxed differently by two models or
    scales, typical of profiles: two distinct faces of similar size are never that close unless
    one hides the other).
    """
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    iou = inter / np.maximum(area + areas - inter, 1e-6)
    iomin = inter / np.maximum(np.minimum(area, areas), 1e-6)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    ocx, ocy = (others[:, 0] + others[:, 2]) / 2, (others[:, 1] + others[:, 3]) / 2
    mine_in_theirs = (cx >= others[:, 0]) & (cx <= others[:, 2]) & (cy >= others[:, 1]) & (cy <= others[:, 3])
    theirs_in_mine = (ocx >= box[0]) & (ocx <= box[2]) & (ocy >= box[1]) & (ocy <= box[3])
    side = max(box[2] - box[0], box[3] - box[1], 1e-6)
    sides = np.maximum(np.maximum(others[:, 2] - others[:, 0], others[:, 3] - others[:, 1]), 1e-6)
    ratio = np.maximum(sides, side) / np.minimum(sides, side)
    fragment = (iomin > iomin_threshold) & (ratio <= _FRAGMENT_SIZE_RATIO)
    moved = (ratio <= _SAME_FACE_SIZE_RATIO) & (mine_in_theirs | theirs_in_mine)
    return (iou > iou_threshold) | fragment | moved


def nms(xyxy: np.ndarray, score: np.ndarray, iou_threshold: float = 0.3) -> np.ndarray:
    """Greedy non-maximum suppression with :func:`same_face`; kept row indices, best score first.

    ``xyxy`` (N,4) float pixels, ``score`` (N,).
    """
    order = np.argsort(-score, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[~same_face(xyxy[i], xyxy[rest], iou_threshold)] if rest.size else rest
    return np.asarray(keep, dtype=np.int64)


def merge_passes(
    main_xyxy: np.ndarray, extra_xyxy: np.ndarray, extra_score: np.ndarray, iou_threshold: float = 0.3
) -> np.ndarray:
    """Rows of ``extra`` detections (tile passes) to add to the ``main`` (full-frame) ones.

    Extra detections are de-duplicated among themselves by :func:`nms`, then every one that is
    the same face as a main detection is dropped: the full-frame pass is trusted as it is, the
    extra passes only add faces (so a merged frame never has fewer faces than the main pass,
    and a loose box of the short-range model can never hide two faces the main pass found).
    """
    if not len(extra_score):
        return np.zeros((0,), np.int64)
    keep = nms(extra_xyxy, extra_score, iou_threshold)
    if len(main_xyxy):
        keep = np.asarray(
            [k for k in keep if not same_face(extra_xyxy[k], main_xyxy, iou_threshold).any()], dtype=np.int64
        )
    return keep


def plausible_keypoints(xyxy: np.ndarray, keypoints: np.ndarray, min_mouth_drop: float = 0.3) -> np.ndarray:
    """Whether each detection's keypoints are laid out like a face: bool (N,).

    The mouth centre must lie below the eye line (measured along the eye line's normal, so any
    roll BlazeFace handles passes) by at least ``min_mouth_drop`` of the box width. Measured on
    the Hamilton clip: all 512 full-range full-frame detections measure 0.35-0.5 (frontal and
    profile); the tile passes' false positives on out-of-focus lamps measure -0.12 to 0.17.
    ``xyxy`` (N,4), ``keypoints`` (N,6,2) pixels in MediaPipe's order.
    """
    if not len(xyxy):
        return np.zeros((0,), bool)
    eye_r, eye_l, mouth = keypoints[:, 0], keypoints[:, 1], keypoints[:, 3]
    axis = eye_l - eye_r
    dist = np.maximum(np.linalg.norm(axis, axis=1), 1e-6)
    normal = np.stack([-axis[:, 1], axis[:, 0]], axis=1) / dist[:, None]  # points down the face
    drop = np.einsum("ij,ij->i", mouth - (eye_r + eye_l) / 2, normal)
    width = np.maximum(xyxy[:, 2] - xyxy[:, 0], 1e-6)
    return drop / width >= min_mouth_drop


def _close_tasks(tasks: dict[str, Any]) -> None:
    while tasks:
        role, task = tasks.popitem()
        try:
            task.close()
        except Exception:  # pragma: no cover - closing must never raise, e.g. at shutdown
            log.debug("closing the %s face detector task failed", role, exc_info=True)


class FaceDetector:
    """All faces of a frame with MediaPipe BlazeFace; construct cheaply, :meth:`prepare` later.

    Args:
        model: ``"full"`` (full range, 192x192, faces within ~5 m; the default), ``"short"``
            (short range, 128x128, faces within ~2 m), a registry name (``blazeface-full``,
            ``blazeface-short``) or a spec ``.toml`` path. Resolved with
            :func:`lookalike_live.models.require`: a model that is not installed raises
            ModelNotInstalledError naming the install command (at construction).
        store: the model store (default: ``$LOOKALIKE_MODELS_DIR`` / the user cache dir).
        min_score: minimum detection confidence in [0, 1].
        min_suppression: MediaPipe's NMS IoU threshold, also used to merge tile detections.
        running_mode: ``"image"`` (independent photos) or ``"video"`` (frames of one stream;
            MediaPipe needs strictly increasing integer millisecond timestamps, which
            :meth:`detect` guarantees by bumping equal, decreasing or missing ones).
        small_faces: ``"off"`` (one full-frame pass) or ``"tile"`` (full frame plus the tiles of
            ``tile_grid``; finds faces too small for the full-frame pass at roughly
            ``1 + number of tiles`` times the cost). There is no "upscale" option: MediaPipe
            resizes every input to the model's resolution, so upscaling a frame finds nothing new.
        max_faces: keep at most this many faces, highest score first (None: all).
        tile_grid: (columns, rows) of square tiles for a landscape frame (transposed for
            portrait). The default (2, 1) suits 16:9 frames: two squares of the frame's height.
        tile_overlap: minimum overlap of neighbouring tiles, as a fraction of the tile side.
        tile_model: model used on tiles (default: the same as ``model``; the short-range model
            on tiles is cheaper but mostly adds false positives on hands).
        tile_min_score: minimum confidence of tile detections (default: ``min_score``).
        fallback: model tried on the whole image when the main pass finds no face at all
            (e.g. ``"short"`` rescues close-ups the full-range model misses on photos: on the
            1,000 CelebA fixture photos full range alone finds a face in 996, with the
            short-range fallback in all 1,000); None: off.
        first: a cheaper model run *before* the main one (``"short"``: 2.0 against 4.6 core-ms
            per photo here); when one of its faces scores at least ``first_min_score`` and spans
            at least ``first_min_size`` of the image's longer side, its faces are the result and
            the main model does not run. For portrait photos (the index build), not for scenes:
            a small face beside a big one is left to the short-range model. None (the default): off.
        first_min_size: see ``first`` (0.2: a face at least a fifth of the photo, where the
            short-range model is in its range).
        first_min_score: see ``first`` (0.9: the short-range model's weaker detections are where
            its boxes and keypoints disagree with the full-range model's).

    Not thread-safe: use one instance per thread. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        model: str = "full",
        *,
        store: Path | None = None,
        min_score: float = 0.5,
        min_suppression: float = 0.3,
        running_mode: RunningMode = "image",
        small_faces: SmallFaces = "off",
        max_faces: int | None = None,
        tile_grid: tuple[int, int] = (2, 1),
        tile_overlap: float = 0.2,
        tile_model: str | None = None,
        tile_min_score: float | None = None,
        fallback: str | None = None,
        first: str | None = None,
        first_min_size: float = 0.2,
        first_min_score: float = 0.9,
    ) -> None:
        if not 0.0 <= min_score <= 1.0:
            raise ConfigError(f"min_score must be in [0, 1], got {min_score}")
        if not 0.0 <= min_suppression <= 1.0:
            raise ConfigError(f"min_suppression must be in [0, 1], got {min_suppression}")
        if running_mode not in ("image", "video"):
            raise ConfigError(f"running_mode must be 'image' or 'video', got {running_mode!r}")
        if small_faces not in ("off", "tile"):
            raise ConfigError(f"small_faces must be 'off' or 'tile', got {small_faces!r}")
        if max_faces is not None and max_faces < 1:
            raise ConfigError(f"max_faces must be >= 1 or None, got {max_faces}")
        if tile_min_score is not None and not 0.0 <= tile_min_score <= 1.0:
            raise ConfigError(f"tile_min_score must be in [0, 1] or None, got {tile_min_score}")
        self.model_spec, self.model_path = self._resolve(model, store)
        self.tile_spec, self.tile_model_path = (
            self._resolve(tile_model, store) if tile_model else (self.model_spec, self.model_path)
        )
        self.fallback_spec: ModelSpec | None = None
        self.fallback_path: Path | None = None
        if fallback:
            self.fallback_spec, self.fallback_path = self._resolve(fallback, store)
        if not 0.0 <= first_min_size <= 1.0:
            raise ConfigError(f"first_min_size must be in [0, 1], got {first_min_size}")
        self.first_spec: ModelSpec | None = None
        self.first_path: Path | None = None
        if first:
            self.first_spec, self.first_path = self._resolve(first, store)
        self.first_min_size = float(first_min_size)
        if not 0.0 <= first_min_score <= 1.0:
            raise ConfigError(f"first_min_score must be in [0, 1], got {first_min_score}")
        self.first_min_score = float(first_min_score)
        self.min_score = float(min_score)
        self.tile_min_score = self.min_score if tile_min_score is None else float(tile_min_score)
        self.min_suppression = float(min_suppression)
        self.running_mode: RunningMode = running_mode
        self.small_faces: SmallFaces = small_faces
        self.max_faces = max_faces
        self.tile_grid = (int(tile_grid[0]), int(tile_grid[1]))
        self.tile_overlap = float(tile_overlap)
        tile_layout(360, 640, self.tile_grid, self.tile_overlap)  # validates grid and overlap now
        # MediaPipe tasks by role ("main", "tiles", "fallback"); closed by close() or, at the
        # latest, when this object is collected or the interpreter exits (weakref.finalize runs
        # before module teardown, unlike MediaPipe's own __del__).
        self._tasks: dict[str, Any] = {}
        self._finalizer = weakref.finalize(self, _close_tasks, self._tasks)
        self._last_ts: int | None = None

    @staticmethod
    def _resolve(name: str, store: Path | None) -> tuple[ModelSpec, Path]:
        spec, path = require(name, store)
        if spec.kind != "detector":
            raise ConfigError(
                f"model {spec.name!r} is a {spec.kind}, not a face detector; use 'short' or 'full'"
            )
        return spec, path

    # -- lifecycle -------------------------------------------------------------------------

    def _create(self, spec: ModelSpec, path: Path, mode: RunningMode, min_score: float) -> Any:
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=vision.RunningMode.VIDEO if mode == "video" else vision.RunningMode.IMAGE,
            min_detection_confidence=min_score,
            min_suppression_threshold=self.min_suppression,
        )
        try:
            return vision.FaceDetector.create_from_options(options)
        except (ValueError, RuntimeError) as exc:
            raise ModelFormatError(
                f"MediaPipe cannot load face detector {path}: {exc}. Reinstall it with "
                f"`lookalike-live models fetch {spec.name} --force`"
            ) from exc

    def prepare(self) -> FaceDetector:
        """Create the MediaPipe task(s); :meth:`detect` calls this on first use. Returns self."""
        tasks = self._tasks
        if "main" not in tasks:
            tasks["main"] = self._create(self.model_spec, self.model_path, self.running_mode, self.min_score)
            log.debug(
                "face detector %s ready (%s mode, small_faces=%s)",
                self.model_spec.name,
                self.running_mode,
                self.small_faces,
            )
        if self.small_faces == "tile" and "tiles" not in tasks:
            # IMAGE mode: the tile passes take no timestamps, so VIDEO-mode ones stay untouched
            tasks["tiles"] = self._create(self.tile_spec, self.tile_model_path, "image", self.tile_min_score)
        if (self.fallback_spec is not None and self.fallback_path is not None and "fallback" not in tasks
                and self.fallback_path != self.first_path):  # the same model as `first`: its result is reused
            tasks["fallback"] = self._create(self.fallback_spec, self.fallback_path, "image", self.min_score)
        if self.first_spec is not None and self.first_path is not None and "first" not in tasks:
            tasks["first"] = self._create(self.first_spec, self.first_path, "image", self.min_score)
        return self

    def close(self) -> None:
        """Release the MediaPipe tasks (idempotent); a later :meth:`detect` prepares again."""
        _close_tasks(self._tasks)
        self._last_ts = None

    def __enter__(self) -> FaceDetector:
        return self.prepare()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"FaceDetector({self.model_spec.name!r}, running_mode={self.running_mode!r}, "
            f"small_faces={self.small_faces!r}, min_score={self.min_score}"
            + (f", first={self.first_spec.name!r}" if self.first_spec is not None else "")
            + ")"
        )

    # -- detection -------------------------------------------------------------------------

    def _timestamp(self, ts_ms: float | None) -> int:
        """A strictly increasing integer timestamp for VIDEO mode (bumps equal/decreasing/missing ones)."""
        last = self._last_ts
        if ts_ms is None or not math.isfinite(ts_ms):
            ts = 0 if last is None else last + 1
        else:
            ts = int(round(ts_ms))
            if last is not None and ts <= last:
                log.debug("video timestamp %s ms not after %s ms: using %s", ts_ms, last, last + 1)
                ts = last + 1
        self._last_ts = ts
        return ts

    @staticmethod
    def _parse(result: Any, width: int, height: int, x0: int = 0, y0: int = 0) -> tuple[np.ndarray, ...]:
        """MediaPipe DetectionResult -> (xyxy, score, keypoints) in pixels of the image the pass saw,
        offset by (x0, y0); boxes are not clipped yet."""
        dets = result.detections
        n = len(dets)
        xyxy = np.empty((n, 4), np.float32)
        score = np.empty((n,), np.float32)
        kps = np.zeros((n, _NUM_KEYPOINTS, 2), np.float32)
        for i, det in enumerate(dets):
            bb = det.bounding_box
            xyxy[i] = (
                bb.origin_x + x0,
                bb.origin_y + y0,
                bb.origin_x + bb.width + x0,
                bb.origin_y + bb.height + y0,
            )
            score[i] = det.categories[0].score if det.categories else 0.0
            for k, kp in enumerate((det.keypoints or [])[:_NUM_KEYPOINTS]):
                kps[i, k] = (kp.x * width + x0, kp.y * height + y0)
        return xyxy, score, kps

    def detect(self, image_bgr: np.ndarray, ts_ms: float | None = None) -> FaceDetections:
        """All faces in one BGR uint8 (H,W,3) image.

        ``ts_ms`` is the frame's timestamp in milliseconds, used in VIDEO mode only (rounded
        to an integer; equal, decreasing or missing timestamps are replaced by the previous
        one + 1 ms). Returns FaceDetections with ``xyxy`` (N,4) float32 pixels clipped to the
        image, ``score`` (N,) float32 and ``keypoints`` (N,6,2) float32 pixels (not clipped:
        an ear of a face at the border may lie outside), best score first.
        """
        if (
            not isinstance(image_bgr, np.ndarray)
            or image_bgr.ndim != 3
            or image_bgr.shape[2] != 3
            or image_bgr.dtype != np.uint8
            or image_bgr.shape[0] < 1
            or image_bgr.shape[1] < 1
        ):
            got = (
                f"{tuple(image_bgr.shape)} {image_bgr.dtype}"
                if isinstance(image_bgr, np.ndarray)
                else type(image_bgr).__name__
            )
            raise ShapeError(f"FaceDetector.detect expects a BGR uint8 image of shape (H, W, 3), got {got}")
        self.prepare()
        import mediapipe as mp

        height, width = image_bgr.shape[:2]
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        mp_image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        first: tuple[np.ndarray, ...] | None = None
        big_enough = False
        if "first" in self._tasks:
            first = self._parse(self._tasks["first"].detect(mp_image), width, height)
            sides = FaceDetections(*first).side
            sure = first[1] >= self.first_min_score
            big_enough = bool(sure.any()) and float(sides[sure].max()) >= self.first_min_size * max(width, height)
        if first is not None and big_enough:
            xyxy, score, kps = first
        elif self.running_mode == "video":
            xyxy, score, kps = self._parse(
                self._tasks["main"].detect_for_video(mp_image, self._timestamp(ts_ms)), width, height
            )
        else:
            xyxy, score, kps = self._parse(self._tasks["main"].detect(mp_image), width, height)

        if self.small_faces == "tile":
            txyxy, tscore, tkps = self._detect_tiles(rgb)
            add = merge_passes(xyxy, txyxy, tscore, self.min_suppression)
            if len(add):
                xyxy = np.concatenate([xyxy, txyxy[add]])
                score = np.concatenate([score, tscore[add]])
                kps = np.concatenate([kps, tkps[add]])

        if not len(score) and self.fallback_path is not None:
            if first is not None and self.fallback_path == self.first_path:
                xyxy, score, kps = first  # the same model already ran on this image
            else:
                xyxy, score, kps = self._parse(self._tasks["fallback"].detect(mp_image), width, height)

        order = np.argsort(-score, kind="stable")
        if self.max_faces is not None:
            order = order[: self.max_faces]
        xyxy = xyxy[order]
        np.clip(xyxy[:, 0::2], 0, width, out=xyxy[:, 0::2])
        np.clip(xyxy[:, 1::2], 0, height, out=xyxy[:, 1::2])
        return FaceDetections(xyxy=xyxy, score=score[order], keypoints=kps[order])

    def tile_rects(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """The tile rectangles ``(x0, y0, x1, y1)`` pixels this detector runs on a ``height`` x
        ``width`` frame besides the full-frame pass (empty unless ``small_faces="tile"``)."""
        if self.small_faces != "tile":
            return []
        return [
            t
            for t in tile_layout(height, width, self.tile_grid, self.tile_overlap)
            if (t[2] - t[0], t[3] - t[1]) != (width, height)
        ]

    def _detect_tiles(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detections of the tile passes over an RGB (H,W,3) frame, in frame pixels, not merged.

        Detections cut by a tile edge that lies inside the frame are dropped (the overlapping
        neighbour or the full-frame pass sees that face whole).
        """
        import mediapipe as mp

        height, width = rgb.shape[:2]
        parts = []
        for x0, y0, x1, y1 in self.tile_rects(height, width):
            tile = np.ascontiguousarray(rgb[y0:y1, x0:x1])
            res = self._tasks["tiles"].detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=tile))
            txyxy, tscore, tkps = self._parse(res, x1 - x0, y1 - y0, x0, y0)
            cut = ~plausible_keypoints(txyxy, tkps)
            if x0 > 0:
                cut |= txyxy[:, 0] <= x0 + _EDGE_PX
            if y0 > 0:
                cut |= txyxy[:, 1] <= y0 + _EDGE_PX
            if x1 < width:
                cut |= txyxy[:, 2] >= x1 - _EDGE_PX
            if y1 < height:
                cut |= txyxy[:, 3] >= y1 - _EDGE_PX
            parts.append((txyxy[~cut], tscore[~cut], tkps[~cut]))
        if not parts:
            empty = FaceDetections.empty(_NUM_KEYPOINTS)
            return empty.xyxy, empty.score, empty.keypoints
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]

    __call__ = detect
