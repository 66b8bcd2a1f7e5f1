"""The overlay, as pure functions: where each face's tag goes (:meth:`Annotator.layout`) and how it
is drawn on a BGR image (:meth:`Annotator.annotate`). The desktop app paints the same layout with
Qt (``gui/painter.py``); ``run --out`` videos, snapshots and cards use :meth:`Annotator.annotate`
(text through :mod:`lookalike_live.text`: any script).

Two ways to answer "who is this?" (see the README):

* **lookalike** (default): every answered face shows its nearest celebrity, always: the matched
  photo, the name (or CelebA id), the similarity as a percentage and a bar. The threshold only sets
  the wording and style: "looks like" (at or above it: the track is ``DECIDED``, bold colour,
  thick box) or "a bit like" (below: ``UNKNOWN``, pale colour, thin box).
* **open set** (``open_set=True``: the monitor, ``--open-set``): below the threshold the face is
  "unknown" (its closest similarity shown, no name, no photo).

A tag is placed, for each face in turn (strong matches first, then larger faces), at the first of
right of / left of / above / below its box that stays inside the frame and overlaps neither another
tag nor any face; failing that, at the nearest free place (a thin leader line joins it to its face);
failing that it is drawn smaller (no photo, then one line, inside its own box). Tags never leave the
frame; with up to 16 faces in a 640x360 frame they never overlap (tests/test_overlay.py).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .errors import ShapeError
from .text import default_renderer
from .types import FrameResult, Match, Track, TrackState

__all__ = ["Annotator", "Look", "Tag", "TextItem", "annotate", "label_for", "display_name", "percent",
           "look_of", "place_rects", "pillow_measure", "decode_photo"]

_BGR = tuple[int, int, int]
Rect = tuple[int, int, int, int]  # x, y, w, h
#: (text, pixel size, bold) -> (width, height) in pixels
Measure = Callable[[str, int, bool], tuple[float, float]]
ELLIPSIS = "…"
BASE_HEIGHT = 360.0  # sizes below are for a frame this tall and scale with the frame


class Look(str, enum.Enum):
    STRONG = "strong"  # lookalike at or above the threshold: "looks like"
    FAINT = "faint"  # lookalike below the threshold: "a bit like"
    UNKNOWN = "unknown"  # open set, below the threshold
    PENDING = "pending"  # not answered yet
    UNAVAILABLE = "unavailable"  # gallery unreachable


def look_of(track: Track, open_set: bool = False) -> Look:
    if track.state is TrackState.SEARCH_UNAVAILABLE:
        return Look.UNAVAILABLE
    if track.best is None:
        return Look.PENDING
    if track.state is TrackState.DECIDED:
        return Look.STRONG
    if track.state is TrackState.UNKNOWN:
        return Look.UNKNOWN if open_set else Look.FAINT
    return Look.PENDING


CAPTIONS = {Look.STRONG: "looks like", Look.FAINT: "a bit like", Look.UNKNOWN: "unknown",
            Look.PENDING: "…", Look.UNAVAILABLE: "search unavailable"}


@dataclass(frozen=True)
class TextItem:
    """One line of a tag: top-left corner (x, y), pixel size, role ("caption", "name", "percent")."""

    text: str
    x: int
    y: int
    size: int
    role: str
    bold: bool = False


@dataclass(frozen=True)
class Tag:
    """What is drawn for one face, in image pixels (after mirroring): its box and its tag (a panel
    with the matched photo, caption, name, similarity bar and percentage)."""

    track_id: int
    look: Look
    color: _BGR
    box: tuple[int, int, int, int]  # x1, y1, x2, y2, clipped to the frame
    box_width: int
    rect: Rect | None  # the panel; None: box only
    level: int = 0  # 0 with the matched photo, 1 compact (no photo), 2 tiny (one line)
    texts: tuple[TextItem, ...] = ()
    thumb_rect: Rect | None = None
    thumbnail: bytes | None = None
    bar_rect: Rect | None = None
    score: float | None = None
    leader: tuple[tuple[int, int], tuple[int, int]] | None = None
    identity: str | None = None
    name: str | None = None


def display_name(m: Match) -> str:
    """The celebrity's name, else its identity (CelebA galleries without names: "CelebA #2880")."""
    return (m.name or "").strip() or m.identity or "?"


