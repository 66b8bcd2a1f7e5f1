"""Detection and alignment benchmark on a video clip (the Hamilton clip in the test assets).

``run(store, clip)`` decodes the clip once (BGR uint8 frames), then measures per detector
setting the mean detection time per frame and the mean number of faces per frame, in VIDEO
mode as the live pipeline runs it:

* ``short``: BlazeFace short range on the whole frame;
* ``full``: BlazeFace full range on the whole frame;
* ``full+tile``: full range plus ``small_faces="tile"`` (two square tiles of a 16:9 frame),
  with the faces it adds per frame and its cost relative to ``full``;
* ``full_upscaled_2x``: full range on the frame upscaled 2x, showing that upscaling alone
  finds nothing new (MediaPipe resizes every input to the model's 192x192).

Then alignment: ms per face and per 5-face frame for both built-in embedder specs
(``mobilefacenet``: arcface5 at 112; ``facenet-casia-webface``: box at 160), with and without the
quality score. Everything returned is JSON-serialisable.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..align import align_faces, face_quality
from ..detect import FaceDetector
from ..errors import SourceError
from ..models import get_spec
from ..types import FaceDetections

log = logging.getLogger(__name__)

__all__ = ["run", "read_clip"]


def read_clip(clip: Path, frames: int | None = None) -> tuple[list[np.ndarray], float]:
    """Decode up to ``frames`` frames (all when None) as BGR uint8 (H,W,3), and the clip's fps."""
    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise SourceError(f"cannot open video {clip}: check the path and that OpenCV was built with FFmpeg")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    out: list[np.ndarray] = []
    try:
        while frames is None or len(out) < frames:
            ok, frame = cap.read()
            if not ok:
                break
            out.append(frame)
    finally:
        cap.release()
    if not out:
        raise SourceError(f"no frames decoded from {clip}")
    return out, float(fps)


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "ms_mean": round(float(a.mean()), 3),
        "ms_p50": round(float(np.percentile(a, 50)), 3),
        "ms_p95": round(float(np.percentile(a, 95)), 3),
    }


def _bench_detector(
    det: FaceDetector, frames: list[np.ndarray], fps: float, upscale: float = 1.0
) -> dict[str, Any]:
    ms: list[float] = []
    counts: list[int] = []
    with det:
        det.detect(
            frames[0] if upscale == 1.0 else cv2.resize(frames[0], None, fx=upscale, fy=upscale), 0.0
        )  # warm-up
        for i, frame in enumerate(frames, start=1):
            if upscale != 1.0:
                frame = cv2.resize(frame, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LINEAR)
            t0 = time.perf_counter()
            dets = det.detect(frame, i * 1000.0 / fps)
            ms.append((time.perf_counter() - t0) * 1000.0)
            counts.append(len(dets))
    c = np.asarray(counts)
    return {
        **_stats(ms),
        "faces_per_frame": round(float(c.mean()), 3),
        "max_faces": int(c.max()),
        "frames_with_faces": int((c > 0).sum()),
        "counts": counts,
        "samples_ms": [round(x, 3) for x in ms],
    }


def _five_face_frame(frames: list[np.ndarray], store: Path | None) -> tuple[np.ndarray, FaceDetections, int]:
    """The clip frame with the most faces (tile setting) and 5 of its faces (rows repeated if fewer)."""
    best: tuple[int, np.ndarray, FaceDetections] | None = None
    with FaceDetector("full", store=store, small_faces="tile") as det:
        for frame in frames[:: max(len(frames) // 60, 1)]:
            dets = det.detect(frame)
            if best is None or len(dets) > len(best[2]):
                best = (len(dets), frame, dets)
    if best is None or best[0] == 0:
        raise SourceError("no face found in the clip: cannot benchmark alignment")
    n, frame, dets = best
    rows = np.resize(np.arange(n), 5)
    return frame, dets[rows], n


def _bench_align(frame: np.ndarray, dets: FaceDetections, spec_name: str, repeats: int) -> dict[str, Any]:
    spec = get_spec(spec_name)
    q = face_quality(frame, dets)
    align_faces(frame, dets, spec, quality=q)  # warm-up
    ms_align, ms_full, ms_quality = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        align_faces(frame, dets, spec, quality=q)
        t1 = time.perf_counter()
        align_faces(frame, dets, spec)
        t2 = time.perf_counter()
        face_quality(frame, dets)
        t3 = time.perf_counter()
        ms_align.append((t1 - t0) * 1000)
        ms_full.append((t2 - t1) * 1000)
        ms_quality.append((t3 - t2) * 1000)
    n = len(dets)
    med = float(np.median(ms_align))
    med_full = float(np.median(ms_full))
    return {
        "method": spec.alignment.method,
        "size": spec.input.size,
        "faces_per_frame": n,
        "align_ms_per_frame": round(med, 3),
        "align_ms_per_face": round(med / n, 3),
        "align_with_quality_ms_per_frame": round(med_full, 3),
        "align_with_quality_ms_per_face": round(med_full / n, 3),
        "quality_ms_per_frame": round(float(np.median(ms_quality)), 3),
    }


def run(store: Path, clip: Path, frames: int | None = None, *, align_repeats: int = 200) -> dict[str, Any]:
    """Detection ms/frame and faces/frame per setting on ``clip``, and alignment ms/face.

    ``store`` is the model store holding blazeface-short and blazeface-full; ``frames`` limits
    the number of frames (all when None). Returns a JSON-serialisable dict.
    """
    store = Path(store)
    clip_frames, fps = read_clip(Path(clip), frames)
    h, w = clip_frames[0].shape[:2]
    log.info("detection benchmark on %s: %d frames of %dx%d", clip, len(clip_frames), w, h)

    settings: dict[str, tuple[FaceDetector, float]] = {
        "short": (FaceDetector("short", store=store, running_mode="video"), 1.0),
        "full": (FaceDetector("full", store=store, running_mode="video"), 1.0),
        "full+tile": (FaceDetector("full", store=store, running_mode="video", small_faces="tile"), 1.0),
        "full_upscaled_2x": (FaceDetector("full", store=store, running_mode="video"), 2.0),
    }
    detection: dict[str, Any] = {}
    for name, (det, upscale) in settings.items():
        detection[name] = _bench_detector(det, clip_frames, fps, upscale)
        log.info(
            "%s: %.2f ms/frame, %.3f faces/frame",
            name,
            detection[name]["ms_mean"],
            detection[name]["faces_per_frame"],
        )

    full, tile = detection["full"], detection["full+tile"]
    tile["tiles_xyxy"] = [
        list(t) for t in FaceDetector("full", store=store, small_faces="tile").tile_rects(h, w)
    ]
    tile["added_faces_per_frame"] = round(tile["faces_per_frame"] - full["faces_per_frame"], 3)
    tile["cost_vs_full"] = round(tile["ms_mean"] / max(full["ms_mean"], 1e-9), 2)
    for name, entry in detection.items():
        entry.pop("counts")
        if name != "full":
            entry.pop("samples_ms")

    frame5, dets5, found = _five_face_frame(clip_frames, store)
    alignment: dict[str, Any] = {
        name: _bench_align(frame5, dets5, name, align_repeats)
        for name in ("mobilefacenet", "facenet-casia-webface")
    }
    alignment["faces_found_in_that_frame"] = found

    return {
        "clip": str(clip),
        "frames": len(clip_frames),
        "frame_size": [w, h],
        "fps": round(fps, 3),
        "running_mode": "video",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cv2_threads": cv2.getNumThreads(),
        },
        "detection": detection,
        "alignment": alignment,
    }
