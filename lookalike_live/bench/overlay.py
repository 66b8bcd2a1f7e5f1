"""Overlay cost per frame: tag layout and placement plus drawing, for 1, 4 and 16 faces on a real
frame of the clip at 640x360 and 1280x720, headless (Pillow text, what `run --out` draws) and with
Qt (what the window paints, into an image of the frame's size), next to the in-run reference of
what the overlay cost before: OpenCV boxes and ASCII ``putText`` labels, no photo, no placement."""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

NAMES = ("Penélope Cruz", "Björk Guðmundsdóttir", "Владимир Высоцкий", "李小龙", "CelebA #2880")


def _frame(clip: Path) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(str(clip))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise RuntimeError(f"cannot decode a frame of {clip}")
    return frame


def _result(image: np.ndarray, n: int) -> Any:
    from ..gallery import GalleryMatch, encode_thumbnail
    from ..types import FaceDetections, Frame, FrameResult, Track, TrackState

    h, w = image.shape[:2]
    cw, ch = w // 4, h // 4
    side = 0.45 * min(cw, ch)
    tracks = []
    for k in range(n):
        cell = (k * 5) % 16 if n == 16 else k * 4 + 1
        x, y = (cell % 4) * cw + 0.1 * cw, (cell // 4) * ch + 0.1 * ch
        box = (x, y, x + side, y + side)
        thumb = encode_thumbnail(image, box)
        m = GalleryMatch(str(k), NAMES[k % len(NAMES)], 0.3 + 0.03 * k, "x.jpg", k, "celeba", thumb)
        tracks.append(Track(k, box, m, state=TrackState.DECIDED if k % 2 else TrackState.UNKNOWN))
    boxes = np.array([t.xyxy for t in tracks], np.float32)
    dets = FaceDetections(boxes, np.ones(n, np.float32), np.zeros((n, 6, 2), np.float32))
    return FrameResult(Frame("bench", 0, 0.0, image), dets, tuple(tracks))


def _p50_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm: fonts, label layouts and photos are cached across frames, as in a video
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 3)


def _cv2_reference(image: np.ndarray, result: Any) -> np.ndarray:
    import cv2

    out = image.copy()
    for t in result.tracks:
        x1, y1, x2, y2 = (int(v) for v in t.xyxy)
        cv2.rectangle(out, (x1, y1), (x2, y2), (80, 205, 80), 2)
        label = f"{t.best.name} {t.best.score:.2f}".encode("ascii", "replace").decode()
        cv2.putText(out, label, (x1, max(12, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (80, 205, 80), 1, cv2.LINE_AA)
    return out


def _qt_frame(image: np.ndarray, result: Any, ann: Any, overlay: Any, render: Any) -> np.ndarray:
    return render(image, ann.layout(result, overlay.measure), overlay)


def run(clip: Path, repeats: int = 30) -> dict[str, Any]:
    import cv2

    from ..overlay import Annotator

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    qt: Any = None
    try:
        from PyQt6.QtWidgets import QApplication

        from ..gui.painter import QtOverlay, render_bgr

        app = QApplication.instance() or QApplication([])
        qt = (QtOverlay(Annotator()), render_bgr, app)
    except Exception as exc:  # noqa: BLE001 - no Qt here: the headless figures still stand
        qt_error = f"{type(exc).__name__}: {exc}"
    base = _frame(clip)
    ann = Annotator()
    cases = []
    for w, h in ((640, 360), (1280, 720)):
        image = cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)
        for n in (1, 4, 16):
            res = _result(image, n)
            case: dict[str, Any] = {"size": f"{w}x{h}", "faces": n,
                                    "headless_ms": _p50_ms(functools.partial(ann.annotate, image, res), repeats),
                                    "layout_ms": _p50_ms(functools.partial(ann.layout, res), repeats),
                                    "cv2_reference_ms": _p50_ms(functools.partial(_cv2_reference, image, res), repeats)}
            if qt is not None:
                case["qt_ms"] = _p50_ms(functools.partial(_qt_frame, image, res, ann, qt[0], qt[1]), repeats)
            tags = ann.layout(res)
            case["with_photo"] = sum(g.thumb_rect is not None for g in tags)
            cases.append(case)
    out: dict[str, Any] = {"cases": cases, "repeats": repeats}
    if qt is None:
        out["qt"] = f"not measured: {qt_error}"
    return out
