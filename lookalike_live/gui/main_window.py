"""The main window: live video with the overlay, source picker, start/stop, photo mode, match
panel, snapshot/record, settings, HUD, status bar and error banners.

The window receives an :class:`~lookalike_live.gui.bridge.EngineBridge` (or builds one from its
:class:`AppOptions`); it never calls anything that waits on capture, inference or Milvus.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PyQt6.QtCore import QSettings, QStandardPaths, Qt, QThread, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PyQt6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QLabel,
    QMainWindow,
    QSplitter,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from ..capture import SourceSpec, SourceStatus, StatusEvent, list_webcams
from ..config import Settings, load_settings
from ..errors import (
    BackendUnavailableError,
    ConfigError,
    LookalikeError,
    ModelFormatError,
    ModelNotInstalledError,
    SourceError,
    UnknownModelError,
)
from ..overlay import Annotator
from ..types import FrameResult, Track, TrackState
from .bridge import EngineBridge
from .recorder import Recorder, save_snapshot
from .session import LoadedEngine
from .widgets import (
    BannerArea,
    DialogValues,
    Heartbeat,
    MatchPanel,
    RateMeter,
    SettingsDialog,
    VideoView,
    bgr_to_qimage,
)

log = logging.getLogger(__name__)

__all__ = ["AppOptions", "MainWindow", "Preferences", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_FILTER = "Videos (*.mp4 *.mkv *.avi *.mov *.webm *.m4v *.ts);;All files (*)"
IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.webp *.tif *.tiff);;All files (*)"
HISTORY_MAX = 12
REMEMBERED = ("model", "backend", "detector", "threshold", "max_faces", "milvus_uri", "collection")


@dataclass(frozen=True)
class AppOptions:
    """How the window starts. ``settings``: the resolved settings (flags > remembered > env/config);
    ``store``: model store (None: the user's); ``output_dir``: snapshots and recordings."""

    settings: Settings
    top_k: int = 10
    loop_files: bool = True
    store: Path | None = None
    output_dir: Path | None = None
    source: str | None = None
    autostart: bool = False
    photo: str | None = None
    show_hud: bool = True
    gallery_timeout: float = 5.0


class Preferences:
    """What the app remembers between runs (QSettings): settings, top-K, loop, source history."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings if qsettings is not None else QSettings("lookalike-live", "lookalike-live")

    def remembered(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in REMEMBERED:
            v = self.q.value(f"settings/{key}")
            if v is not None and v != "":
                out[key] = v
        return out

    def resolve(self, flags: dict[str, Any] | None = None) -> Settings:
        """flags (non-None) > remembered > environment > config file > defaults; a remembered value
        that is no longer valid is ignored (logged)."""
        flags = {k: v for k, v in (flags or {}).items() if v is not None}
        try:
            return load_settings({**self.remembered(), **flags})
        except ConfigError as exc:
            log.warning("ignoring the remembered settings (%s)", exc)
            return load_settings(flags)

    def top_k(self, default: int = 10) -> int:
        try:
            return max(1, int(self.q.value("settings/top_k", default)))
        except (TypeError, ValueError):
            return default

    def loop_files(self, default: bool = True) -> bool:
        v = self.q.value("settings/loop_files", default)
        return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")

    def save(self, settings: Settings, top_k: int, loop_files: bool) -> None:
        for key in REMEMBERED:
            v = getattr(settings, key)
            self.q.setValue(f"settings/{key}", "" if v is None else v)
        self.q.setValue("settings/top_k", int(top_k))
        self.q.setValue("settings/loop_files", bool(loop_files))
        self.q.sync()

    def history(self) -> list[str]:
        v = self.q.value("sources/history", [])
        if isinstance(v, str):
            v = [v] if v else []
        return [str(x) for x in (v or []) if str(x)]

    def add_history(self, source: str) -> list[str]:
        hist = [source] + [h for h in self.history() if h != source]
        hist = hist[:HISTORY_MAX]
        self.q.setValue("sources/history", hist)
        self.q.setValue("sources/last", source)
        self.q.sync()
        return hist

    def last_source(self) -> str:
        return str(self.q.value("sources/last", "") or "")


class _WebcamProbe(QThread):
    found = pyqtSignal(list)

    def run(self) -> None:
        try:
            cams = list_webcams()
        except Exception:  # noqa: BLE001 - no cameras listed, the field still takes any source
            log.debug("webcam probe failed", exc_info=True)
            cams = []
        self.found.emit(cams)


class MainWindow(QMainWindow):
    """The live lookalike overlay. ``frameShown(FrameResult)`` fires after each displayed frame."""

    frameShown = pyqtSignal(object)

    def __init__(self, options: AppOptions, prefs: Preferences | None = None, bridge: EngineBridge | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.options = options
        self.prefs = prefs or Preferences()
        self.top_k = options.top_k
        self.loop_files = options.loop_files
        self.output_dir = options.output_dir or Path(
            QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation) or ".") / "lookalike-live"
        self.bridge = bridge or EngineBridge(options.settings, store=options.store, top_k=options.top_k,
                                             loop_files=options.loop_files, gallery_timeout=options.gallery_timeout,
                                             parent=self)
        self.annotator = Annotator()
        self.mode: str | None = None  # "live" | "photo"
        self.result: FrameResult | None = None  # what is shown
        self.annotated: np.ndarray | None = None  # BGR, what is shown
        self.selected: int | None = None
        self.recorder: Recorder | None = None
        self.frames_shown = 0
        self.display_meter = RateMeter()
        self.heartbeat = Heartbeat(5, self)
        self.draw_ms = 0.0
        self.photo_name = ""
        self._closing = False
        self._build_ui()
        self._connect()
        self.heartbeat.start()
        self._hud_timer = QTimer(self)
        self._hud_timer.setInterval(500)
        self._hud_timer.timeout.connect(self._update_hud)
        self._hud_timer.start()
        self._probe = _WebcamProbe(self)
        self._probe.found.connect(self._on_webcams)
        self._probe.start()
        if options.source:
            self.source_box.setCurrentText(options.source)
        if options.photo:
            self.open_photo(options.photo)
        elif options.autostart and options.source:
            QTimer.singleShot(0, self.start)

    # -- UI --------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.setWindowTitle("lookalike-live")
        self.setAcceptDrops(True)
        tb = QToolBar("Source")
        tb.setObjectName("toolbar")
        tb.setMovable(False)
        self.addToolBar(tb)
        tb.addWidget(QLabel(" Source: "))
        self.source_box = QComboBox()
        self.source_box.setEditable(True)
        self.source_box.setMinimumWidth(320)
        self.source_box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.source_box.setToolTip("A webcam (webcam:0), a video file, or an rtsp:// / http(s):// URL")
        line = self.source_box.lineEdit()
        if line is not None:
            line.setPlaceholderText("webcam:0, /path/video.mp4 or rtsp://user:pass@host/stream")
            line.returnPressed.connect(self.start)
        for h in self.prefs.history():
            self.source_box.addItem(h)
        self.source_box.setCurrentText(self.prefs.last_source())
        tb.addWidget(self.source_box)

        def action(text: str, shortcut: str | QKeySequence.StandardKey | None, slot: Any, tip: str) -> QAction:
            a = QAction(text, self)
            if shortcut is not None:
                a.setShortcut(QKeySequence(shortcut))
            a.setToolTip(f"{tip} ({a.shortcut().toString()})" if shortcut is not None else tip)
            a.triggered.connect(lambda _=False: slot())
            self.addAction(a)
            return a

        self.act_file = action("File…", "Ctrl+O", self.choose_file, "Play a video file")
        self.act_start = action("Start", "Space", self.toggle_run, "Start/stop the source")
        self.act_photo = action("Photo…", "Ctrl+P", self.choose_photo, "Match every face of a photo")
        self.act_snapshot = action("Snapshot", "Ctrl+S", self.snapshot, "Save the annotated frame as PNG")
        self.act_record = action("Record", "Ctrl+R", self.toggle_recording, "Record the annotated video (MP4)")
        self.act_record.setCheckable(True)
        self.act_settings = action("Settings…", "Ctrl+,", self.edit_settings, "Model, detector, threshold, gallery")
        self.act_hud = action("HUD", "H", lambda: self.set_hud(not self.hud_on), "Show fps and per-stage timings")
        self.act_hud.setCheckable(True)
        self.act_close_panel = action("Close panel", "Esc", self.close_panel, "Close the match panel")
        self.act_full = action("Full screen", "F11", self.toggle_fullscreen, "Full screen")
        self.act_quit = action("Quit", QKeySequence.StandardKey.Quit, self.close, "Quit")
        for a in (self.act_file, self.act_start, self.act_photo, self.act_snapshot, self.act_record,
                  self.act_settings, self.act_hud):
            tb.addAction(a)

        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.banners = BannerArea()
        lay.addWidget(self.banners)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.video = VideoView()
        self.panel = MatchPanel()
        self.panel.hide()
        self.splitter.addWidget(self.video)
        self.splitter.addWidget(self.panel)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 0)
        lay.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

        sb = self.statusBar()
        self.lbl_backend = QLabel("backend: -")
        self.lbl_milvus = QLabel("Milvus: -")
        self.lbl_gallery = QLabel("gallery: -")
        self.lbl_source = QLabel("source: idle")
        for w in (self.lbl_source, self.lbl_backend, self.lbl_milvus, self.lbl_gallery):
            sb.addPermanentWidget(w)
        self.hud_on = self.options.show_hud
        self.act_hud.setChecked(self.hud_on)
        self.resize(1280, 760)

    def _connect(self) -> None:
        b = self.bridge
        b.loading.connect(self._on_loading)
        b.loaded.connect(self._on_loaded)
        b.loadFailed.connect(self._on_load_failed)
        b.resultReady.connect(self._on_result)
        b.runStarted.connect(self._on_run_started)
        b.runEnded.connect(self._on_run_ended)
        b.searchStatus.connect(self._on_search_status)
        b.sourceStatus.connect(self._on_source_status)
        b.photoReady.connect(self._on_photo)
        b.photoFailed.connect(self._on_photo_failed)
        self.video.clicked.connect(self.select_at)
        self.panel.closed.connect(self.close_panel)

    def _on_webcams(self, cams: list[int]) -> None:
        existing = {self.source_box.itemText(i) for i in range(self.source_box.count())}
        current = self.source_box.currentText()
        for i, cam in enumerate(cams):
            name = f"webcam:{cam}"
            if name not in existing:
                self.source_box.insertItem(i, name)
        self.source_box.setCurrentText(current or (f"webcam:{cams[0]}" if cams else ""))
        log.info("webcams found: %s", cams or "none")

    # -- running -----------------------------------------------------------------------------------
    def start(self, source: str | None = None) -> bool:
        """Play ``source`` (default: the picker's text). False (with a banner) when it is not a valid source."""
        text = (source if source is not None else self.source_box.currentText()).strip()
        if source is not None:
            self.source_box.setCurrentText(text)
        try:
            spec = self.bridge.start(text)
        except SourceError as exc:
            self.banners.show_banner("source", f"Cannot open this source: {exc}", "error")
            return False
        self.banners.clear("source")
        self.banners.clear("engine")
        self.mode = "live"
        self.selected = None
        self.panel.clear()
        self.panel.hide()
        self.frames_shown = 0
        self.display_meter.reset()
        hist = self.prefs.add_history(spec.text or text)
        self._set_history(hist, text)
        self.lbl_source.setText(f"source: {spec.display_name} (connecting…)")
        self.act_start.setText("Stop")
        return True

    def _set_history(self, hist: list[str], current: str) -> None:
        cams = [self.source_box.itemText(i) for i in range(self.source_box.count())
                if self.source_box.itemText(i).startswith("webcam:")]
        self.source_box.blockSignals(True)
        self.source_box.clear()
        self.source_box.addItems(list(dict.fromkeys(cams + hist)))
        self.source_box.setCurrentText(current)
        self.source_box.blockSignals(False)

    def stop(self) -> None:
        self.bridge.stop()
        self.act_start.setText("Start")

    def toggle_run(self) -> None:
        if self.bridge.is_running:
            self.stop()
        else:
            self.start()

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Play a video file", "", VIDEO_FILTER)
        if path:
            self.start(path)

    # -- engine signals ------------------------------------------------------------------------------
    def _on_loading(self) -> None:
        self.lbl_backend.setText("backend: loading models…")
        self.statusBar().showMessage("Loading models and opening the gallery…")

    def _on_loaded(self, info: LoadedEngine) -> None:
        self.statusBar().showMessage(f"Models loaded in {info.load_seconds:.1f} s", 4000)
        self.banners.clear("model")
        self.banners.clear("engine")
        self.lbl_backend.setText(f"backend: {info.backend} ({info.model})")
        kind = "Milvus Lite" if info.is_lite else "Milvus"
        stats = info.gallery_stats or {}
        p = info.gallery_problem
        if p is not None and p.kind == "unavailable":
            self.lbl_milvus.setText(f"{kind}: unreachable")
            self.lbl_gallery.setText("gallery: -")
            self.banners.show_banner(
                "gallery", f"Milvus is unreachable — faces are detected but not matched. {p.message}", "error",
                [("Retry", self.bridge.reload), ("Settings…", self.edit_settings)])
        else:
            version = stats.get("server_version")
            self.lbl_milvus.setText(f"{kind}: connected" + (f" ({version})" if version and not info.is_lite else ""))
            self.lbl_milvus.setToolTip(info.uri)
            faces, idents = stats.get("faces", 0), stats.get("identities", 0)
            self.lbl_gallery.setText(f"gallery: {faces:,} faces" + (f", {idents:,} identities" if idents else ""))
            if p is not None:
                level = "warning" if p.kind == "empty" else "error"
                self.banners.show_banner("gallery", p.message, level,
                                         [("Retry", self.bridge.reload), ("Settings…", self.edit_settings)])
            else:
                self.banners.clear("gallery")

    def _on_load_failed(self, exc: BaseException) -> None:
        self.act_start.setText("Start")
        self.lbl_backend.setText("backend: not loaded")
        self.lbl_source.setText("source: idle")
        actions = [("Retry", self.bridge.reload), ("Settings…", self.edit_settings)]
        if isinstance(exc, (ModelNotInstalledError, UnknownModelError, ModelFormatError, BackendUnavailableError)):
            self.banners.show_banner("model", f"Model problem: {exc}", "error", actions)
        elif isinstance(exc, LookalikeError):
            self.banners.show_banner("engine", f"Cannot start the engine: {exc}", "error", actions)
        else:
            self.banners.show_banner("engine", f"Unexpected error while loading: {type(exc).__name__}: {exc} "
                                     "(details in the log)", "error", actions)

    def _on_run_started(self, spec: SourceSpec) -> None:
        self.act_start.setText("Stop")
        self.lbl_source.setText(f"source: {spec.display_name} (connecting…)")

    def _on_run_ended(self, message: str) -> None:
        self.act_start.setText("Start")
        spec = self.bridge.source
        name = spec.display_name if spec is not None else "source"
        if message:
            self.banners.show_banner("engine", f"The video stopped: {message}", "error",
                                     [("Restart", self.start)])
            self.lbl_source.setText(f"source: {name} (failed)")
        elif not self.lbl_source.text().endswith("(ended)"):
            self.lbl_source.setText(f"source: {name} (stopped)")

    def _on_search_status(self, ok: bool, message: str) -> None:
        if ok:
            self.banners.clear("search")
            info = self.bridge.engine_info
            self.lbl_milvus.setText(("Milvus Lite" if info is not None and info.is_lite else "Milvus") + ": connected")
        else:
            self.banners.show_banner(
                "search", f"Gallery search unavailable: {message} Faces are still detected and tracked; matching "
                "resumes by itself when Milvus answers again.", "warning")
            self.lbl_milvus.setText("Milvus: unreachable")

    def _on_source_status(self, ev: StatusEvent) -> None:
        spec = self.bridge.source
        name = spec.display_name if spec is not None else ev.source_id
        self.lbl_source.setText(f"source: {name} ({ev.status.value})")
        if ev.status is SourceStatus.LIVE:
            self.banners.clear("source")
            return
        if ev.status in (SourceStatus.RECONNECTING, SourceStatus.STALLED, SourceStatus.ERROR):
            self.banners.show_banner("source", _source_advice(spec, ev), "error",
                                     [("Stop", self.stop)] if ev.status is not SourceStatus.ERROR else [])
        elif ev.status is SourceStatus.ENDED:
            self.lbl_source.setText(f"source: {name} (ended)")
            self.statusBar().showMessage(f"{name}: end of file ({ev.message})", 5000)

    # -- frames -------------------------------------------------------------------------------------
    def _on_result(self, res: FrameResult) -> None:
        if self.mode != "live":
            return
        self.show_result(res)

    def show_result(self, res: FrameResult) -> None:
        """Draw ``res`` (overlay.py), show it, feed the recorder and the match panel."""
        t0 = time.perf_counter()
        img = self.annotator.annotate(res.frame.image, res)
        if self.selected is not None:
            for t in res.tracks:
                if t.track_id == self.selected and t.state is not TrackState.LOST:
                    x1, y1, x2, y2 = (int(round(v)) for v in t.xyxy)
                    cv2.rectangle(img, (x1 - 3, y1 - 3), (x2 + 3, y2 + 3), (0, 230, 255), 2, cv2.LINE_AA)
        self.result, self.annotated = res, img
        self.video.set_image(bgr_to_qimage(img))
        if self.recorder is not None:
            self.recorder.write(img)
            if self.recorder.error:
                self.banners.show_banner("record", f"Recording failed: {self.recorder.error}", "error")
                self.stop_recording()
        if self.selected is not None and self.panel.isVisible():
            track = self._track(self.selected)
            if track is not None:
                self.panel.show_track(track, self._where())
        self.frames_shown += 1
        self.display_meter.tick()
        self.draw_ms = (time.perf_counter() - t0) * 1e3
        self.frameShown.emit(res)

    def _track(self, track_id: int) -> Track | None:
        if self.result is None:
            return None
        return next((t for t in self.result.tracks if t.track_id == track_id), None)

    def _where(self) -> str:
        if self.mode == "photo":
            return self.photo_name
        spec = self.bridge.source
        return spec.display_name if spec is not None else ""

    # -- click a face ---------------------------------------------------------------------------------
    def track_at(self, x: float, y: float) -> Track | None:
        """The visible track under image pixel (x, y) (the smallest box when boxes overlap)."""
        if self.result is None:
            return None
        hits = [t for t in self.result.tracks if t.state is not TrackState.LOST
                and t.xyxy[0] <= x <= t.xyxy[2] and t.xyxy[1] <= y <= t.xyxy[3]]
        if not hits:
            return None
        return min(hits, key=lambda t: (t.xyxy[2] - t.xyxy[0]) * (t.xyxy[3] - t.xyxy[1]))

    def select_at(self, x: float, y: float) -> Track | None:
        track = self.track_at(x, y)
        if track is None:
            return None
        self.selected = track.track_id
        self.panel.show_track(track, self._where())
        self.panel.show()
        if self.result is not None and self.mode == "photo":
            self.show_result(self.result)  # redraw with the highlight
        return track

    def close_panel(self) -> None:
        self.selected = None
        self.panel.clear()
        self.panel.hide()

    # -- photo mode -------------------------------------------------------------------------------------
    def choose_photo(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Match the faces of a photo", "", IMAGE_FILTER)
        if path:
            self.open_photo(path)

    def open_photo(self, path: str | Path) -> None:
        """Match every face of the photo at ``path`` (the live source stops)."""
        if self.bridge.is_running:
            self.stop()
        self.mode = "photo"
        self.photo_name = Path(path).name
        self.statusBar().showMessage(f"Matching the faces of {self.photo_name}…")
        self.banners.clear("photo")
        self.bridge.match_photo(str(path), self.photo_name)

    def _on_photo(self, res: FrameResult, name: str) -> None:
        if self.mode != "photo":
            return
        self.selected = None
        self.panel.clear()
        self.panel.hide()
        self.show_result(res)
        decided = sum(t.state is TrackState.DECIDED for t in res.tracks)
        self.lbl_source.setText(f"photo: {name}")
        self.statusBar().showMessage(f"{name}: {len(res.detections)} face(s), {decided} with a lookalike above the "
                                     "threshold — click a face for its top matches", 8000)
        if not len(res.detections):
            self.banners.show_banner("photo", f"No face found in {name}.", "info")

    def _on_photo_failed(self, exc: BaseException, name: str) -> None:
        self.statusBar().clearMessage()
        self.banners.show_banner("photo", f"Cannot match the faces of {name}: {exc}", "error")

    def dragEnterEvent(self, event: QDragEnterEvent | None) -> None:
        if event is not None:
            md = event.mimeData()
            if md is not None and md.hasUrls():
                event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent | None) -> None:
        if event is None or event.mimeData() is None:
            return
        urls = event.mimeData().urls()  # type: ignore[union-attr]
        paths = [u.toLocalFile() for u in urls if u.isLocalFile()]
        texts = [u.toString() for u in urls if not u.isLocalFile()]
        if paths:
            self.open_dropped(paths[0])
        elif texts:
            self.start(texts[0])
        event.acceptProposedAction()

    def open_dropped(self, path: str) -> None:
        if Path(path).suffix.lower() in IMAGE_SUFFIXES:
            self.open_photo(path)
        else:
            self.start(path)

    # -- snapshot and record ----------------------------------------------------------------------------
    def _default_path(self, what: str, suffix: str) -> Path:
        return self.output_dir / f"lookalike-{what}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"

    def snapshot(self, path: str | Path | None = None) -> Path | None:
        """Save the annotated frame (full resolution) as PNG; returns its path (None: nothing shown yet)."""
        if self.annotated is None:
            self.statusBar().showMessage("Nothing to save yet: start a source or open a photo", 4000)
            return None
        try:
            out = save_snapshot(self.annotated, path or self._default_path("snapshot", ".png"))
        except LookalikeError as exc:
            self.banners.show_banner("record", str(exc), "error")
            return None
        self.statusBar().showMessage(f"Snapshot saved: {out}", 6000)
        log.info("snapshot saved: %s", out)
        return out

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

    # -- settings -------------------------------------------------------------------------------------
    def current_settings(self) -> Settings:
        return self.bridge.settings

    def apply_settings(self, values: DialogValues) -> None:
        """Use and remember new settings (the engine reloads in the background)."""
        self.top_k, self.loop_files = values.top_k, values.loop_files
        self.prefs.save(values.settings, values.top_k, values.loop_files)
        for key in ("model", "gallery", "search", "engine"):
            self.banners.clear(key)
        self.bridge.configure(values.settings, top_k=values.top_k, loop_files=values.loop_files)
        self.statusBar().showMessage("Settings saved", 3000)

    def edit_settings(self) -> None:
        from .. import models

        try:
            names = sorted(n for n, s in models.registry().items() if s.kind == "embedder")
        except Exception:  # noqa: BLE001 - the field stays editable
            names = []
        dlg = SettingsDialog(self.bridge.settings, self.top_k, self.loop_files, names, self)
        if dlg.exec() == SettingsDialog.DialogCode.Accepted:
            self.apply_settings(dlg.values())

    # -- HUD -------------------------------------------------------------------------------------------
    def set_hud(self, on: bool) -> None:
        self.hud_on = on
        self.act_hud.setChecked(on)
        self._update_hud()

    def hud_text(self) -> str:
        m = self.bridge.metrics() or {}
        stages = m.get("stages", {})

        def ms(name: str) -> str:
            st = stages.get(name) or {}
            return f"{st.get('p50_ms', 0.0):.1f}" if st.get("count") else "-"

        counters = m.get("counters", {})
        faces = len(self.result.detections) if self.result is not None else 0
        return (f"display {self.display_meter.rate():4.1f} fps   engine {m.get('fps', 0.0):4.1f} fps   "
                f"gui stall max {self.heartbeat.max_gap_ms:.0f} ms\n"
                f"decode {ms('decode')}  detect {ms('detect')}  align {ms('align')}  embed {ms('embed')}  "
                f"search {ms('search')}  draw {self.draw_ms:.1f}  ms (p50)\n"
                f"latency {ms('latency')} ms   faces {faces}   drops {counters.get('capture_drops', 0)}"
                + (f"   REC {self.recorder.frames}" if self.recorder is not None else ""))

    def _update_hud(self) -> None:
        self.video.set_hud(self.hud_text() if self.hud_on and self.mode is not None else None)

    def toggle_fullscreen(self) -> None:
        if self.isFullScreen():
            self.showNormal()
        else:
            self.showFullScreen()

    # -- shutdown ----------------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent | None) -> None:
        if not self._closing:
            self._closing = True
            self.hide()
            self.heartbeat.stop()
            self._hud_timer.stop()
            self.stop_recording()
            self.prefs.save(self.bridge.settings, self.top_k, self.loop_files)
            self.bridge.shutdown()
            self._probe.wait(3000)
        super().closeEvent(event)


def _source_advice(spec: SourceSpec | None, ev: StatusEvent) -> str:
    """A banner text for a source problem: what happened and what to do."""
    name = spec.display_name if spec is not None else ev.source_id
    retry = f" Retrying in {ev.retry_in:.0f} s (attempt {ev.attempt})." if ev.retry_in is not None else ""
    why = ev.message or ev.status.value
    if ev.status is SourceStatus.STALLED:
        return f"{name}: the stream stopped sending frames ({why}). Reconnecting by itself;{retry} check the camera and network."
    if spec is not None and spec.kind == "webcam":
        return (f"Camera {name} cannot be opened: {why}. It may be busy in another program (close it) or "
                f"unplugged; pick another camera in the source list.{retry}")
    if spec is not None and spec.kind == "stream":
        return (f"Cannot reach {name}: {why}. Check the URL, the camera's address and port, the credentials and "
                f"the network.{retry}")
    if ev.status is SourceStatus.ERROR:
        return f"Cannot play {name}: {why}. Check that the file is a video FFmpeg can decode."
    return f"{name}: {why}.{retry}"

