"""Face alignment: keypoints -> similarity transform -> one batch of face crops per frame.

Pure functions, no model state. Input frames are **BGR uint8 (H,W,3)**; detections are
:class:`~lookalike_live.types.FaceDetections` with BlazeFace's 6 keypoints in MediaPipe's
order: subject's right eye (on the image's *left* in a non-mirrored image), subject's left
eye, nose tip, mouth centre, right ear tragion, left ear tragion.

Two alignment methods, chosen by the embedder's spec (``spec.alignment.method``):

* ``"arcface5"``: the 5-point similarity transform onto InsightFace's ArcFace template (scaled
  from 112x112 to ``spec.input.size``). BlazeFace has no mouth corners: :func:`five_points`
  places them on the eye line's direction either side of the mouth centre.
* ``"box"``: a square crop centred on the face box, its side the box's longer side enlarged by
  ``spec.alignment.margin`` (0.2: 10 % on each side), resized to ``spec.input.size``
  (FaceNet/MTCNN style); ``alignment.square = false`` keeps the box's aspect (stretched to the
  square input), ``alignment.center = "keypoints"`` centres the crop on the eyes, nose and mouth,
  ``alignment.upright = true`` turns it by the eye line's angle (roll undone).

Crops come out in the channel order of ``spec.input.color`` (RGB for both built-in embedders)
and :class:`~lookalike_live.types.FaceCrops` says which.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import cv2
import numpy as np

from .errors import ConfigError, ShapeError
from .types import FaceCrops, FaceDetections

log = logging.getLogger(__name__)

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "MOUTH_CORNER_OFFSET",
    "arcface_template",
    "five_points",
    "similarity_transform",
    "similarity_transforms",
    "box_transforms",
    "keypoint_centers",
    "roll_angles",
    "align_faces",
    "face_quality",
    "largest_face",
]

#: InsightFace's ArcFace 5-point template for 112x112 crops, pixels (x, y): left eye, right eye,
#: nose tip, left mouth corner, right mouth corner, "left"/"right" as seen in the image (the
#: template's left eye, x=38.3, is the subject's right eye).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

#: Each mouth corner sits this fraction of the eye vector (image-left eye -> image-right eye)
#: away from the mouth centre: the template's own ratio, mouth width / eye distance / 2 =
#: 29.18 / 35.24 / 2 = 0.414. With 0 both corners collapse onto the mouth centre (in a
#: least-squares fit the same as fitting the mouth centre to the template's mouth midpoint with
#: double weight). Measured on the 1,000-photo CelebA fixture with MobileFaceNet (largest face,
#: full range + short-range fallback): offset 0 -> d' 3.186, TAR@FAR=1e-3 0.809, leave-one-out
#: top-1 0.955; offset 0.414 -> d' 3.219, TAR 0.816, top-1 0.955-0.956 (0.3: 3.204, 0.819,
#: 0.958). A small but consistent gain in the verification figures; top-1 differences are
#: within noise.
MOUTH_CORNER_OFFSET = 0.414

#: Bounds of ``alignment.aspect`` (a "box" crop region's height over its width): outside them a
#: face is squeezed or stretched past anything a recogniser was trained on.
MIN_ASPECT, MAX_ASPECT = 0.5, 2.0

Border = Literal["replicate", "zero"]


def arcface_template(size: int) -> np.ndarray:
    """The ArcFace 5-point template scaled to a ``size`` x ``size`` crop: (5,2) float32 pixels."""
    if size < 1:
        raise ConfigError(f"crop size must be >= 1, got {size}")
    return ARCFACE_TEMPLATE_112 * np.float32(size / 112.0)


def five_points(keypoints6: np.ndarray, mouth_offset: float = MOUTH_CORNER_OFFSET) -> np.ndarray:
    """BlazeFace's 6 keypoints (N,6,2) -> ArcFace's 5 points (N,5,2) float32, template order.

    Order out: image-left eye (subject's right), image-right eye, nose tip, image-left mouth
    corner, image-right mouth corner. The corners are the mouth centre -/+ ``mouth_offset``
    times the eye vector (so they follow the face's roll and yaw); ``mouth_offset=0`` puts
    both on the mouth centre.
    """
    kps = np.asarray(keypoints6, dtype=np.float32)
    if kps.ndim != 3 or kps.shape[1] < 4 or kps.shape[2] != 2:
        raise ShapeError(f"keypoints6 must have shape (N, 6, 2) in MediaPipe's order, got {tuple(kps.shape)}")
    eye_r, eye_l, nose, mouth = kps[:, 0], kps[:, 1], kps[:, 2], kps[:, 3]
    offset = np.float32(mouth_offset) * (eye_l - eye_r)
    return np.stack([eye_r, eye_l, nose, mouth - offset, mouth + offset], axis=1)


def similarity_transforms(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms (rotation, uniform scale, translation; no reflection)
    mapping each ``src[i]`` (N,K,2) onto ``dst`` (K,2) or (N,K,2): (N,2,3) float64.

    This is Umeyama's solution in 2-D, computed in closed form with complex numbers:
    ``w = a z + b`` with ``a = s e^{i theta}`` minimises ``sum |a z_k + b - w_k|^2``; a complex
    ``a`` cannot reflect. Degenerate sources (all points equal) give a zero linear part; check
    them before warping.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 3 or src.shape[2] != 2 or src.shape[1] < 2:
        raise ShapeError(f"src must have shape (N, K, 2) with K >= 2, got {tuple(src.shape)}")
    if dst.shape not in ((src.shape[1], 2), src.shape):
        raise ShapeError(
            f"dst must have shape ({src.shape[1]}, 2) or {tuple(src.shape)}, got {tuple(dst.shape)}"
        )
    z = src[..., 0] + 1j * src[..., 1]  # (N,K)
    w = dst[..., 0] + 1j * dst[..., 1]  # (K,) or (N,K)
    zc = z - z.mean(axis=-1, keepdims=True)
    wm = w.mean(axis=-1, keepdims=True)
    wc = w - wm
    var = np.sum(np.abs(zc) ** 2, axis=-1)
    a = np.sum(wc * np.conj(zc), axis=-1) / np.where(var > 0, var, 1.0)
    a = np.where(var > 0, a, 0)
    b = wm[..., 0] - a * z.mean(axis=-1)
    m = np.empty((len(src), 2, 3), np.float64)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = a.real, -a.imag, b.real
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = a.imag, a.real, b.imag
    return m


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama, no reflection) mapping ``src`` (K,2) onto
    ``dst`` (K,2): a (2,3) float64 matrix for ``cv2.warpAffine``.

    Raises ShapeError for mismatched shapes or a degenerate ``src`` (all points equal).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2 or dst.shape != src.shape:
        raise ShapeError(
            f"src and dst must both have shape (K, 2) with K >= 2, got {src.shape} and {dst.shape}"
        )
    if np.allclose(src, src[0]):
        raise ShapeError("similarity_transform: src points are all equal, no transform is defined")
    return similarity_transforms(src[None], dst)[0]


def box_transforms(xyxy: np.ndarray, size: int, margin: float, *, square: bool = True, aspect: float = 1.0,
                   centers: np.ndarray | None = None, angles: np.ndarray | None = None) -> np.ndarray:
    """Similarity (N,2,3) float64 mapping a region around each box onto a ``size`` crop.

    ``square``: the region is a square, its side the box's longer side times ``1 + margin``; else
    the box's width and height, each times ``1 + margin`` (the face's aspect is stretched to the
    square crop); ``aspect`` then makes the region that many times taller (it comes out squeezed
    vertically). The region is centred on the box, or on ``centers`` (N,2) when given, and turned
    by ``angles`` (N,) radians when given (the face's roll, so that the crop comes out upright).
    """
    xyxy = np.asarray(xyxy, dtype=np.float64)
    w = np.maximum(xyxy[:, 2] - xyxy[:, 0], 1.0)
    h = np.maximum(xyxy[:, 3] - xyxy[:, 1], 1.0)
    if square:
        w = h = np.maximum(w, h)
    h = h * float(aspect)
    if centers is None:
        c = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2], axis=1)
    else:
        c = np.asarray(centers, np.float64)
    sx, sy = size / (w * (1.0 + margin)), size / (h * (1.0 + margin))
    m = np.zeros((len(xyxy), 2, 3), np.float64)
    if angles is None:
        m[:, 0, 0], m[:, 1, 1] = sx, sy
    else:
        cos, sin = np.cos(angles), np.sin(angles)  # rotate by -angle: the roll undone
        m[:, 0, 0], m[:, 0, 1] = sx * cos, sx * sin
        m[:, 1, 0], m[:, 1, 1] = -sy * sin, sy * cos
    # box edges are continuous coordinates (pixel i spans [i, i+1)); warpAffine maps pixel
    # centres: crop centre size/2 (edges) <- box centre, shifted by half a pixel on both sides
    m[:, :, 2] = size / 2 - 0.5 - np.einsum("nij,nj->ni", m[:, :, :2], c - 0.5)
    return m


def roll_angles(keypoints: np.ndarray) -> np.ndarray:
    """(N,) roll of each face in radians: the angle of its eye line (BlazeFace keypoints 0 -> 1)."""
    k = np.asarray(keypoints, np.float64)
    d = k[:, 1] - k[:, 0]
    return np.arctan2(d[:, 1], d[:, 0])


def keypoint_centers(keypoints: np.ndarray) -> np.ndarray:
    """(N,2) mean of each face's eyes, nose tip and mouth centre (BlazeFace keypoints 0-3)."""
    return np.asarray(keypoints, np.float64)[:, :4].mean(axis=1)


def _check_image(image_bgr: Any, where: str) -> np.ndarray:
    if (
        not isinstance(image_bgr, np.ndarray)
        or image_bgr.ndim != 3
        or image_bgr.shape[2] != 3
        or image_bgr.dtype != np.uint8
    ):
        got = (
            f"{tuple(image_bgr.shape)} {image_bgr.dtype}"
            if isinstance(image_bgr, np.ndarray)
            else type(image_bgr).__name__
        )
        raise ShapeError(f"{where} expects a BGR uint8 image of shape (H, W, 3), got {got}")
    return image_bgr


def _multiple_of(lo: int, hi: int, k: int, limit: int) -> tuple[int, int]:
    """Widen [lo, hi) within [0, limit) to a length that is a multiple of k (or shrink it at
    the far end by less than k when the image is too small to widen)."""
    n = -(-(hi - lo) // k) * k
    if lo + n <= limit:
        return lo, lo + n
    if hi - n >= 0:
        return hi - n, hi
    return lo, lo + (hi - lo) // k * k


def _warp(image: np.ndarray, m: np.ndarray, size: int, border: int, antialias: bool) -> np.ndarray:
    """warpAffine one crop; when the transform shrinks by 2x or more, first shrink the source
    region with INTER_AREA so the bilinear warp does not alias (large faces)."""
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    if antialias and scale <= 0.5:
        k = int(1.0 / scale)
        # the source region the crop reads: the crop's corners mapped back, plus a margin
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
        h, w = image.shape[:2]
        x0 = int(max(np.floor(corners[:, 0].min()) - 2 * k, 0))
        y0 = int(max(np.floor(corners[:, 1].min()) - 2 * k, 0))
        x1 = int(min(np.ceil(corners[:, 0].max()) + 2 * k, w))
        y1 = int(min(np.ceil(corners[:, 1].max()) + 2 * k, h))
        # whole multiples of k (INTER_AREA then takes its fast integer-factor path), grown
        # towards the image's inside so the region never stops short of the image's edge
        x0, x1 = _multiple_of(x0, x1, k, w)
        y0, y1 = _multiple_of(y0, y1, k, h)
        if x1 - x0 >= 2 * k and y1 - y0 >= 2 * k:
            region = image[y0:y1, x0:x1]
            nw, nh = (x1 - x0) // k, (y1 - y0) // k
            small = cv2.resize(region, (nw, nh), interpolation=cv2.INTER_AREA)
            fx, fy = float(k), float(k)
            # small pixel (u,v) centre <-> source ((u+0.5)fx - 0.5 + x0, (v+0.5)fy - 0.5 + y0)
            to_src = np.array([[fx, 0, x0 + 0.5 * fx - 0.5], [0, fy, y0 + 0.5 * fy - 0.5], [0, 0, 1]])
            m = m @ to_src
            image = small  # clipped only where the image ends, so the border mode still applies there
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)


def align_faces(
    image_bgr: np.ndarray,
    detections: FaceDetections,
    spec: Any,
    *,
    mouth_offset: float = MOUTH_CORNER_OFFSET,
    border: Border = "replicate",
    antialias: bool = True,
    quality: np.ndarray | None = None,
    points5: np.ndarray | None = None,
) -> FaceCrops:
    """Crop and align every face of a frame in one batch, as the embedder's ``spec`` asks.

    Args:
        image_bgr: the frame, BGR uint8 (H,W,3).
        detections: its faces; ``keypoints`` (N,6,2) in MediaPipe's order for ``arcface5``.
        spec: a :class:`lookalike_live.models.ModelSpec` (``input.size``, ``input.color``,
            ``alignment.method`` = ``"arcface5"`` or ``"box"``, ``alignment.margin``).
        mouth_offset: see :func:`five_points` (``arcface5`` only).
        border: pixels outside the frame: ``"replicate"`` the edge or ``"zero"`` (black).
        antialias: shrink the source with INTER_AREA first when a face is downscaled 2x or more.
        quality: (N,) precomputed :func:`face_quality`; computed here when None.
        points5: (N,5,2) five points in the template's order (a dataset's annotated landmarks)
            for ``arcface5``, used instead of the points :func:`five_points` derives from the
            keypoints (whose mouth corners are estimated).

    Returns FaceCrops: ``pixels`` (N,S,S,3) uint8 in ``spec.input.color`` order (``color`` set
    accordingly), ``det_index`` (N,) int64 = 0..N-1, ``quality`` (N,) float32 in [0,1]. No
    faces -> an empty batch of shape (0,S,S,3). A face whose eye keypoints coincide (no
    usable keypoints) is cropped with the ``box`` method instead of failing the batch.
    """
    image_bgr = _check_image(image_bgr, "align_faces")
    if not isinstance(detections, FaceDetections):
        raise ShapeError(f"align_faces expects FaceDetections, got {type(detections).__name__}")
    size = int(spec.input.size)
    color = str(getattr(spec.input, "color", "RGB")).upper()
    if color not in ("RGB", "BGR"):
        raise ConfigError(
            f"model {spec.name!r}: input.color must be 'RGB' or 'BGR', got {spec.input.color!r}"
        )
    method = spec.alignment.method
    if border not in ("replicate", "zero"):
        raise ConfigError(f"border must be 'replicate' or 'zero', got {border!r}")
    n = len(detections)
    if n == 0:
        return FaceCrops(
            pixels=np.zeros((0, size, size, 3), np.uint8),
            det_index=np.zeros((0,), np.int64),
            quality=np.zeros((0,), np.float32),
            color=color,
        )

    al = spec.alignment
    centers = None
    if getattr(al, "center", "box") == "keypoints" and detections.keypoints.shape[1] >= 4:
        centers = keypoint_centers(detections.keypoints)
    elif getattr(al, "center", "box") not in ("box", "keypoints"):
        raise ConfigError(f"model {spec.name!r}: alignment.center must be 'box' or 'keypoints', got {al.center!r}")
    angles = roll_angles(detections.keypoints) if getattr(al, "upright", False) \
        and detections.keypoints.shape[1] >= 2 else None
    aspect = float(getattr(al, "aspect", 1.0))
    if not MIN_ASPECT <= aspect <= MAX_ASPECT:
        raise ConfigError(f"model {spec.name!r}: alignment.aspect must be between {MIN_ASPECT:g} and {MAX_ASPECT:g} "
                          f"(the crop's height over its width), got {aspect:g}")
    box_m = box_transforms(detections.xyxy, size, float(al.margin), square=bool(getattr(al, "square", True)),
                           aspect=aspect, centers=centers, angles=angles)
    if method == "arcface5":
        if detections.keypoints.shape[1] < 4:
            raise ShapeError(
                "arcface5 alignment needs BlazeFace's 6 keypoints (N,6,2), got "
                f"{tuple(detections.keypoints.shape)}"
            )
        if points5 is not None:
            src = np.asarray(points5, np.float32)
            if src.shape != (n, 5, 2):
                raise ShapeError(f"points5 must have shape ({n}, 5, 2), got {tuple(src.shape)}")
        else:
            src = five_points(detections.keypoints, mouth_offset)
        template = arcface_template(size)
        scale = float(getattr(al, "template_scale", 1.0))
        if scale != 1.0:  # about the crop's centre: below 1 the face shrinks and more of the head shows
            template = (template - size / 2) * np.float32(scale) + np.float32(size / 2)
        mats = similarity_transforms(src, template)
        eye_dist = np.linalg.norm(detections.keypoints[:, 1] - detections.keypoints[:, 0], axis=1)
        bad = eye_dist < 1.0
        if bad.any():
            log.debug("align_faces: %d face(s) without usable keypoints, cropped by box", int(bad.sum()))
            mats[bad] = box_m[bad]
    elif method == "box":
        mats = box_m
    else:
        raise ConfigError(
            f"model {spec.name!r}: unknown alignment.method {method!r} in {spec.spec_path or 'its spec'}; "
            "use 'arcface5' or 'box'"
        )

    cv_border = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    pixels = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        pixels[i] = _warp(image_bgr, mats[i], size, cv_border, antialias)
    if color == "RGB":
        flat = pixels.reshape(n * size, size, 3)
        cv2.cvtColor(flat, cv2.COLOR_BGR2RGB, dst=flat)
    if quality is None:
        quality = face_quality(image_bgr, detections)
    return FaceCrops(
        pixels=pixels,
        det_index=np.arange(n, dtype=np.int64),
        quality=np.asarray(quality, dtype=np.float32),
        color=color,
    )


# -- quality ---------------------------------------------------------------------------------

#: Face size (box side, pixels) scored 0 at or below this, 1 at or above QUALITY_FULL_SIZE,
#: log-linear between: recognisers at 112-160 px inputs lose most identity below ~20 px.
QUALITY_MIN_SIZE = 16.0
QUALITY_FULL_SIZE = 112.0
#: Sharpness: variance of the Laplacian of the face box resampled to 64x64 grey, mapped by
#: v / (v + QUALITY_BLUR_HALF): QUALITY_BLUR_HALF scores 0.5.
QUALITY_BLUR_SIZE = 64
QUALITY_BLUR_HALF = 200.0
#: Roll (eye line angle) scored 1 up to this many degrees, 0 at QUALITY_ROLL_ZERO (alignment
#: undoes roll; large roll mostly means unreliable keypoints).
QUALITY_ROLL_FREE = 20.0
QUALITY_ROLL_ZERO = 60.0
#: Weights of the geometric mean of the three scores.
QUALITY_WEIGHTS = (0.4, 0.3, 0.3)  # size, sharpness, pose


def face_quality(image_bgr: np.ndarray, detections: FaceDetections) -> np.ndarray:
    """Quality in [0,1] of each face (N,) float32: higher is better for recognition.

    Weighted geometric mean (``QUALITY_WEIGHTS``) of three scores in [0,1]:

    * size: the box's longer side, 0 at ``QUALITY_MIN_SIZE`` px, 1 at ``QUALITY_FULL_SIZE`` px,
      log-linear between;
    * sharpness: variance of the Laplacian of the face box resampled to 64x64 grey (so it does
      not depend on the face's size), ``v / (v + QUALITY_BLUR_HALF)``;
    * pose: yaw from the nose tip's offset from the eyes' midpoint along the eye line, relative
      to half the eye distance (0 frontal, 1 nose in line with an eye: profile), scored
      ``1 - offset``; times a roll score from the eye line's angle.

    ``image_bgr`` BGR uint8 (H,W,3); ``detections`` with MediaPipe's 6 keypoints.
    """
    image_bgr = _check_image(image_bgr, "face_quality")
    n = len(detections)
    if n == 0:
        return np.zeros((0,), np.float32)
    xyxy = detections.xyxy.astype(np.float64)
    side = np.maximum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1])
    size_score = np.clip(
        np.log(np.maximum(side, 1e-6) / QUALITY_MIN_SIZE) / np.log(QUALITY_FULL_SIZE / QUALITY_MIN_SIZE),
        0.0,
        1.0,
    )

    h, w = image_bgr.shape[:2]
    sharp = np.zeros(n, np.float64)
    b = QUALITY_BLUR_SIZE
    for i, (x0, y0, x1, y1) in enumerate(xyxy):
        ix0, iy0 = int(max(np.floor(x0), 0)), int(max(np.floor(y0), 0))
        ix1, iy1 = int(min(np.ceil(x1), w)), int(min(np.ceil(y1), h))
        if ix1 - ix0 < 2 or iy1 - iy0 < 2:
            continue
        grey = cv2.cvtColor(image_bgr[iy0:iy1, ix0:ix1], cv2.COLOR_BGR2GRAY)
        interp = cv2.INTER_AREA if (ix1 - ix0) > b else cv2.INTER_LINEAR
        grey = cv2.resize(grey, (b, b), interpolation=interp)
        sharp[i] = cv2.Laplacian(grey, cv2.CV_64F).var()
    sharp_score = sharp / (sharp + QUALITY_BLUR_HALF)

    kps = detections.keypoints.astype(np.float64)
    if kps.shape[1] >= 3:
        eye_r, eye_l, nose = kps[:, 0], kps[:, 1], kps[:, 2]
        axis = eye_l - eye_r
        dist = np.linalg.norm(axis, axis=1)
        ok = dist >= 1.0
        unit = axis / np.where(ok, dist, 1.0)[:, None]
        yaw = np.abs(np.einsum("ij,ij->i", nose - (eye_r + eye_l) / 2, unit)) / np.where(ok, dist / 2, 1.0)
        yaw_score = np.where(ok, np.clip(1.0 - yaw, 0.0, 1.0), 0.0)
        roll = np.degrees(np.abs(np.arctan2(axis[:, 1], axis[:, 0])))
        roll_score = np.clip(
            1.0 - (roll - QUALITY_ROLL_FREE) / (QUALITY_ROLL_ZERO - QUALITY_ROLL_FREE), 0.0, 1.0
        )
        pose_score = yaw_score * np.where(ok, roll_score, 0.0)
    else:
        pose_score = np.ones(n)

    ws, wb, wp = QUALITY_WEIGHTS
    q = size_score**ws * sharp_score**wb * pose_score**wp
    return np.clip(q, 0.0, 1.0).astype(np.float32)


def largest_face(detections: FaceDetections) -> int:
    """Row of the face with the largest box area (ties: the first). ShapeError when there is none."""
    if not len(detections):
        raise ShapeError("largest_face: the detections are empty; check len(detections) first")
    return int(np.argmax(detections.area))
