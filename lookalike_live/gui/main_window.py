"""The main window: live video with the lookalike overlay (painted by Qt: gui/painter.py), source
picker, start/stop/pause, photo mode (open or drop a photo), match panel, snapshot/record/card,
mirror, full screen, settings, HUD, status bar and error banners.

The window receives an :class:`~lookalike_live.gui.bridge.EngineBridge` (or builds one from its
:class:`AppOptions`); it never calls anything that waits on capture, inference or Milvus.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PyQt6.QtCore import QStandardPaths, Qt, QThread, QTimer, pyqtSignal
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
from ..config import Settings
from ..errors import (
    BackendUnavailableError,
    LookalikeError,
    ModelFormatError,
    ModelNotInstalledError,
    SourceError,
    UnknownModelError,
)
from ..overlay import Annotator, Tag
from ..redact import redact_url, strip_secrets
from ..types import FrameResult, Track, TrackState
from .bridge import EngineBridge
from .outputs import OutputActions
from .painter import QtOverlay, render_bgr
from .preferences import Preferences
from .recorder import Recorder
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
    source_advice,
)

log = logging.getLogger(__name__)

__all__ = ["AppOptions", "MainWindow", "Preferences", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_FILTER = "Videos (*.mp4 *.mkv *.avi *.mov *.webm *.m4v *.ts);;All files (*)"
IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.webp *.tif *.tiff);;All files (*)"


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
    show_hud: bool = False
    gallery_timeout: float = 5.0
    open_set: bool | None = None  # None: remembered (default lookalike)
    show_track_ids: bool = False
    mirror: bool | None = None  # webcam preview mirrored; None: remembered (default on)


class _WebcamProbe(QThread):
    found = pyqtSignal(list)

    def run(self) -> None:
        try:
            cams = list_webcams()
        except Exception:  # noqa: BLE001 - no cameras listed, the field still takes any source
            log.debug("webcam probe failed", exc_info=True)
            cams = []
        self.found.emit(cams)


class MainWindow(OutputActions, QMainWindow):
    """The live lookalike overlay. ``frameShown(FrameResult)`` fires after each displayed frame."""

    frameShown = pyqtSignal(object)

    def __init__(self, options: AppOptions, prefs: Preferences | None = None, bridge: EngineBridge | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.options = options
        self.prefs = prefs or Preferences()
        #: sources typed with a password or token, by how the field and history show them: this
        #: session only (the settings file keeps them without their secrets)
        self._secret_sources: dict[str, str] = {}
        self.top_k = options.top_k
        self.loop_files = options.loop_files
        self.output_dir = options.output_dir or Path(
            QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation) or ".") / "lookalike-live"
        self.bridge = bridge or EngineBridge(options.settings, store=options.store, top_k=options.top_k,
                                             loop_files=options.loop_files, gallery_timeout=options.gallery_timeout,
                                             parent=self)
        open_set = self.prefs.flag("open_set", False) if options.open_set is None else options.open_set
        self.annotator = Annotator(open_set=open_set, show_track_ids=options.show_track_ids)
        self.overlay = QtOverlay(self.annotator)
        self.mirror_webcam = self.prefs.flag("mirror_webcam", True) if options.mirror is None else options.mirror
        self.mode: str | None = None  # "live" | "photo"
        self.result: FrameResult | None = None  # what is shown
        self.tags: list[Tag] = []  # its overlay layout (image pixels, as shown)
        self.shown_image: np.ndarray | None = None  # BGR frame as shown (mirrored for a mirrored webcam)
        self._annotated: np.ndarray | None = None
        self.paused = False
        self.hud_on: bool = options.show_hud
        self._sized_to_video = self.prefs.geometry() is not None
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
        self.act_start = action("Start", "Ctrl+Return", self.toggle_run, "Start/stop the source")
        self.act_pause = action("Pause", "Space", self.toggle_pause, "Pause/resume (starts the source when idle)")
        self.act_photo = action("Photo…", "Ctrl+P", self.choose_photo, "Match every face of a photo (or drop one)")
        self.act_snapshot = action("Snapshot", "S", self.snapshot, "Save the annotated frame as PNG")
        self.act_snapshot.setShortcuts([QKeySequence("S"), QKeySequence("Ctrl+S")])
        self.act_card = action("Card", "C", self.save_card, "Save a lookalike card: each face beside its celebrity")
        self.act_record = action("Record", "Ctrl+R", self.toggle_recording, "Record the annotated video (MP4)")
        self.act_record.setCheckable(True)
        self.act_mirror = action("Mirror", "M", self.toggle_mirror, "Mirror the webcam preview")
        self.act_mirror.setCheckable(True)
        self.act_mirror.setChecked(self.mirror_webcam)
        self.act_open_set = action("Open set", "O", lambda: self.set_open_set(not self.annotator.open_set),
                                   "Say \"unknown\" below the threshold instead of the nearest celebrity")
        self.act_open_set.setCheckable(True)
        self.act_open_set.setChecked(self.annotator.open_set)
        self.act_settings = action("Settings…", "Ctrl+,", self.edit_settings, "Model, detector, threshold, gallery")
        self.act_hud = action("HUD", "H", lambda: self.set_hud(not self.hud_on), "Show fps, timings and track ids")
        self.act_hud.setCheckable(True)
        self.act_escape = action("Close panel", "Esc", self.escape, "Leave full screen, else close the match panel")
        self.act_full = action("Full screen", "F", self.toggle_fullscreen, "Full screen")
        self.act_full.setShortcuts([QKeySequence("F"), QKeySequence("F11")])
        self.act_quit = action("Quit", QKeySequence.StandardKey.Quit, self.close, "Quit")
        for a in (self.act_file, self.act_start, self.act_pause, self.act_photo, self.act_snapshot, self.act_card,
                  self.act_record, self.act_mirror, self.act_settings, self.act_hud):
            tb.addAction(a)

        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.banners = BannerArea()
        lay.addWidget(self.banners)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.video = VideoView(self.overlay)
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
            sb.addWidget(w)  # not permanent: a message ("Models loaded in ...") shows whole, over them, then they return
        self.act_hud.setChecked(self.hud_on)
        geometry = self.prefs.geometry()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1100, 680)  # until the first frame says how large the video is

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
        text = self._secret_sources.get(text, text)  # a source typed with its password earlier this session
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
        self.set_paused(False)
        self.panel.clear()
        self.panel.hide()
        self.frames_shown = 0
        self.display_meter.reset()
        hist = self.prefs.add_history(spec.text or text)
        shown = redact_url(text)
        if shown != text:  # the field and the history show it without its secrets; this session keeps them
            self._secret_sources[shown] = self._secret_sources[strip_secrets(text)] = text
        self._set_history(hist, shown)
        self.video.setFocus()  # Space, S, C, F, M work at once (not typed into the source field)
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
        self.set_paused(False)
        self.act_start.setText("Start")

    def toggle_pause(self) -> None:
        """Space: pause/resume the video (a file stops reading; a live source's display freezes);
        when nothing plays, start the source in the picker."""
        if self.mode == "live" and self.bridge.is_running:
            self.set_paused(not self.paused)
        else:
            self.start()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.bridge.pause(paused)
        self.act_pause.setText("Resume" if paused else "Pause")
        if paused:
            self.statusBar().showMessage("Paused: Space resumes")
        else:
            self.statusBar().clearMessage()

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
            self.banners.show_banner("source", source_advice(spec, ev), "error",
                                     [("Stop", self.stop)] if ev.status is not SourceStatus.ERROR else [])
        elif ev.status is SourceStatus.ENDED:
            self.lbl_source.setText(f"source: {name} (ended)")
            self.statusBar().showMessage(f"{name}: end of file ({ev.message})", 5000)

    # -- frames -------------------------------------------------------------------------------------
    def _on_result(self, res: FrameResult) -> None:
        if self.mode != "live" or self.paused:
            return
        self.show_result(res)

    @property
    def mirrored(self) -> bool:
        """Whether the preview is mirrored now (webcams, when the Mirror toggle is on)."""
        spec = self.bridge.source
        return self.mode == "live" and self.mirror_webcam and spec is not None and spec.kind == "webcam"

    def show_result(self, res: FrameResult) -> None:
        """Lay out the overlay (overlay.py), show the frame with it (painted by Qt), feed the recorder
        and the match panel."""
        t0 = time.perf_counter()
        ann = dataclasses.replace(self.annotator, mirror=self.mirrored)
        self.tags = ann.layout(res, self.overlay.measure)
        img = np.ascontiguousarray(res.frame.image[:, ::-1]) if ann.mirror else res.frame.image
        self.result, self.shown_image, self._annotated = res, img, None
        self.video.set_image(bgr_to_qimage(img), self.tags, self.selected)
        if not self._sized_to_video:
            self._size_to_video(res.frame.width, res.frame.height)
        shown = self.annotated if self.recorder is not None else None
        if self.recorder is not None and shown is not None:
            self.recorder.write(shown)
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

    @property
    def annotated(self) -> np.ndarray | None:
        """The frame as shown with its overlay (BGR, full resolution; painted by Qt like the window)."""
        if self._annotated is None and self.shown_image is not None:
            self._annotated = render_bgr(self.shown_image, self.tags, self.overlay, self.selected)
        return self._annotated

    def _size_to_video(self, w: int, h: int) -> None:
        """The first time a video shows (no remembered geometry): size the window to it, within
        90 % of the screen."""
        self._sized_to_video = True
        if self.isFullScreen() or self.isMaximized():
            return
        screen = self.screen()
        avail = screen.availableGeometry() if screen is not None else None
        extra_w = self.width() - self.video.width() + (self.panel.width() if self.panel.isVisible() else 0)
        extra_h = self.height() - self.video.height()
        scale = max(1.0, 960 / w)  # small videos (640x360) shown larger
        if avail is not None:
            scale = min(scale, (avail.width() * 0.9 - extra_w) / w, (avail.height() * 0.9 - extra_h) / h)
        toolbar = max((tb.sizeHint().width() for tb in self.findChildren(QToolBar)), default=0)
        width, height = max(480, toolbar, int(w * scale) + extra_w), max(320, int(h * scale) + extra_h)
        if avail is not None:  # never wider or taller than the screen
            width, height = min(width, int(avail.width() * 0.95)), min(height, int(avail.height() * 0.95))
        self.resize(width, height)

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
        """The visible track under pixel (x, y) of the image as shown (mirrored when the preview is)
        or under its tag (the smallest box when boxes overlap)."""
        if self.result is None:
            return None

        def inside(r: tuple[int, int, int, int] | None) -> bool:
            return r is not None and r[0] <= x <= r[0] + r[2] and r[1] <= y <= r[1] + r[3]

        hits = [g for g in self.tags if g.box[0] <= x <= g.box[2] and g.box[1] <= y <= g.box[3]]
        hits = hits or [g for g in self.tags if inside(g.rect)]
        if not hits:
            return None
        tag = min(hits, key=lambda g: (g.box[2] - g.box[0]) * (g.box[3] - g.box[1]))
        return self._track(tag.track_id)

    def select_at(self, x: float, y: float) -> Track | None:
        track = self.track_at(x, y)
        if track is None:
            return None
        self.selected = track.track_id
        self.panel.show_track(track, self._where())
        self.panel.show()
        if self.result is not None and (self.mode == "photo" or self.paused):
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
        self.video.setFocus()
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
        self.statusBar().showMessage(f"{name}: {len(res.detections)} face(s), {decided} strong lookalike(s) — click "
                                     "a face for its top matches, C saves a card", 8000)
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

    # -- view ------------------------------------------------------------------------------------------
    def toggle_mirror(self) -> None:
        """M: mirror the webcam preview (remembered)."""
        self.mirror_webcam = not self.mirror_webcam
        self.act_mirror.setChecked(self.mirror_webcam)
        self.prefs.set_flag("mirror_webcam", self.mirror_webcam)
        self._redraw()

    def set_open_set(self, on: bool) -> None:
        """O: open-set wording ("unknown" below the threshold) or lookalike (always the nearest)."""
        self.annotator = dataclasses.replace(self.annotator, open_set=on)
        self.overlay.annotator = self.annotator
        self.act_open_set.setChecked(on)
        self.prefs.set_flag("open_set", on)
        self._redraw()

    def _redraw(self) -> None:
        if self.result is not None:
            self.show_result(self.result)

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
        ids = " ".join(f"#{g.track_id}" for g in self.tags if g.track_id >= 0)
        return (f"display {self.display_meter.rate():4.1f} fps   engine {m.get('fps', 0.0):4.1f} fps   "
                f"gui stall max {self.heartbeat.max_gap_ms:.0f} ms\n"
                f"decode {ms('decode')}  detect {ms('detect')}  align {ms('align')}  embed {ms('embed')}  "
                f"search {ms('search')}  draw {self.draw_ms:.1f}  ms (p50)\n"
                f"latency {ms('latency')} ms   faces {faces}   drops {counters.get('capture_drops', 0)}"
                + (f"\ntracks {ids}" if ids else "")
                + (f"   REC {self.recorder.frames}" if self.recorder is not None else ""))

    def _update_hud(self) -> None:
        self.video.set_hud(self.hud_text() if self.hud_on and self.mode is not None else None)

    def escape(self) -> None:
        if self.isFullScreen():
            self.showNormal()
        else:
            self.close_panel()

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
            if not self.isFullScreen():
                self.prefs.save_geometry(self.saveGeometry())
            self.bridge.shutdown()
            self._probe.wait(3000)
        super().closeEvent(event)
