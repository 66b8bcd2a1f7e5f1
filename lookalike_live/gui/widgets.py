"""The app's widgets: video view (click a face), banners, match panel, settings dialog, and two
measuring helpers (event-loop heartbeat, rate meter). Widgets receive what they show as
arguments; none of them holds the engine."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PyQt6.QtCore import QObject, QPointF, QRectF, QSize, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPixmap, QResizeEvent
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..capture import SourceSpec, SourceStatus, StatusEvent
from ..config import CHOICES, Settings
from ..overlay import Tag
from ..types import Match, Track
from .painter import QtOverlay, bgr_qimage

__all__ = ["VideoView", "BannerArea", "MatchPanel", "SettingsDialog", "Heartbeat", "RateMeter",
           "bgr_to_qimage", "jpeg_pixmap", "DialogValues", "source_advice"]


def bgr_to_qimage(image: np.ndarray) -> QImage:
    """A QImage that owns a copy of ``image`` (BGR uint8 HxWx3): safe after the array changes or goes."""
    return bgr_qimage(image)[0]


def jpeg_pixmap(data: bytes | None, size: int) -> QPixmap | None:
    """A square pixmap from JPEG bytes (a gallery thumbnail), or None."""
    if not data:
        return None
    pm = QPixmap()
    if not pm.loadFromData(bytes(data)):
        return None
    return pm.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)


# --------------------------------------------------------------------------- video
class VideoView(QWidget):
    """Shows the frame scaled to fit (aspect kept) with the overlay's tags painted on it by Qt
    (``overlay``: a :class:`~lookalike_live.gui.painter.QtOverlay`); ``clicked(x, y)`` in image
    pixels (as shown: mirrored when the preview is). A HUD label sits in the top-left corner."""

    clicked = pyqtSignal(float, float)

    def __init__(self, overlay: QtOverlay | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.overlay = overlay or QtOverlay()
        self._image: QImage | None = None
        self._tags: Sequence[Tag] = ()
        self._selected: int | None = None
        self._target = QRectF()
        self.setMinimumSize(320, 180)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # the single-key shortcuts work once video shows
        self.hud = QLabel(self)
        self.hud.setObjectName("hud")
        self.hud.setStyleSheet("QLabel#hud { background: rgba(0,0,0,150); color: #e8e8e8; padding: 4px;"
                               " font-family: monospace; font-size: 11px; }")
        self.hud.move(6, 6)
        self.hud.hide()
        self.placeholder = "Pick a source and press Start (Space), or open a photo (Ctrl+P)"

    def sizeHint(self) -> QSize:
        return QSize(960, 540)

    def set_image(self, image: QImage | None, tags: Sequence[Tag] = (), selected: int | None = None) -> None:
        """Show ``image`` (the frame as displayed) with ``tags`` (image coordinates) painted on it."""
        self._image = image
        self._tags = tuple(tags)
        self._selected = selected
        self._layout_target()
        self.update()

    @property
    def tags(self) -> Sequence[Tag]:
        return self._tags

    @property
    def image(self) -> QImage | None:
        return self._image

    def image_rect(self) -> QRectF:
        """Where the image is drawn, in this widget's coordinates."""
        return QRectF(self._target)

    def _layout_target(self) -> None:
        if self._image is None or self._image.isNull():
            self._target = QRectF()
            return
        iw, ih = self._image.width(), self._image.height()
        scale = min(self.width() / iw, self.height() / ih)
        w, h = iw * scale, ih * scale
        self._target = QRectF((self.width() - w) / 2.0, (self.height() - h) / 2.0, w, h)

    def resizeEvent(self, event: QResizeEvent | None) -> None:
        self._layout_target()
        super().resizeEvent(event)

    def paintEvent(self, event: QPaintEvent | None) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(20, 20, 20))
        if self._image is not None and not self._target.isEmpty():
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(self._target, self._image)
            if self._tags:
                p.save()
                p.setClipRect(self._target)
                p.translate(self._target.topLeft())
                p.scale(self._target.width() / self._image.width(), self._target.height() / self._image.height())
                self.overlay.paint(p, self._tags, self._selected)
                p.restore()
        else:
            p.setPen(QColor(180, 180, 180))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
        p.end()

    def to_image(self, pos: QPointF) -> tuple[float, float] | None:
        """Widget position -> image pixel (None outside the image)."""
        if self._image is None or self._target.isEmpty() or not self._target.contains(pos):
            return None
        sx = self._image.width() / self._target.width()
        sy = self._image.height() / self._target.height()
        return (pos.x() - self._target.x()) * sx, (pos.y() - self._target.y()) * sy

    def from_image(self, x: float, y: float) -> QPointF:
        """Image pixel -> widget position."""
        if self._image is None or self._target.isEmpty():
            return QPointF(x, y)
        return QPointF(self._target.x() + x * self._target.width() / self._image.width(),
                       self._target.y() + y * self._target.height() / self._image.height())

    def mousePressEvent(self, event: QMouseEvent | None) -> None:
        if event is not None and event.button() == Qt.MouseButton.LeftButton:
            pt = self.to_image(event.position())
            if pt is not None:
                self.clicked.emit(pt[0], pt[1])
        super().mousePressEvent(event)

    def set_hud(self, text: str | None) -> None:
        if not text:
            self.hud.hide()
            return
        self.hud.setText(text)
        self.hud.adjustSize()
        self.hud.show()
        self.hud.raise_()