def percent(score: float) -> str:
    """Cosine similarity as shown: ``62%`` (clipped to 0-100)."""
    return f"{round(float(np.clip(score, 0.0, 1.0)) * 100):d}%"


def label_for(track: Track, open_set: bool = False) -> str:
    """The tag's text on one line: ``looks like Ada 62%``, ``a bit like Ada 21%``, ``unknown 21%``
    (open set), ``search unavailable``, ``…`` while undecided."""
    look = look_of(track, open_set)
    m = track.best
    if m is None or look is Look.PENDING:
        return CAPTIONS[look]
    if look is Look.UNKNOWN:
        return f"unknown {percent(m.score)}"
    if look is Look.UNAVAILABLE:
        return f"search unavailable (last: {display_name(m)})"
    return f"{CAPTIONS[look]} {display_name(m)} {percent(m.score)}"


@functools.lru_cache(maxsize=4096)
def _pillow_measure(text: str, size: int) -> tuple[float, float]:
    return default_renderer(size).measure(text)


def pillow_measure(text: str, size: int, bold: bool = False) -> tuple[float, float]:
    """:data:`Measure` of :mod:`lookalike_live.text` (what :meth:`Annotator.annotate` draws with)."""
    return _pillow_measure(text, size)


def elide(text: str, size: int, max_w: float, measure: Measure, bold: bool = False) -> str:
    """``text`` cut with "…" to fit ``max_w`` pixels (whole when it fits)."""
    if measure(text, size, bold)[0] <= max_w:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if measure(text[:mid].rstrip() + ELLIPSIS, size, bold)[0] <= max_w:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + ELLIPSIS if lo else ELLIPSIS


