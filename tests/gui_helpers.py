"""Helpers for tests/test_gui.py: the `lookalike-live` argv with the `app` subcommand registered
(as cli.build_parser will once it calls gui.cli.register), clip frames and box geometry."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def app_parser(build=None):  # type: ignore[no-untyped-def]
    """The `lookalike-live` parser (``build()``, default cli.build_parser) with `app` added through
    gui.cli.register (if not already there)."""
    import argparse

    from lookalike_live import cli
    from lookalike_live.gui import cli as gui_cli

    parser = (build or cli.build_parser)()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "app" not in sub.choices:
        gui_cli.register(sub, cli._model_opts, cli._detector_opts, cli._gallery_opts, cli._json_opt)
    return parser


def app_cli_command() -> list[str]:
    """argv prefix running the real ``lookalike_live.cli.main`` in a subprocess, with `app` registered."""
    tests_dir = str(Path(__file__).resolve().parent)
    script = (
        f"import sys; sys.path.insert(0, {tests_dir!r}); from gui_helpers import app_parser; "
        "from lookalike_live import cli; orig = cli.build_parser; cli.build_parser = lambda: app_parser(orig); "
        "sys.exit(cli.main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", script]


def clip_frame(clip: Path, index: int) -> np.ndarray:
    """Frame ``index`` of the clip (BGR), decoded sequentially (exact, unlike seeking)."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 275
    target = index % n
    frame = None
    for _ in range(target + 1):
        ok, frame = cap.read()
        if not ok:
            break
    cap.release()
    if frame is None:
        raise AssertionError(f"cannot decode frame {index} of {clip}")
    return frame


def ring_mask(shape: tuple[int, int], box: tuple[float, float, float, float], width: int = 2) -> np.ndarray:
    """Pixels on the outline of ``box`` (where the overlay draws the rectangle)."""
    h, w = shape
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = max(0, min(w - 1, x1)), max(0, min(w - 1, x2))
    y1, y2 = max(0, min(h - 1, y1)), max(0, min(h - 1, y2))
    m = np.zeros((h, w), bool)
    m[y1:y2 + 1, max(0, x1 - width + 1):x1 + width] = True
    m[y1:y2 + 1, max(0, x2 - width + 1):x2 + width] = True
    m[max(0, y1 - width + 1):y1 + width, x1:x2 + 1] = True
    m[max(0, y2 - width + 1):y2 + width, x1:x2 + 1] = True
    return m


def far_from_boxes(shape: tuple[int, int], boxes: list[tuple[float, float, float, float]], margin: int) -> np.ndarray:
    """Pixels at least ``margin`` px away from every box (where the overlay draws nothing)."""
    h, w = shape
    m = np.ones((h, w), bool)
    for x1, y1, x2, y2 in boxes:
        m[max(0, int(y1) - margin):min(h, int(y2) + margin), max(0, int(x1) - margin):min(w, int(x2) + margin)] = False
    return m