# --------------------------------------------------------------------------- banners
_LEVEL_STYLE = {
    "error": "background:#5c1f1f; color:#fff; border:1px solid #a33;",
    "warning": "background:#5c4a12; color:#fff; border:1px solid #b8922a;",
    "info": "background:#1f3b5c; color:#fff; border:1px solid #3a6ea5;",
}


class Banner(QFrame):
    def __init__(self, key: str, level: str, text: str, actions: Sequence[tuple[str, Callable[[], None]]],
                 on_close: Callable[[str], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.key, self.level = key, level
        self.setObjectName(f"banner-{key}")
        self.setStyleSheet(f"QFrame#banner-{key} {{ {_LEVEL_STYLE.get(level, _LEVEL_STYLE['info'])} "
                           "border-radius:4px; } QLabel { color:#fff; background:transparent; border:none; }")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 4, 4)
        self.label = QLabel(text)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.label, 1)
        self.buttons: dict[str, QPushButton] = {}
        for name, fn in actions:
            b = QPushButton(name)
            b.clicked.connect(lambda _=False, f=fn: f())
            lay.addWidget(b)
            self.buttons[name] = b
        close = QPushButton("✕")
        close.setToolTip("Dismiss")
        close.setFixedWidth(28)
        close.clicked.connect(lambda: on_close(key))
        lay.addWidget(close)

    @property
    def text(self) -> str:
        return self.label.text()


class BannerArea(QWidget):
    """A stack of dismissable banners, one per key (``source``, ``gallery``, ``search``, ``model``...):
    what went wrong and what to do, with action buttons."""

    changed = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(4, 4, 4, 0)
        self._lay.setSpacing(4)
        self._banners: dict[str, Banner] = {}
        self.hide()

    def show_banner(self, key: str, text: str, level: str = "error",
                    actions: Sequence[tuple[str, Callable[[], None]]] = ()) -> None:
        old = self._banners.get(key)
        if old is not None and old.text == text and old.level == level and list(old.buttons) == [a[0] for a in actions]:
            return
        self.clear(key, notify=False)
        b = Banner(key, level, text, actions, self.clear, self)
        self._banners[key] = b
        self._lay.addWidget(b)
        self.show()
        self.changed.emit()

    def clear(self, key: str, notify: bool = True) -> None:
        b = self._banners.pop(key, None)
        if b is not None:
            b.hide()
            b.deleteLater()
        if not self._banners:
            self.hide()
        if b is not None and notify:
            self.changed.emit()

    def text(self, key: str) -> str | None:
        b = self._banners.get(key)
        return b.text if b is not None else None

    def banner(self, key: str) -> Banner | None:
        return self._banners.get(key)

    def keys(self) -> list[str]:
        return list(self._banners)


