"""The window's outputs: snapshot (S), lookalike card (C) and recording (Ctrl+R), as a mixin of
:class:`~lookalike_live.gui.main_window.MainWindow` (it uses the window's shown frame, overlay,
status bar and banners)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..card import faces_from_tracks, make_card, save_card
from ..errors import LookalikeError
from .recorder import Recorder, save_snapshot

log = logging.getLogger(__name__)

__all__ = ["OutputActions"]


class OutputActions:
    """Snapshot, card and recording actions of the main window."""

    recorder: Recorder | None
    output_dir: Path
    bridge: Any
    result: Any
    selected: int | None
    act_record: Any
    banners: Any

    if TYPE_CHECKING:  # provided by MainWindow / QMainWindow
        @property
        def annotated(self) -> np.ndarray | None: ...

        def statusBar(self) -> Any: ...  # noqa: N802 - Qt's name
        def _where(self) -> str: ...

    def save_card(self, path: str | Path | None = None) -> Path | None:
        """C: a shareable PNG card of the shown faces beside their celebrities, with the top 3 of
        the selected face (else the largest); returns its path (None: no face with a match shown)."""
        res = self.result
        faces = faces_from_tracks(res.tracks) if res is not None else []
        if res is None or not faces:
            self.statusBar().showMessage("No face with a lookalike to put on a card yet", 4000)
            return None
        selected = next((i for i, f in enumerate(faces) if f.track_id == self.selected), None)
        return self._save("Card", lambda: save_card(
            make_card(res.frame.image, faces, selected, title=self._where(),
                      threshold=self.bridge.settings.threshold), path or self._default_path("card", ".png")))

    def _default_path(self, what: str, suffix: str) -> Path:
        return self.output_dir / f"lookalike-{what}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"

    def _save(self, what: str, write: Callable[[], Path]) -> Path | None:
        """Run ``write``; say where it went (status bar, log) or why it failed (banner)."""
        try:
            out = write()
        except LookalikeError as exc:
            self.banners.show_banner("record", str(exc), "error")
            return None
        self.statusBar().showMessage(f"{what} saved: {out}", 6000)
        log.info("%s saved: %s", what.lower(), out)
        return out

    def snapshot(self, path: str | Path | None = None) -> Path | None:
        """Save the annotated frame (full resolution) as PNG; returns its path (None: nothing shown yet)."""
        shown = self.annotated
        if shown is None:
            self.statusBar().showMessage("Nothing to save yet: start a source or open a photo", 4000)
            return None
        return self._save("Snapshot", lambda: save_snapshot(shown, path or self._default_path("snapshot", ".png")))

    def start_recording(self, path: str | Path | None = None) -> Path:
        if self.recorder is not None:
            return self.recorder.path
        eng = self.bridge.engine
        fps = None
        if eng is not None and eng.capture is not None:
            fps = getattr(eng.capture.source, "fps", None)
        self.recorder = Recorder(path or self._default_path("recording", ".mp4"), float(fps or 30.0))
        self.act_record.setChecked(True)
        self.act_record.setText("Stop rec")
        self.statusBar().showMessage(f"Recording to {self.recorder.path}…")
        return self.recorder.path

    def stop_recording(self) -> tuple[Path, int] | None:
        rec, self.recorder = self.recorder, None
        self.act_record.setChecked(False)
        self.act_record.setText("Record")
        if rec is None:
            return None
        frames = rec.close()
        msg = f"Recorded {frames} frames to {rec.path}" + (f" ({rec.dropped} dropped)" if rec.dropped else "")
        self.statusBar().showMessage(msg, 8000)
        log.info("%s", msg)
        return rec.path, frames

    def toggle_recording(self) -> None:
        if self.recorder is None:
            self.start_recording()
        else:
            self.stop_recording()
