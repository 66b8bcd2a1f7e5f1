"""Drawing a :class:`~lookalike_live.types.FrameResult` onto its image (pure; OpenCV, and Pillow for
text in any script: :mod:`lookalike_live.text`).

``annotate(image, result) -> image`` returns a new BGR uint8 image (the input is never changed)
with, per visible track: its box; a label with the match's name (or CelebA id when the name is
empty) and similarity; a similarity bar; the matched gallery photo's thumbnail when the match
carries one (:class:`~lookalike_live.gallery.GalleryMatch` ``thumbnail``, JPEG bytes); or
"no close lookalike (best 0.28)" / "search unavailable" / "..." (not decided yet). Detections
without a track (an engine running without a tracker) get a plain box.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ShapeError
from .text import default_renderer
from .types import FrameResult, Match, Track, TrackState

__all__ = ["Annotator", "annotate", "label_for"]

_BGR = tuple[int, int, int]


@dataclass(frozen=True)
class Annotator:
    """Drawing settings; :meth:`annotate` is pure (same inputs, same pixels)."""

    box_thickness: int = 2
    text_size: int = 14  # label font size, pixels (TrueType, any script: lookalike_live.text)
    thumbnail_size: int = 64  # px; 0: no thumbnails
    bar_height: int = 5
    show_track_id: bool = True
    show_lost: bool = False
    decided_color: _BGR = (60, 200, 60)
    unknown_color: _BGR = (0, 165, 255)
    pending_color: _BGR = (200, 200, 200)
    unavailable_color: _BGR = (60, 60, 230)

    def annotate(self, image: np.ndarray, result: FrameResult) -> np.ndarray:
        """A copy of ``image`` (BGR uint8 HxWx3, normally ``result.frame.image``) with the result drawn."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ShapeError(f"annotate expects a BGR uint8 image (H, W, 3), got {got}")
        out = image.copy()
        tracks = [t for t in result.tracks if self.show_lost or t.state is not TrackState.LOST]
        if not result.tracks:
            for box in result.detections.xyxy:
                self._box(out, box, self.pending_color)
        for track in tracks:
            self._track(out, track)
        return out

    # -- pieces ---------------------------------------------------------------------------------------
    def _color(self, track: Track) -> _BGR:
        if track.state is TrackState.SEARCH_UNAVAILABLE:
            return self.unavailable_color
        if track.state is TrackState.DECIDED:
            return self.decided_color
        if track.state is TrackState.UNKNOWN:
            return self.unknown_color
        return self.pending_color

    def _box(self, img: np.ndarray, box: np.ndarray | tuple[float, ...], color: _BGR) -> tuple[int, int, int, int]:
        h, w = img.shape[:2]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x1, x2 = max(0, min(w - 1, x1)), max(0, min(w - 1, x2))
        y1, y2 = max(0, min(h - 1, y1)), max(0, min(h - 1, y2))
        cv2.rectangle(img, (x1, y1), (x2, y2), color, self.box_thickness, cv2.LINE_AA)
        return x1, y1, x2, y2

    def _track(self, img: np.ndarray, track: Track) -> None:
        color = self._color(track)
        x1, y1, x2, y2 = self._box(img, track.xyxy, color)
        text = label_for(track)
        if self.show_track_id:
            text = f"#{track.track_id} {text}"
        renderer = default_renderer(self.text_size)
        tw, th = renderer.measure(text)
        h, w = img.shape[:2]
        ty = y1 - 2 - th - 2 - (self.bar_height + 2 if track.best else 0)  # the label's top
        if ty < 0:  # no room above the box: below it
            ty = min(h - th - 2, y2 + 4)
        tx = max(0, min(x1, w - tw - 2))
        renderer.draw(img, text, (tx, max(0, ty)), color, background=(0, 0, 0))
        if track.best is not None:
            self._bar(img, x1, max(0, y1 - self.bar_height - 2), max(x2 - x1, 20), track.best.score, color)
            if self.thumbnail_size > 0 and track.state is not TrackState.UNKNOWN:
                self._thumbnail(img, track.best, x2 + 2, y1)

    def _bar(self, img: np.ndarray, x: int, y: int, width: int, score: float, color: _BGR) -> None:
        h, w = img.shape[:2]
        x2 = min(w - 1, x + width)
        y2 = min(h - 1, y + self.bar_height)
        if x2 <= x or y2 <= y:
            return
        cv2.rectangle(img, (x, y), (x2, y2), (40, 40, 40), -1)
        fill = x + int(round((x2 - x) * float(np.clip(score, 0.0, 1.0))))
        if fill > x:
            cv2.rectangle(img, (x, y), (fill, y2), color, -1)

    def _thumbnail(self, img: np.ndarray, match: Match, x: int, y: int) -> None:
        data = getattr(match, "thumbnail", None)
        if not data:
            return
        thumb = _decode_thumbnail(bytes(data), self.thumbnail_size)
        if thumb is None:
            return
        h, w = img.shape[:2]
        s = thumb.shape[0]
        if x + s > w:  # no room right of the box: left of it
            x = max(0, x - s - 4 - int(self.box_thickness))
        x, y = max(0, min(w - s, x)), max(0, min(h - s, y))
        if s > w or s > h:
            return
        img[y : y + s, x : x + s] = thumb
        cv2.rectangle(img, (x, y), (x + s - 1, y + s - 1), (255, 255, 255), 1)


@functools.lru_cache(maxsize=256)
def _decode_thumbnail(data: bytes, size: int) -> np.ndarray | None:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        return None
    arr = cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA)
    arr.setflags(write=False)
    return arr


def label_for(track: Track) -> str:
    """The text shown for a track: ``name 0.62``, ``no close lookalike (best 0.28)``,
    ``search unavailable``, ``...`` while undecided."""
    m = track.best
    if track.state is TrackState.SEARCH_UNAVAILABLE:
        return f"{_display(m)} (search unavailable)" if m is not None else "search unavailable"
    if m is None:
        return "..."
    if track.state is TrackState.UNKNOWN:
        return f"no close lookalike (best {m.score:.2f})"
    return f"{_display(m)} {m.score:.2f}"


def _display(m: Match) -> str:
    return m.name or m.identity or "?"


_DEFAULT = Annotator()


def annotate(image: np.ndarray, result: FrameResult, annotator: Annotator | None = None) -> np.ndarray:
    """Draw ``result`` onto a copy of ``image`` (BGR uint8) with default (or given) settings."""
    return (annotator or _DEFAULT).annotate(image, result)