def source_advice(spec: SourceSpec | None, ev: StatusEvent) -> str:
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


# --------------------------------------------------------------------------- match panel
class MatchRow(QFrame):
    def __init__(self, rank: int, match: Match, thumb_size: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.match = match
        lay = QHBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.thumb = QLabel()
        self.thumb.setFixedSize(thumb_size, thumb_size)
        self.thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
        pm = jpeg_pixmap(getattr(match, "thumbnail", None), thumb_size)
        self.has_thumbnail = pm is not None
        if pm is not None:
            self.thumb.setPixmap(pm)
        else:
            self.thumb.setText("no photo")
            self.thumb.setStyleSheet("color:#888; border:1px solid #555;")
        lay.addWidget(self.thumb)
        col = QVBoxLayout()
        name = match.name or match.identity
        sub = f"CelebA id {match.identity}" if match.name and match.name != match.identity else "CelebA id"
        self.title = QLabel(f"<b>{rank}. {name}</b><br><span style='color:#999'>{sub}</span>")
        col.addWidget(self.title)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(int(round(max(0.0, min(1.0, match.score)) * 1000)))
        self.bar.setFormat(f"similarity {match.score:.3f}")
        self.bar.setTextVisible(True)
        col.addWidget(self.bar)
        lay.addLayout(col, 1)


class MatchPanel(QWidget):
    """Top-K matches of the selected face: photo, name (or CelebA id) and similarity each."""

    closed = pyqtSignal()

    def __init__(self, thumb_size: int = 72, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thumb_size = thumb_size
        self.track_id: int | None = None
        self._shown: tuple[tuple[str, float], ...] | None = None
        lay = QVBoxLayout(self)
        head = QHBoxLayout()
        self.header = QLabel("Click a face to see its closest lookalikes")
        self.header.setWordWrap(True)
        head.addWidget(self.header, 1)
        close = QPushButton("✕")
        close.setFixedWidth(28)
        close.setToolTip("Close (Esc)")
        close.clicked.connect(self.closed.emit)
        head.addWidget(close)
        lay.addLayout(head)
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._list = QWidget()
        self._list_lay = QVBoxLayout(self._list)
        self._list_lay.addStretch(1)
        self._scroll.setWidget(self._list)
        lay.addWidget(self._scroll, 1)
        self.rows: list[MatchRow] = []
        self.setMinimumWidth(280)

    def show_track(self, track: Track, source: str = "") -> None:
        """Show ``track``'s top-K (or its best match when the engine keeps no top-K); cheap when unchanged."""
        matches = tuple(track.top_k) or ((track.best,) if track.best is not None else ())
        key = tuple((m.identity, round(m.score, 3)) for m in matches)
        state = track.state.value.replace("_", " ")
        where = f" in {source}" if source else ""
        self.header.setText(f"<b>Face #{track.track_id}</b>{where} — {state}, "
                            f"{len(matches)} match{'es' if len(matches) != 1 else ''}")
        if track.track_id == self.track_id and key == self._shown:
            return
        self.track_id = track.track_id
        self._shown = key
        self._set_rows(matches)

    def _set_rows(self, matches: Sequence[Match]) -> None:
        for r in self.rows:
            r.hide()
            r.deleteLater()
        self.rows = []
        for i, m in enumerate(matches):
            row = MatchRow(i + 1, m, self.thumb_size)
            self._list_lay.insertWidget(i, row)
            self.rows.append(row)
        if not matches:
            empty = QLabel("No match yet (searching, or no gallery)")
            self._list_lay.insertWidget(0, empty)
            self.rows = []
            empty.setObjectName("empty")

    def clear(self) -> None:
        self.track_id = None
        self._shown = None
        for i in reversed(range(self._list_lay.count() - 1)):
            item = self._list_lay.itemAt(i)
            w = item.widget() if item is not None else None
            if w is not None:
                w.hide()
                w.deleteLater()
        self.rows = []
        self.header.setText("Click a face to see its closest lookalikes")


# --------------------------------------------------------------------------- settings dialog
@dataclass(frozen=True)
class DialogValues:
    settings: Settings
    top_k: int
    loop_files: bool


class SettingsDialog(QDialog):
    """Model, backend, detector range, threshold, max faces, top-K, gallery URI and collection."""

    def __init__(self, settings: Settings, top_k: int, loop_files: bool, models: Sequence[str] = (),
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._base = settings
        form = QFormLayout(self)
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.addItems(list(dict.fromkeys([settings.model, *models])))
        self.model.setCurrentText(settings.model)
        form.addRow("Embedding model", self.model)
        self.backend = QComboBox()
        self.backend.addItems(list(CHOICES["backend"]))
        self.backend.setCurrentText(settings.backend)
        form.addRow("Backend", self.backend)
        self.detector = QComboBox()
        self.detector.addItems(list(CHOICES["detector"]))
        self.detector.setCurrentText(settings.detector)
        self.detector.setToolTip("short: faces within ~2 m (webcam); full: up to ~5 m")
        form.addRow("Detector range", self.detector)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.01)
        self.threshold.setDecimals(2)
        self.threshold.setValue(settings.threshold)
        form.addRow("Similarity threshold", self.threshold)
        self.max_faces = QSpinBox()
        self.max_faces.setRange(1, 64)
        self.max_faces.setValue(settings.max_faces)
        form.addRow("Max faces", self.max_faces)
        self.top_k = QSpinBox()
        self.top_k.setRange(1, 50)
        self.top_k.setValue(top_k)
        form.addRow("Matches per face (top-K)", self.top_k)
        self.uri = QLineEdit(settings.milvus_uri or "")
        self.uri.setPlaceholderText("embedded Milvus Lite file (default), or http://host:19530")
        form.addRow("Gallery URI", self.uri)
        self.collection = QLineEdit(settings.collection)
        form.addRow("Collection", self.collection)
        self.loop = QCheckBox("Loop video files")
        self.loop.setChecked(loop_files)
        form.addRow("", self.loop)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def values(self) -> DialogValues:
        s = self._base.replace(
            model=self.model.currentText().strip() or self._base.model,
            backend=self.backend.currentText(),
            detector=self.detector.currentText(),
            threshold=round(float(self.threshold.value()), 4),
            max_faces=int(self.max_faces.value()),
            top_k=int(self.top_k.value()),
            milvus_uri=self.uri.text().strip() or None,
            collection=self.collection.text().strip() or "faces",
        )
        return DialogValues(s, int(self.top_k.value()), self.loop.isChecked())


# --------------------------------------------------------------------------- measuring
class Heartbeat(QObject):
    """A QTimer ticking every ``interval_ms`` on the GUI thread; the largest gap between two ticks
    is how long the event loop was blocked (plus the interval)."""

    def __init__(self, interval_ms: int = 5, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.interval_ms = interval_ms
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last: float | None = None
        self.max_gap_ms = 0.0
        self.ticks = 0
        self._gaps: deque[float] = deque(maxlen=20000)

    def start(self) -> None:
        self.reset()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def reset(self) -> None:
        self._last = None
        self.max_gap_ms = 0.0
        self.ticks = 0
        self._gaps.clear()

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            gap = (now - self._last) * 1e3
            self._gaps.append(gap)
            self.max_gap_ms = max(self.max_gap_ms, gap)
        self._last = now
        self.ticks += 1

    def percentile(self, q: float) -> float:
        if not self._gaps:
            return 0.0
        return float(np.percentile(np.fromiter(self._gaps, float), q))


class RateMeter:
    """Events per second over a sliding window (display fps)."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=1024)
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None

    def tick(self, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        self._times.append(now)
        self.count += 1
        if self.first is None:
            self.first = now
        self.last = now

    def rate(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        ts = [t for t in self._times if now - t <= self.window_s]
        if len(ts) < 2 or ts[-1] <= ts[0]:
            return 0.0
        return (len(ts) - 1) / (ts[-1] - ts[0])

    def overall(self) -> float:
        if self.count < 2 or self.first is None or self.last is None or self.last <= self.first:
            return 0.0
        return (self.count - 1) / (self.last - self.first)

    def reset(self) -> None:
        self._times.clear()
        self.count = 0
        self.first = self.last = None
