"""Running the app: QApplication, the main window, unexpected errors shown as a banner (never a
crash), and the automation used by CI and the benchmark (``--screenshot FILE --frames N
--quit-after S``: after N displayed frames, save a window screenshot plus a JSON sidecar that says
where the video is in it and which faces it shows, then quit)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["ensure_display", "run_app", "AutoCapture", "capture_window", "GUI_SWITCH_INTERVAL"]

# Python hands the GIL between threads every 5 ms by default; with the capture, inference and search
# threads all runnable, the GUI thread can wait several such intervals. 2 ms keeps the event loop
# responsive (measured: see lookalike_live.bench.gui) at no visible cost to the engine.
GUI_SWITCH_INTERVAL = 0.002


def ensure_display() -> None:
    """Raise ConfigError (with what to do) when Qt would find no display to open a window on."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ConfigError(
            "no display to open the window on (DISPLAY/WAYLAND_DISPLAY unset): run it in a desktop session, "
            "under a virtual display (`xvfb-run -a lookalike-live app ...`), or with QT_QPA_PLATFORM=offscreen "
            "together with --screenshot; the headless alternative is `lookalike-live run --headless`"
        )


def capture_window(window: Any, path: str | Path) -> dict[str, Any]:
    """Save ``window``'s screenshot (PNG) and return what it shows: the displayed frame's index,
    where the video image sits in the screenshot (x, y, w, h in screenshot pixels), the tracks,
    display fps and the largest event-loop stall so far. Also written next to it as ``.json``."""
    from PyQt6.QtCore import QPoint
    from PyQt6.QtGui import QGuiApplication

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    screen = window.screen()
    on_screen = QGuiApplication.platformName() == "xcb" and screen is not None and window.isVisible()
    # under X (a desktop or Xvfb): the pixels the X server shows; elsewhere the widgets rendered.
    # Paint the frame being described now (an update() would paint it later) and let X catch up.
    if on_screen:
        window.repaint()
        QGuiApplication.sync()
    pm = screen.grabWindow(int(window.winId())) if on_screen else window.grab()
    if pm.isNull():
        on_screen, pm = False, window.grab()
    if not pm.save(str(out)):
        raise ConfigError(f"cannot write the screenshot {out}")
    dpr = float(pm.devicePixelRatio() or 1.0)
    r = window.video.image_rect()
    origin = window.video.mapTo(window, QPoint(0, 0))
    res = window.result
    from ..overlay import label_for

    open_set = window.annotator.open_set
    info: dict[str, Any] = {
        "screenshot": str(out),
        "grab": "screen" if on_screen else "widget",
        "screenshot_size": [pm.width(), pm.height()],
        "video_rect": [round((origin.x() + r.x()) * dpr, 2), round((origin.y() + r.y()) * dpr, 2),
                       round(r.width() * dpr, 2), round(r.height() * dpr, 2)],
        "mode": window.mode,
        "frame_index": res.frame.index if res is not None else None,
        "frame_ts_ms": res.frame.ts_ms if res is not None else None,
        "image_size": [res.frame.width, res.frame.height] if res is not None else None,
        "faces": len(res.detections) if res is not None else 0,
        "tracks": [
            {"id": t.track_id, "xyxy": [round(float(v), 2) for v in t.xyxy], "state": t.state.value,
             "label": label_for(t, open_set), "identity": t.best.identity if t.best else None,
             "name": t.best.name if t.best else None, "face_id": t.best.face_id if t.best else None,
             "score": round(t.best.score, 4) if t.best else None,
             "has_thumbnail": bool(getattr(t.best, "thumbnail", None)) if t.best else False}
            for t in (res.tracks if res is not None else ())
        ],
        "mirrored": window.mirrored if res is not None else False,
        "open_set": open_set,
        "tags": [_tag_record(g, window.overlay) for g in window.tags],
        "frames_shown": window.frames_shown,
        "display_fps": round(window.display_meter.overall(), 2),
        "max_stall_ms": round(window.heartbeat.max_gap_ms, 2),
        "banners": {k: window.banners.text(k) for k in window.banners.keys()}  # noqa: SIM118 - BannerArea is not a dict,
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str))
    return info


