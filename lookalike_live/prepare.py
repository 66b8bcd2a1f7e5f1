"""One gallery photo -> one aligned face crop, for ``index build`` and ``eval``.

Two ways to find the face:

* **annotated landmarks** (CelebA's ``list_landmarks_celeba.txt``, see ``lookalike_live.datasets``):
  no detector runs. The five points give the ArcFace-style 5-point alignment directly, and the face
  box the FaceNet crop is made from (:func:`landmark_box`: BlazeFace's box as a function of the same
  points). Knowing the face's size before decoding, a JPEG is decoded at the smallest 1/2, 1/4 or
  1/8 scale that still gives the crop enough pixels;
* **a detector** (:func:`gallery_detector`): the photo is decoded at about WORK_SIDE px, the face
  that best overlaps the annotated box is kept (else the largest, :func:`choose_face`) and read
  again larger when it has too few pixels for the crop.

A photo whose landmarks are missing, malformed, outside the photo or not laid out like a face
falls back to the detector; :class:`PreparedFace` says which way it went and why.

Everything a worker process needs is in a picklable :class:`PrepareConfig`; :class:`Preparer`
holds the detector, made on first use (an annotated dataset never loads MediaPipe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import faults
from .datasets import GalleryItem
from .imageio import decode_image, jpeg_size, read_bytes, read_image_scaled
from .types import FaceDetections

THUMB_SIZE = 96
#: Big JPEGs are decoded at 1/2, 1/4 or 1/8 scale while their longer side stays >= WORK_SIDE px
#: (the detector sees 128-192 px anyway); a chosen face whose box is then smaller than
#: ALIGN_MIN_FRACTION of the embedder's input is read again at a larger scale, so a crop never
#: has fewer source pixels than it needs. (CelebA: decode 1.5 -> 1.0 core-ms a photo.)
WORK_SIDE = 640
ALIGN_MIN_FRACTION = 0.8
#: quick detection (:func:`gallery_detector`): the short-range model's face is kept when it spans at
#: least QUICK_MIN_SIZE of the photo's longer side and scores at least QUICK_MIN_SCORE. Looser rules
#: are faster but wrong too often: at (0.15, any score) 43 of the CelebA fixture's 1,000 gallery
#: crops came out unlike the full-range crop (cosine < 0.6), the full-range one nearer the person's
#: other photos in 38; at (0.2, 0.9) 2 of the 683 photos kept.
QUICK_MIN_SIZE = 0.2
QUICK_MIN_SCORE = 0.9

#: BlazeFace's (full range) box as a function of five landmarks, fitted on the 1,000 photos of the
#: CelebA sample (the detector's box against its own keypoints, mouth corners as
#: ``align.five_points`` places them): a square of side BOX_SIDE x the eye-to-mouth distance
#: (eyes' midpoint to mouth corners' midpoint; IQR 3 % of the median), centred BOX_ALONG of the
#: way from the eyes to the mouth and BOX_ACROSS of the eye vector sideways. The derived box
#: overlaps the detector's with IoU 0.92 (median), 0.78 (5th percentile).
BOX_SIDE = 2.36
BOX_ALONG = 0.356
BOX_ACROSS = -0.024
#: a photo placed by landmarks is decoded at the smallest scale that leaves its face box this
#: fraction of the embedder's input (and THUMB_SIZE px for the thumbnail). On the CelebA sample
#: (`eval identify`, 7 gallery photos per identity, 20 identities held out) 0.8, 0.6 and 0.5 gave
#: the same top-1, top-5 and TPIR for both models; 0.6 decodes FaceNet's photos at 1/2 scale where
#: 0.8 would decode them whole (the face box 192-255 px)
LANDMARK_MIN_FRACTION = 0.6
#: landmarks closer together than this (pixels of the stored photo) cannot place a face
MIN_LANDMARK_SPAN = 2.0


@dataclass(frozen=True, eq=False)
class PreparedFace:
    item: GalleryItem
    crop: np.ndarray  # (S,S,3) uint8 in the embedder's colour order
    quality: float
    bbox: tuple[float, float, float, float]
    thumbnail: bytes  # JPEG of the face, THUMB_SIZE square
    how: str = "detector"  # "landmarks" or "detector"
    fallback: str | None = None  # why annotated landmarks were not used, when the dataset has a landmark file


@dataclass(frozen=True)
class DetectorConfig:
    """What :func:`gallery_detector` is made from (picklable, for worker processes)."""

    model: str = "full"
    store: Path | None = None
    min_score: float = 0.5
    small_faces: str = "off"
    quick: bool = True

    def create(self) -> Any:
        return gallery_detector(self.model, store=self.store, min_score=self.min_score,
                                small_faces=self.small_faces, quick=self.quick)


@dataclass(frozen=True)
class PrepareConfig:
    """Everything needed to prepare gallery photos for one embedder (picklable)."""

    spec: Any  # the embedder's ModelSpec
    detector: DetectorConfig
    landmarks: bool = True  # use an item's annotated landmarks when it has usable ones
    landmarks_malformed: frozenset[str] = frozenset()  # rel paths whose landmark line was unusable
    landmark_file: bool = False  # whether the dataset has a landmark file (fallbacks are then counted)
    work_side: int = WORK_SIDE


def choose_face(dets: FaceDetections, annotated: tuple[float, float, float, float] | None) -> int:
    """Row of the face to index: best IoU with the annotated box if given (and > 0), else the largest."""
    if annotated is not None and len(dets):
        a = np.asarray(annotated, np.float32)
        x1 = np.maximum(dets.xyxy[:, 0], a[0])
        y1 = np.maximum(dets.xyxy[:, 1], a[1])
        x2 = np.minimum(dets.xyxy[:, 2], a[2])
        y2 = np.minimum(dets.xyxy[:, 3], a[3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        iou = inter / (dets.area + (a[2] - a[0]) * (a[3] - a[1]) - inter + 1e-9)
        if iou.max() > 0:
            return int(np.argmax(iou))
    return int(np.argmax(dets.area))


def gallery_detector(model: str = "full", *, store: Path | None = None, min_score: float = 0.5,
                     small_faces: str = "off", quick: bool = True) -> Any:
    """The detector ``index build`` uses on gallery photos: ``model`` with the short-range model as
    fallback (close-ups the full-range model misses) and, when ``quick`` and ``model`` is full
    range, the short-range model first, its face kept when it is big and sure (QUICK_MIN_SIZE,
    QUICK_MIN_SCORE: 68 % of the CelebA fixture's photos), so detection costs ~2 instead of
    ~4.6 core-ms there. Gallery and queries need not come from the same detector: on the CelebA
    fixture (MobileFaceNet, gallery built so, queries detected full range as the live app does)
    top-1 is the same as with a full-range gallery (`eval identify --no-quick-detect` compares)."""
    from .detect import FaceDetector

    first = "short" if quick and model in ("full", "blazeface-full") else None
    return FaceDetector(model, store=store, min_score=min_score, small_faces=small_faces,  # type: ignore[arg-type]
                        running_mode="image", fallback="short", first=first, first_min_size=QUICK_MIN_SIZE,
                        first_min_score=QUICK_MIN_SCORE)


# ----------------------------------------------------------------------------- landmarks
def landmark_box(points5: np.ndarray) -> np.ndarray:
    """(N,4) xyxy float32: the face box BlazeFace would give for (N,5,2) landmarks in the template's
    order (image-left eye, image-right eye, nose, image-left and image-right mouth corner); see
    BOX_SIDE."""
    p = np.asarray(points5, np.float64)
    eyes = (p[:, 0] + p[:, 1]) / 2
    down = (p[:, 3] + p[:, 4]) / 2 - eyes
    centre = eyes + BOX_ALONG * down + BOX_ACROSS * (p[:, 1] - p[:, 0])
    half = landmark_side(p) / 2
    return np.stack([centre[:, 0] - half, centre[:, 1] - half, centre[:, 0] + half, centre[:, 1] + half],
                    axis=1).astype(np.float32)


def landmark_side(points5: np.ndarray) -> np.ndarray:
    """(N,) float64: the side of :func:`landmark_box`'s square, BOX_SIDE x the eye-to-mouth distance."""
    p = np.asarray(points5, np.float64)
    return BOX_SIDE * np.linalg.norm((p[:, 3] + p[:, 4]) / 2 - (p[:, 0] + p[:, 1]) / 2, axis=1)


def landmark_detections(points5: np.ndarray) -> FaceDetections:
    """Annotated landmarks (N,5,2) as FaceDetections: the box of :func:`landmark_box`, score 1 and
    BlazeFace's 6 keypoints (eyes, nose, the mouth corners' midpoint as the mouth centre, the ear
    tragions on the box's sides at eye height), so quality and the box crop work as for a detection."""
    p = np.asarray(points5, np.float32)
    box = landmark_box(p)
    eye_y = (p[:, 0, 1] + p[:, 1, 1]) / 2
    ears_r = np.stack([box[:, 0], eye_y], axis=1)
    ears_l = np.stack([box[:, 2], eye_y], axis=1)
    kps = np.stack([p[:, 0], p[:, 1], p[:, 2], (p[:, 3] + p[:, 4]) / 2, ears_r, ears_l], axis=1)
    return FaceDetections(box, np.ones(len(p), np.float32), kps.astype(np.float32))


def landmark_problem(values: tuple[float, ...], width: float, height: float) -> str | None:
    """Why a photo's 10 annotated numbers cannot place its face (None: they can): a point outside
    the ``width`` x ``height`` photo, or points not laid out like a face (eyes or eyes and mouth
    on top of each other, the mouth above the eyes or the eyes swapped)."""
    p = np.asarray(values, np.float64).reshape(5, 2)
    if (p < 0).any() or (p[:, 0] > width).any() or (p[:, 1] > height).any():
        return "landmarks outside the photo"
    eye = p[1] - p[0]
    down = (p[3] + p[4]) / 2 - (p[0] + p[1]) / 2
    if np.hypot(*eye) < MIN_LANDMARK_SPAN or np.hypot(*down) < MIN_LANDMARK_SPAN:
        return "landmarks not laid out like a face"
    if eye[0] * down[1] - eye[1] * down[0] <= 0:  # the mouth on the wrong side of the eye line
        return "landmarks not laid out like a face"
    return None


# ----------------------------------------------------------------------------- one photo
def locate_face(item: GalleryItem, detector: Any, spec: Any, work_side: int = WORK_SIDE
                ) -> tuple[np.ndarray, float, FaceDetections] | None:
    """Read one gallery photo (see WORK_SIDE) and detect its face (:func:`choose_face`): (image,
    scale, the one face in that image's pixels), the photo re-read larger when the face has too few
    pixels for the embedder ``spec``'s crop; None when the photo has no face. Raises
    LookalikeError (e.g. ImageReadError) for an unreadable photo."""
    image, scale = read_image_scaled(item.path, work_side)
    dets = detector.detect(image)
    if len(dets) == 0:
        return None
    annotated = None if item.bbox is None else tuple(v / scale for v in item.bbox)
    one = dets[[choose_face(dets, annotated)]]  # type: ignore[arg-type]
    side = float(one.side[0])
    need = ALIGN_MIN_FRACTION * float(spec.input.size)
    if scale > 1.0 and side < need:  # too few pixels for the crop at this scale: read it bigger
        bigger, bigger_scale = read_image_scaled(item.path, math.ceil(max(image.shape[:2]) * need / max(side, 1.0)))
        one = one.scaled(scale / bigger_scale)
        image, scale = bigger, bigger_scale
    return image, scale, one


def locate_by_landmarks(item: GalleryItem, spec: Any) -> tuple[np.ndarray, float, FaceDetections, np.ndarray] | str:
    """Read one gallery photo placed by its annotated landmarks (no detector): (image, scale, the
    face as FaceDetections, the five points (1,5,2)) in that image's pixels, the JPEG decoded at the
    smallest scale that leaves the crop ALIGN_MIN_FRACTION of the embedder's input; or why the
    landmarks cannot be used (:func:`landmark_problem`). Raises LookalikeError for an unreadable photo."""
    assert item.landmarks is not None
    data = read_bytes(item.path)
    size = jpeg_size(data)
    points = np.asarray(item.landmarks, np.float64).reshape(1, 5, 2)
    reduce = 1
    if size is not None:
        why = landmark_problem(item.landmarks, *size)
        if why:
            return why
        side = float(landmark_side(points)[0])
        need = max(LANDMARK_MIN_FRACTION * float(spec.input.size), THUMB_SIZE)
        while reduce < 8 and side / (2 * reduce) >= need:
            reduce *= 2
    image = decode_image(data, str(item.path), reduce, size)
    h, w = image.shape[:2]
    scale = 1.0 if size is None else max(size) / max(h, w)
    if size is None:
        why = landmark_problem(item.landmarks, w, h)
        if why:
            return why
    pts = (points / scale).astype(np.float32)
    return image, scale, landmark_detections(pts), pts


class Preparer:
    """Prepares gallery photos as :class:`PrepareConfig` says; the detector is made on first use
    (or passed in, and then closed by its owner)."""

    def __init__(self, config: PrepareConfig, detector: Any = None) -> None:
        self.config = config
        self._detector = detector
        self._own_detector = detector is None

    @property
    def detector(self) -> Any:
        if self._detector is None:
            self._detector = self.config.detector.create()
        return self._detector

    def prepare(self, item: GalleryItem) -> PreparedFace | None:
        """The photo's one face aligned for the embedder; None when it has no face. ``bbox`` comes
        back in the photo's own pixels. Raises LookalikeError for an unreadable photo."""
        from .align import align_faces
        from .gallery.common import encode_thumbnail

        faults.point("prepare:crash", item.rel_path)
        faults.point("prepare:bug", item.rel_path)
        cfg = self.config
        fallback = None
        if cfg.landmarks and item.landmarks is not None:
            placed = locate_by_landmarks(item, cfg.spec)
            if not isinstance(placed, str):
                image, scale, one, pts = placed
                crops = align_faces(image, one, cfg.spec, points5=pts)
                return PreparedFace(item, crops.pixels[0], float(crops.quality[0]),
                                    tuple(float(v) * scale for v in one.xyxy[0]),  # type: ignore[arg-type]
                                    encode_thumbnail(image, one.xyxy[0], size=THUMB_SIZE), "landmarks")
            fallback = placed
        elif cfg.landmarks and cfg.landmark_file:
            fallback = "landmark line malformed" if item.rel_path in cfg.landmarks_malformed else "no landmarks"
        found = locate_face(item, self.detector, cfg.spec, cfg.work_side)
        if found is None:
            return None
        image, scale, one = found
        crops = align_faces(image, one, cfg.spec)
        return PreparedFace(item, crops.pixels[0], float(crops.quality[0]),
                            tuple(float(v) * scale for v in one.xyxy[0]),  # type: ignore[arg-type]
                            encode_thumbnail(image, one.xyxy[0], size=THUMB_SIZE), "detector", fallback)

    def close(self) -> None:
        if self._detector is not None and self._own_detector:
            self._detector.close()
        self._detector = None


def prepare_face(item: GalleryItem, detector: Any, spec: Any, work_side: int = WORK_SIDE) -> PreparedFace | None:
    """One photo prepared with ``detector`` (no landmarks): :func:`locate_face`, then the face
    aligned for the embedder ``spec``; None when the photo has no face."""
    cfg = PrepareConfig(spec, DetectorConfig(), landmarks=False, work_side=work_side)
    return Preparer(cfg, detector).prepare(item)
