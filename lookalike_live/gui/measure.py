"""Measuring the real main window while it plays a clip (used by ``lookalike_live.bench.gui``
and the tests): display fps, event-loop stalls (a 5 ms QTimer heartbeat), engine timings."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ConfigError
from .app import GUI_SWITCH_INTERVAL

log = logging.getLogger(__name__)

__all__ = ["measure"]


def measure(clip: str | Path, settings: Settings, *, store: Path | None = None, seconds: float = 6.0,
            top_k: int = 10, load_timeout: float = 60.0, qsettings_file: Path | None = None) -> dict[str, Any]:
    """Open the real main window on ``clip`` with ``settings`` and measure for ``seconds`` after the
    first displayed frame (see the module doc). Needs a QApplication-capable platform."""
    if not os.environ.get("QT_QPA_PLATFORM") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PyQt6.QtCore import QEventLoop, QSettings, Qt, QTimer
    from PyQt6.QtGui import QGuiApplication
    from PyQt6.QtWidgets import QApplication

    from ..gui.main_window import AppOptions, MainWindow, Preferences

    _app = QApplication.instance() or QApplication(sys.argv[:1])  # kept alive while the window runs
    previous_switch = sys.getswitchinterval()
    sys.setswitchinterval(GUI_SWITCH_INTERVAL)  # as the app does: the GUI thread gets the GIL sooner
    with tempfile.TemporaryDirectory(prefix="bench-gui-") as tmp:
        ini = qsettings_file or Path(tmp) / "gui.ini"
        prefs = Preferences(QSettings(str(ini), QSettings.Format.IniFormat))
        opts = AppOptions(settings=settings, top_k=top_k, loop_files=True, store=store, output_dir=Path(tmp))
        window = MainWindow(opts, prefs)
        window.show()
        loop = QEventLoop()
        state: dict[str, Any] = {"first": None, "answers0": 0}

        def on_frame(_res: Any) -> None:
            if state["first"] is None:
                state["first"] = time.perf_counter()
                window.heartbeat.reset()
                window.display_meter.reset()
                window.display_meter.tick()
                m = window.bridge.metrics() or {}
                state["answers0"] = m.get("counters", {}).get("answers", 0)
                QTimer.singleShot(int(seconds * 1000), Qt.TimerType.PreciseTimer, loop.quit)

        def give_up() -> None:
            if state["first"] is None:
                loop.quit()

        window.frameShown.connect(on_frame)
        QTimer.singleShot(int(load_timeout * 1000), give_up)
        if not window.start(str(clip)):
            raise ConfigError(f"cannot start {clip}: {window.banners.text('source')}")
        loop.exec()
        try:
            if state["first"] is None:
                raise ConfigError(f"no frame displayed within {load_timeout:g} s; banners: "
                                  f"{ {k: window.banners.text(k) for k in window.banners.keys()} }")  # noqa: SIM118
            elapsed = time.perf_counter() - state["first"]
            m = window.bridge.metrics() or {}
            stages = m.get("stages", {})
            counters = m.get("counters", {})
            decided = sum(t.state.value == "decided" for t in (window.result.tracks if window.result else ()))
            out = {
                "clip": str(clip), "platform": QGuiApplication.platformName(), "seconds": round(elapsed, 2),
                "frames_shown": window.display_meter.count,
                "display_fps": round(window.display_meter.overall(), 2),
                "max_stall_ms": round(window.heartbeat.max_gap_ms, 2),
                "p99_stall_ms": round(window.heartbeat.percentile(99), 2),
                "heartbeat_ticks": window.heartbeat.ticks,
                "engine_fps": m.get("overall_fps"),
                "answers_during": counters.get("answers", 0) - state["answers0"],
                "answers": counters.get("answers", 0),
                "queries": counters.get("queries", 0),
                "capture_drops": counters.get("capture_drops", 0),
                "decided_tracks_last_frame": decided,
                "draw_ms_last": round(window.draw_ms, 3),
                "stage_p50_ms": {k: v["p50_ms"] for k, v in stages.items() if v.get("count")},
                "banners": {k: window.banners.text(k) for k in window.banners.keys()},  # noqa: SIM118
            }
        finally:
            window.close()
            window.deleteLater()
            sys.setswitchinterval(previous_switch)
    log.info("gui bench: %s", out)
    return out