def _tag_record(tag: Any, overlay: Any) -> dict[str, Any]:
    """A Tag (overlay.py) as JSON: what is drawn where, in image pixels as shown, and with which
    font family (Qt adds fallback fonts for characters it lacks)."""
    from PyQt6.QtGui import QFontInfo

    return {
        "track": tag.track_id, "look": tag.look.value, "level": tag.level, "box": list(tag.box),
        "rect": list(tag.rect) if tag.rect else None, "identity": tag.identity, "name": tag.name,
        "score": round(tag.score, 4) if tag.score is not None else None,
        "thumb_rect": list(tag.thumb_rect) if tag.thumb_rect else None, "has_thumbnail": bool(tag.thumbnail),
        "bar_rect": list(tag.bar_rect) if tag.bar_rect else None,
        "texts": [{"text": t.text, "x": t.x, "y": t.y, "size": t.size, "role": t.role, "bold": t.bold,
                   "family": QFontInfo(overlay.font(t.size, t.bold)).family()} for t in tag.texts],
    }


class AutoCapture:
    """Counts displayed frames; after ``frames`` of them (or ``quit_after`` seconds) takes the
    screenshot (when asked) and quits the app (exit code 0, or 3 when fewer frames were shown)."""

    def __init__(self, app: Any, window: Any, *, screenshot: Path | None, frames: int | None,
                 quit_after: float | None) -> None:
        from PyQt6.QtCore import QTimer

        self.app, self.window = app, window
        self.screenshot = screenshot
        self.frames = frames
        self.info: dict[str, Any] | None = None
        self.done = False
        self.t0 = time.monotonic()
        self.t_first: float | None = None
        window.frameShown.connect(self._on_frame)
        if quit_after:
            QTimer.singleShot(int(quit_after * 1000), self._timeout)

    def _on_frame(self, _res: Any) -> None:
        if self.t_first is None:
            self.t_first = time.monotonic()
            self.window.heartbeat.reset()  # measure while video plays, not during model loading
            self.window.display_meter.reset()
            self.window.display_meter.tick()
        if self.frames and not self.done and self.window.frames_shown >= self.frames:
            self._finish(0)

    def _timeout(self) -> None:
        if not self.done:
            shown = self.window.frames_shown
            code = 0 if not self.frames else 3
            if self.frames:
                log.warning("--quit-after reached with %d of %d frames shown", shown, self.frames)
            self._finish(code)

    def _finish(self, code: int) -> None:
        self.done = True
        if self.screenshot is not None:
            try:
                self.info = capture_window(self.window, self.screenshot)
                log.info("screenshot saved: %s", self.screenshot)
            except Exception as exc:  # noqa: BLE001 - reported, exit code says it
                log.error("screenshot failed: %s", exc)
                code = 4
        self.window.close()
        self.app.exit(code)


def run_app(options: Any, *, gui_settings: Path | None = None, screenshot: Path | None = None,
            frames: int | None = None, quit_after: float | None = None) -> tuple[int, dict[str, Any]]:
    """Open the main window and run the Qt event loop; returns (exit code, summary)."""
    ensure_display()
    from PyQt6.QtCore import QSettings
    from PyQt6.QtWidgets import QApplication

    from .main_window import MainWindow, Preferences

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("lookalike-live")
    app.setOrganizationName("lookalike-live")
    prefs = Preferences(QSettings(str(gui_settings), QSettings.Format.IniFormat) if gui_settings else None)
    window = MainWindow(options, prefs)
    previous_hook = sys.excepthook

    def hook(etype: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        log.error("unexpected error in the GUI:\n%s", "".join(traceback.format_exception(etype, value, tb)))
        with contextlib.suppress(Exception):  # the window may be gone
            window.banners.show_banner("unexpected", f"Unexpected error: {etype.__name__}: {value} "
                                       "(details in the log). The app keeps running.", "error")

    sys.excepthook = hook
    previous_switch = sys.getswitchinterval()
    sys.setswitchinterval(GUI_SWITCH_INTERVAL)
    auto = AutoCapture(app, window, screenshot=screenshot, frames=frames, quit_after=quit_after) \
        if (screenshot or frames or quit_after) else None
    t0 = time.monotonic()
    window.show()
    try:
        code = int(app.exec())
    finally:
        sys.excepthook = previous_hook
        sys.setswitchinterval(previous_switch)
        if not window.isHidden() or not window._closing:
            window.close()
    summary = {
        "seconds": round(time.monotonic() - t0, 3),
        "frames_shown": window.frames_shown,
        "display_fps": round(window.display_meter.overall(), 2),
        "max_stall_ms": round(window.heartbeat.max_gap_ms, 2),
        "screenshot": str(screenshot) if screenshot and auto is not None and auto.info is not None else None,
        "capture": auto.info if auto is not None else None,
        "exit_code": code,
    }
    return code, summary
