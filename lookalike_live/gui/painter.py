"""The overlay painted with Qt: the same :class:`~lookalike_live.overlay.Tag` layout as the headless
renderer, drawn by ``QPainter`` with Qt's fonts (fontconfig fallback: any script), so the window's
labels are sharp at any window size. :func:`render_bgr` paints it into an image of the frame's size
for snapshots, recordings and cards (what is saved looks like what is shown)."""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from PyQt6.QtCore import QRectF, Qt
from PyQt6.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter, QPen

from ..overlay import Annotator, Tag

__all__ = ["QtOverlay", "render_bgr", "bgr_qimage"]

SELECTED_COLOR = QColor(255, 230, 0)


def _qcolor(bgr: Sequence[int], alpha: int = 255) -> QColor:
    return QColor(int(bgr[2]), int(bgr[1]), int(bgr[0]), alpha)


class QtOverlay:
    """Fonts, metrics and photo cache for painting tags; :meth:`measure` is the
    :data:`~lookalike_live.overlay.Measure` the layout is made with."""

    def __init__(self, annotator: Annotator | None = None, family: str | None = None) -> None:
        self.annotator = annotator or Annotator()
        self.family = family
        self._photos: OrderedDict[tuple[int, int], QImage | None] = OrderedDict()

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one QtOverlay per window, lives as long
    def font(self, size: int, bold: bool = False) -> QFont:
        f = QFont(self.family) if self.family else QFont()
        f.setStyleHint(QFont.StyleHint.SansSerif)
        f.setPixelSize(max(1, int(size)))
        f.setBold(bold)
        f.setHintingPreference(QFont.HintingPreference.PreferNoHinting)  # widths scale with the view
        return f

    @functools.lru_cache(maxsize=4096)  # noqa: B019
    def measure(self, text: str, size: int, bold: bool = False) -> tuple[float, float]:
        fm = QFontMetricsF(self.font(size, bold))
        return fm.horizontalAdvance(text) + 1.0, max(fm.height(), size * 1.25)

    def photo(self, data: bytes, size: int) -> QImage | None:
        key = (hash(data), size)
        if key in self._photos:
            self._photos.move_to_end(key)
            return self._photos[key]
        img = QImage()
        out: QImage | None = None
        if img.loadFromData(data):
            out = img.scaled(size, size, Qt.AspectRatioMode.IgnoreAspectRatio,
                             Qt.TransformationMode.SmoothTransformation)
        self._photos[key] = out
        if len(self._photos) > 256:
            self._photos.popitem(last=False)
        return out

    def paint(self, p: QPainter, tags: Sequence[Tag], selected: int | None = None) -> None:
        """Paint ``tags`` with ``p`` in image coordinates (the caller sets the transform)."""
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        a = self.annotator
        for tag in tags:
            x1, y1, x2, y2 = tag.box
            pen = QPen(_qcolor(tag.color), tag.box_width)
            pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(QRectF(x1, y1, x2 - x1, y2 - y1))
            if tag.track_id == selected:
                p.setPen(QPen(SELECTED_COLOR, max(2, tag.box_width)))
                p.drawRect(QRectF(x1 - 3, y1 - 3, x2 - x1 + 6, y2 - y1 + 6))
        for tag in tags:
            if tag.rect is None:
                continue
            x, y, w, h = tag.rect
            if tag.leader is not None:
                p.setPen(QPen(_qcolor(tag.color), 1))
                (ax, ay), (bx, by) = tag.leader
                p.drawLine(ax, ay, bx, by)
            p.fillRect(QRectF(x, y, w, h), _qcolor(a.panel_color, int(round(a.panel_alpha * 255))))
            p.setPen(QPen(_qcolor(tag.color), 1))
            p.drawRect(QRectF(x + 0.5, y + 0.5, w - 1, h - 1))
            if tag.thumb_rect is not None and tag.thumbnail:
                tx, ty, s, _ = tag.thumb_rect
                photo = self.photo(bytes(tag.thumbnail), s)
                if photo is None:  # undecodable: a grey square
                    p.fillRect(QRectF(tx, ty, s, s), QColor(90, 90, 90))
                else:
                    p.drawImage(QRectF(tx, ty, s, s), photo)
                p.drawRect(QRectF(tx + 0.5, ty + 0.5, s - 1, s - 1))
            if tag.bar_rect is not None and tag.score is not None:
                bx, by, bw, bh = tag.bar_rect
                p.fillRect(QRectF(bx, by, bw, bh), QColor(70, 70, 70))
                fill = bw * float(np.clip(tag.score, 0.0, 1.0))
                if fill > 0:
                    p.fillRect(QRectF(bx, by, fill, bh), _qcolor(tag.color))
            for item in tag.texts:
                p.setFont(self.font(item.size, item.bold))
                p.setPen(QColor(235, 235, 235) if item.role == "name" else _qcolor(tag.color))
                lh = self.measure("Ag", item.size)[1]
                p.drawText(QRectF(item.x, item.y, max(1.0, x + w - item.x), lh),
                           int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), item.text)


def bgr_qimage(image: np.ndarray) -> tuple[QImage, np.ndarray]:
    """A BGR888 QImage holding a copy of ``image`` (BGR uint8 HxWx3) and a numpy view of its
    pixels: Qt paints into the same memory numpy reads (no format conversion)."""
    h, w = image.shape[:2]
    q = QImage(w, h, QImage.Format.Format_BGR888)
    ptr: Any = q.bits()
    ptr.setsize(q.sizeInBytes())
    view = np.frombuffer(ptr, np.uint8).reshape(h, q.bytesPerLine())[:, :w * 3].reshape(h, w, 3)
    view[:] = image
    return q, view


def render_bgr(image: np.ndarray, tags: Sequence[Tag], overlay: QtOverlay, selected: int | None = None) -> np.ndarray:
    """``image`` (BGR uint8, already mirrored when the tags are) with ``tags`` painted by Qt, at its size."""
    q, view = bgr_qimage(image)
    p = QPainter(q)
    try:
        overlay.paint(p, tags, selected)
    finally:
        p.end()
    return view.copy()