@dataclass(frozen=True)
class Annotator:
    """Overlay settings; :meth:`layout` and :meth:`annotate` are pure (same inputs, same pixels).
    Sizes are pixels for a 360-px-tall frame and scale with the frame's height."""

    open_set: bool = False
    show_track_ids: bool = False  # debug: "#12" before the caption
    show_lost: bool = False
    thumbnails: bool = True
    mirror: bool = False  # draw the frame mirrored (webcam preview); the labels stay readable
    text_size: int = 14
    thumbnail_size: int = 56
    max_name_width: int = 170
    panel_alpha: float = 0.72
    strong_color: _BGR = (80, 205, 80)
    faint_color: _BGR = (215, 185, 130)
    unknown_color: _BGR = (0, 165, 255)
    pending_color: _BGR = (200, 200, 200)
    unavailable_color: _BGR = (60, 60, 230)
    panel_color: _BGR = (24, 24, 24)

    def color(self, look: Look) -> _BGR:
        return {Look.STRONG: self.strong_color, Look.FAINT: self.faint_color, Look.UNKNOWN: self.unknown_color,
                Look.PENDING: self.pending_color, Look.UNAVAILABLE: self.unavailable_color}[look]

    def unit(self, height: int) -> float:
        return float(np.clip(height / BASE_HEIGHT, 0.75, 4.0))

    # -- layout ---------------------------------------------------------------------------------------
    def layout(self, result: FrameResult, measure: Measure | None = None) -> list[Tag]:
        """Every visible face's :class:`Tag`, placed (see the module doc); ``measure`` sizes text
        (default: :func:`pillow_measure`; the Qt window passes its font metrics)."""
        measure = measure or pillow_measure
        h, w = result.frame.height, result.frame.width
        u = self.unit(h)
        if result.tracks:
            tracks = [t for t in result.tracks if self.show_lost or t.state is not TrackState.LOST]
        else:  # an engine without a tracker: plain boxes
            tracks = [Track(-1 - i, tuple(float(v) for v in b), None)  # type: ignore[arg-type]
                      for i, b in enumerate(result.detections.xyxy)]
        boxes = [self._box(t.xyxy, w, h) for t in tracks]
        looks = [look_of(t, self.open_set) for t in tracks]
        # strong first, then faint/unknown, then the rest; larger faces first
        rank = {Look.STRONG: 0, Look.FAINT: 1, Look.UNKNOWN: 1, Look.UNAVAILABLE: 2, Look.PENDING: 3}
        order = sorted(range(len(tracks)), key=lambda i: (rank[looks[i]], -_area(boxes[i]), i))
        variants = [self._variants(tracks[i], looks[i], u, measure) if tracks[i].track_id >= 0 else []
                    for i in range(len(tracks))]
        placed = place_rects((w, h), boxes, [(i, [v[0] for v in variants[i]]) for i in order],
                             gap=max(2, int(round(3 * u))), cell=max(4, int(round(4 * u))))
        tags: list[Tag] = []
        for i, t in enumerate(tracks):
            look = looks[i]
            tag = Tag(t.track_id, look, self.color(look), boxes[i], self._box_width(look, u), None,
                      identity=t.best.identity if t.best else None, name=display_name(t.best) if t.best else None,
                      score=float(t.best.score) if t.best else None)
            where = placed.get(i)
            if where is not None:
                level, x, y = where
                tag = variants[i][level][1](x, y, tag)
                tag = replace(tag, leader=_leader(boxes[i], tag.rect, u))  # type: ignore[arg-type]
            tags.append(tag)
        return tags

    def _box(self, xyxy: Sequence[float], w: int, h: int) -> tuple[int, int, int, int]:
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        if self.mirror:
            x1, x2 = w - x2, w - x1
        cx = lambda v: int(round(min(max(v, 0.0), w - 1)))  # noqa: E731
        cy = lambda v: int(round(min(max(v, 0.0), h - 1)))  # noqa: E731
        return cx(x1), cy(y1), cx(x2), cy(y2)

    def _box_width(self, look: Look, u: float) -> int:
        return max(1, int(round((1.0 if look in (Look.FAINT, Look.PENDING) else 2.0) * u)))

    def _variants(self, track: Track, look: Look, u: float,
                  measure: Measure) -> list[tuple[tuple[int, int], Callable[[int, int, Tag], Tag]]]:
        """The tag's sizes, largest first, each with a function that fills a Tag placed at (x, y)."""
        pad, gap = int(round(4 * u)), int(round(5 * u))
        cs, ns, ps = int(round(self.text_size * 0.8 * u)), int(round(self.text_size * u)), \
            int(round(self.text_size * 0.8 * u))
        m = track.best
        prefix = f"#{track.track_id} " if self.show_track_ids else ""
        caption = prefix + CAPTIONS[look]
        if look is Look.UNAVAILABLE and m is not None:
            caption = prefix + "offline, last:"
        lh = lambda s: int(np.ceil(measure("Ag", s, False)[1]))  # noqa: E731
        mw = lambda text, s, bold=False: int(np.ceil(measure(text, s, bold)[0]))  # noqa: E731
        bar_h, bar_min = max(3, int(round(5 * u))), int(round(44 * u))
        out: list[tuple[tuple[int, int], Callable[[int, int, Tag], Tag]]] = []
        if m is None or look is Look.PENDING:  # one line: "…", "search unavailable"
            tw = mw(caption, cs)
            size = (tw + 2 * pad, lh(cs) + pad)
            out.append((size, lambda x, y, tag: replace(
                tag, rect=(x, y, *size), level=2,
                texts=(TextItem(caption, x + pad, y + pad // 2, cs, "caption"),))))
            return out
        pct = percent(m.score)
        name = "" if look is Look.UNKNOWN else elide(display_name(m), ns, self.max_name_width * u, measure, True)
        pct_w = mw(pct, ps)
        thumb = getattr(m, "thumbnail", None) if self.thumbnails and look is not Look.UNKNOWN else None
        ts = int(round(self.thumbnail_size * u))

        def column(x: int, y: int, col_w: int, with_caption: bool) -> tuple[list[TextItem], Rect]:
            items, cy = [], y
            if with_caption:
                items.append(TextItem(caption, x, cy, cs, "caption"))
                cy += lh(cs)
            if name:
                items.append(TextItem(name, x, cy, ns, "name", bold=True))
                cy += lh(ns)
            ph = lh(ps)
            bar_w = max(bar_min, col_w - pct_w - gap)
            bar = (x, cy + (ph - bar_h) // 2, bar_w, bar_h)
            items.append(TextItem(pct, x + bar_w + gap, cy, ps, "percent"))
            return items, bar

        col_w = max(mw(caption, cs), mw(name, ns, True) if name else 0, bar_min + gap + pct_w)
        col_h = lh(cs) + (lh(ns) if name else 0) + lh(ps)
        if thumb:  # full: photo + caption, name, bar; then the same with a smaller photo (crowds)
            for scale in (1.0, 0.7):
                out.append(self._full(scale, ts, pad, gap, col_w, col_h, thumb, column))
        # compact: caption, name, bar (no photo)
        size1 = (pad + col_w + pad, pad + col_h + pad)

        def compact(x: int, y: int, tag: Tag) -> Tag:
            items, bar = column(x + pad, y + pad, col_w, True)
            return replace(tag, rect=(x, y, *size1), level=1, texts=tuple(items), bar_rect=bar)
        out.append((size1, compact))
        # tiny: one line "62% Name…"
        tiny_text = f"{pct} {name}".strip() if name else f"{CAPTIONS[look]} {pct}"
        tiny_text = elide(tiny_text, ps, 90 * u, measure)
        size2 = (mw(tiny_text, ps) + 2 * pad, lh(ps) + pad)
        out.append((size2, lambda x, y, tag: replace(
            tag, rect=(x, y, *size2), level=2, texts=(TextItem(tiny_text, x + pad, y + pad // 2, ps, "percent"),))))
        return out

    @staticmethod
    def _full(scale: float, ts: int, pad: int, gap: int, col_w: int, col_h: int, thumb: bytes,
              column: Callable[[int, int, int, bool], tuple[list[TextItem], Rect]],
              ) -> tuple[tuple[int, int], Callable[[int, int, Tag], Tag]]:
        s = max(16, int(round(ts * scale)))
        size = (pad + s + gap + col_w + pad, pad + max(s, col_h) + pad)

        def full(x: int, y: int, tag: Tag) -> Tag:
            inner_h = size[1] - 2 * pad
            items, bar = column(x + pad + s + gap, y + pad + (inner_h - col_h) // 2, col_w, True)
            return replace(tag, rect=(x, y, *size), level=0, texts=tuple(items),
                           thumb_rect=(x + pad, y + pad + (inner_h - s) // 2, s, s), thumbnail=thumb, bar_rect=bar)
        return size, full

    # -- drawing ---------------------------------------------------------------------------------------
    def annotate(self, image: np.ndarray, result: FrameResult, tags: Sequence[Tag] | None = None) -> np.ndarray:
        """A copy of ``image`` (BGR uint8 HxWx3, normally ``result.frame.image``; mirrored when
        :attr:`mirror`) with the overlay drawn (``tags``: a layout made earlier, else :meth:`layout`)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ShapeError(f"annotate expects a BGR uint8 image (H, W, 3), got {got}")
        out = np.ascontiguousarray(image[:, ::-1]) if self.mirror else image.copy()
        if tags is None:
            if out.shape[:2] != (result.frame.height, result.frame.width):
                raise ShapeError(f"annotate: image is {out.shape[1]}x{out.shape[0]}, the result's frame is "
                                 f"{result.frame.width}x{result.frame.height}")
            tags = self.layout(result)
        for tag in tags:
            x1, y1, x2, y2 = tag.box
            cv2.rectangle(out, (x1, y1), (x2, y2), tag.color, tag.box_width, cv2.LINE_8)
        for tag in tags:
            self._draw_tag(out, tag)
        return out

    def _draw_tag(self, img: np.ndarray, tag: Tag) -> None:
        if tag.rect is None:
            return
        h, w = img.shape[:2]
        x, y, tw, th = tag.rect
        x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + tw), min(h, y + th)
        if x1 <= x0 or y1 <= y0:
            return
        if tag.leader is not None:
            cv2.line(img, tag.leader[0], tag.leader[1], tag.color, 1, cv2.LINE_AA)
        region = img[y0:y1, x0:x1]
        cv2.addWeighted(region, 1 - self.panel_alpha, _solid(region.shape, self.panel_color), self.panel_alpha, 0,
                        dst=region)
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), tag.color, 1)
        if tag.thumb_rect is not None and tag.thumbnail:
            tx, ty, s, _ = tag.thumb_rect
            thumb = decode_photo(bytes(tag.thumbnail), s)
            if thumb is None:  # an undecodable photo: a grey square, the rest is drawn
                cv2.rectangle(img, (tx, ty), (tx + s - 1, ty + s - 1), (90, 90, 90), -1)
            elif tx >= 0 and tx + s <= w and ty >= 0 and ty + s <= h:
                img[ty:ty + s, tx:tx + s] = thumb
            cv2.rectangle(img, (tx, ty), (tx + s - 1, ty + s - 1), tag.color, 1)
        if tag.bar_rect is not None and tag.score is not None:
            bx, by, bw, bh = tag.bar_rect
            cv2.rectangle(img, (bx, by), (bx + bw - 1, by + bh - 1), (70, 70, 70), -1)
            fill = int(round(bw * float(np.clip(tag.score, 0.0, 1.0))))
            if fill > 0:
                cv2.rectangle(img, (bx, by), (bx + fill - 1, by + bh - 1), tag.color, -1)
        for item in tag.texts:
            color = (235, 235, 235) if item.role == "name" else tag.color
            default_renderer(item.size).draw(img, item.text, (item.x, item.y), color, pad=0)


def _area(b: tuple[int, int, int, int]) -> int:
    return max(0, b[2] - b[0]) * max(0, b[3] - b[1])


def _leader(box: tuple[int, int, int, int], rect: Rect, u: float) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """A line from the face box to its tag when they are apart (None when they touch)."""
    x, y, w, h = rect
    bx1, by1, bx2, by2 = box
    dx = max(bx1 - (x + w), x - bx2, 0)
    dy = max(by1 - (y + h), y - by2, 0)
    if max(dx, dy) <= 8 * u:
        return None
    tx, ty = min(max((bx1 + bx2) // 2, x), x + w - 1), min(max((by1 + by2) // 2, y), y + h - 1)
    fx, fy = min(max(tx, bx1), bx2), min(max(ty, by1), by2)
    return (fx, fy), (tx, ty)


# --------------------------------------------------------------------------- placement
def place_rects(frame: tuple[int, int], boxes: Sequence[tuple[int, int, int, int]],
                wanted: Sequence[tuple[int, Sequence[tuple[int, int]]]], gap: int = 3,
                cell: int = 4) -> dict[int, tuple[int, int, int]]:
    """Place one rectangle per face, in the order given: ``wanted`` is [(face index, [(w, h) per
    size, largest first])]; returns {face index: (size level, x, y)}. A rectangle stays inside the
    frame and overlaps no face box and no rectangle placed before it (checked on a ``cell``-pixel
    grid, conservatively); the largest size that fits anywhere wins, as close to its face as it can
    be (preferred: right, left, above, below). When nothing fits, the smallest size goes inside its
    own box (overlapping only that face), else where it overlaps least."""
    fw, fh = frame
    gw, gh = fw // cell, fh // cell
    occ = np.zeros((gh, gw), np.int32)

    def cells(x1: float, y1: float, x2: float, y2: float) -> tuple[int, int, int, int]:
        return (max(0, int(x1 // cell)), max(0, int(y1 // cell)),
                min(gw, int(-(-x2 // cell))), min(gh, int(-(-y2 // cell))))

    def mark(b: tuple[int, int, int, int], v: int) -> None:
        c = cells(*b)
        occ[c[1]:c[3], c[0]:c[2]] += v

    for b in boxes:
        mark((b[0], b[1], b[2] + 1, b[3] + 1), 1)
    out: dict[int, tuple[int, int, int]] = {}
    for face, sizes in wanted:
        if not sizes:
            continue
        bx1, by1, bx2, by2 = boxes[face]
        own = (bx1, by1, bx2 + 1, by2 + 1)
        sat = np.zeros((gh + 1, gw + 1), np.int64)
        sat[1:, 1:] = occ.cumsum(0).cumsum(1)
        chosen: tuple[int, int, int] | None = None
        for level, (w, h) in enumerate(sizes):
            cw, ch = int(-(-w // cell)), int(-(-h // cell))
            if cw > gw or ch > gh:
                continue
            # preferred places: right of, left of, above, below the box (rounded away from it)
            prefs = [(-(-(bx2 + 1 + gap) // cell), by1 // cell), ((bx1 - gap - w) // cell, by1 // cell),
                     (bx1 // cell, (by1 - gap - h) // cell), (bx1 // cell, -(-(by2 + 1 + gap) // cell))]
            for gx, gy in prefs:
                if 0 <= gx <= gw - cw and 0 <= gy <= gh - ch and _overlap(sat, gx, gy, cw, ch) == 0:
                    chosen = (level, gx * cell, gy * cell)
                    break
            if chosen is None:
                free = _free_positions(sat, cw, ch)
                if free is not None:
                    gys, gxs = free
                    d = _distance(gxs * cell, gys * cell, w, h, boxes[face])
                    k = int(np.argmin(d))
                    if d[k] <= 3.0 * max(bx2 - bx1, by2 - by1, 40) + max(w, h):
                        chosen = (level, int(gxs[k]) * cell, int(gys[k]) * cell)
            if chosen is not None:
                break
        if chosen is None:  # nothing free near: the smallest size inside its own box, else least overlap
            level = len(sizes) - 1
            w, h = sizes[level]
            cw, ch = int(-(-w // cell)), int(-(-h // cell))
            mark(own, -1)
            sat[1:, 1:] = occ.cumsum(0).cumsum(1)
            mark(own, 1)
            gx = min(max(0, int(-(-bx1 // cell))), max(0, gw - cw))
            gy = min(max(0, int(-(-by1 // cell))), max(0, gh - ch))
            if _overlap(sat, gx, gy, cw, ch) != 0:
                gys, gxs = np.mgrid[0:max(1, gh - ch + 1), 0:max(1, gw - cw + 1)]
                ov = _overlaps(sat, cw, ch)
                d = _distance(gxs.ravel() * cell, gys.ravel() * cell, w, h, boxes[face])
                k = int(np.lexsort((d, ov.ravel()))[0])
                gx, gy = int(gxs.ravel()[k]), int(gys.ravel()[k])
            chosen = (level, gx * cell, gy * cell)
        level, x, y = chosen
        out[face] = chosen
        w, h = sizes[level]
        mark((x, y, x + w, y + h), 1)
    return out


def _overlap(sat: np.ndarray, gx: int, gy: int, cw: int, ch: int) -> int:
    return int(sat[gy + ch, gx + cw] - sat[gy, gx + cw] - sat[gy + ch, gx] + sat[gy, gx])


def _overlaps(sat: np.ndarray, cw: int, ch: int) -> np.ndarray:
    """Occupied cells under a cw x ch rectangle at every grid position (gh-ch+1, gw-cw+1)."""
    return sat[ch:, cw:] - sat[:-ch, cw:] - sat[ch:, :-cw] + sat[:-ch, :-cw]


def _free_positions(sat: np.ndarray, cw: int, ch: int) -> tuple[np.ndarray, np.ndarray] | None:
    if ch >= sat.shape[0] or cw >= sat.shape[1]:
        return None
    ys, xs = np.nonzero(_overlaps(sat, cw, ch) == 0)
    return (ys, xs) if len(xs) else None


def _distance(x: np.ndarray, y: np.ndarray, w: int, h: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Gap (px) between rectangles at (x, y) of size (w, h) and the box; plus a small pull toward
    the box's top so ties go up rather than down."""
    bx1, by1, bx2, by2 = box
    dx = np.maximum(np.maximum(bx1 - (x + w), x - bx2), 0)
    dy = np.maximum(np.maximum(by1 - (y + h), y - by2), 0)
    return np.hypot(dx, dy) + 0.01 * np.abs(y - by1)


@functools.lru_cache(maxsize=64)
def _solid(shape: tuple[int, ...], color: _BGR) -> np.ndarray:
    arr = np.empty(shape, np.uint8)
    arr[:] = color
    arr.setflags(write=False)
    return arr


@functools.lru_cache(maxsize=256)
def decode_photo(data: bytes, size: int) -> np.ndarray | None:
    """A gallery photo (JPEG bytes) as a size x size BGR array (read-only, cached), None when undecodable."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None or size <= 0:
        return None
    arr = cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA if arr.shape[0] > size else cv2.INTER_CUBIC)
    arr.setflags(write=False)
    return arr


_DEFAULT = Annotator()


def annotate(image: np.ndarray, result: FrameResult, annotator: Annotator | None = None) -> np.ndarray:
    """Draw ``result`` onto a copy of ``image`` (BGR uint8) with default (or given) settings."""
    return (annotator or _DEFAULT).annotate(image, result)
