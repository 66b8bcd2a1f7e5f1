"""The lookalike card: a shareable PNG that puts every face beside its nearest celebrity's photo,
with the name and similarity, and the top 3 for one face (the selected one, else the largest).

Made the same way by ``match PHOTO --card out.png`` and by the app's C key; pure numpy + Pillow text
(:mod:`lookalike_live.text`, any script), no Qt.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ConfigError, ShapeError
from .overlay import decode_photo, display_name, elide, percent, pillow_measure
from .text import default_renderer
from .types import Match, Track, TrackState

__all__ = ["CardFace", "faces_from_tracks", "make_card", "save_card", "check_card_path"]

WIDTH = 760
PHOTO = 150  # face crop and matched photo, px
ROW = PHOTO + 20
TOP_PHOTO = 120
BG = (32, 28, 26)
FG = (235, 235, 235)
DIM = (160, 160, 160)
STRONG = (80, 205, 80)
FAINT = (215, 185, 130)
MAX_ROWS = 16


@dataclass(frozen=True)
class CardFace:
    """One face of the card: its box in the image, its matches (best first) and whether the best
    reaches the threshold ("looks like") or not ("a bit like")."""

    box: tuple[float, float, float, float]
    matches: tuple[Match, ...]
    strong: bool
    track_id: int | None = None


def faces_from_tracks(tracks: Sequence[Track]) -> list[CardFace]:
    """The answered faces of a frame's tracks (lost and unanswered ones left out)."""
    out = []
    for t in tracks:
        if t.state is TrackState.LOST or t.best is None:
            continue
        matches = tuple(t.top_k) or (t.best,)
        if matches[0].identity != t.best.identity:  # the vote's choice first
            matches = (t.best, *(m for m in matches if m.identity != t.best.identity))
        out.append(CardFace(tuple(float(v) for v in t.xyxy), matches,  # type: ignore[arg-type]
                            t.state is TrackState.DECIDED, t.track_id))
    return out


def _face_crop(image: np.ndarray, box: Sequence[float], size: int) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 2.0) * 1.4
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    m = np.array([[size / side, 0, size / 2 - cx * size / side], [0, size / side, size / 2 - cy * size / side]],
                 np.float32)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_AREA if side > size else cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)


def _photo(match: Match, size: int) -> np.ndarray | None:
    data = getattr(match, "thumbnail", None)
    return decode_photo(bytes(data), size) if data else None


def _paste(card: np.ndarray, img: np.ndarray | None, x: int, y: int, size: int, color: tuple[int, int, int]) -> None:
    if img is None:
        card[y:y + size, x:x + size] = (70, 70, 70)
        _text(card, "no photo", x + 8, y + size // 2 - 9, 14, DIM, size - 16)
    else:
        card[y:y + size, x:x + size] = img
    cv2.rectangle(card, (x - 1, y - 1), (x + size, y + size), color, 2)


def _text(card: np.ndarray, text: str, x: int, y: int, size: int, color: tuple[int, int, int], max_w: float) -> int:
    """Draw one line, elided to ``max_w``; returns its height."""
    text = elide(text, size, max_w, pillow_measure)
    r = default_renderer(size)
    r.draw(card, text, (x, y), color, pad=0)
    return r.measure(text)[1]


def _bar(card: np.ndarray, x: int, y: int, w: int, h: int, score: float, color: tuple[int, int, int]) -> None:
    cv2.rectangle(card, (x, y), (x + w, y + h), (70, 70, 70), -1)
    fill = int(round(w * float(np.clip(score, 0.0, 1.0))))
    if fill > 0:
        cv2.rectangle(card, (x, y), (x + fill, y + h), color, -1)


def make_card(image: np.ndarray, faces: Sequence[CardFace], selected: int | None = None, title: str = "",
              top: int = 3, threshold: float | None = None) -> np.ndarray:
    """The card (BGR uint8) for ``image`` (BGR uint8, the photo or frame) and its ``faces``:
    one row per face (left to right in the image; at most 16), then the top ``top`` matches of face
    ``selected`` (an index into ``faces``; default: the largest)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ShapeError("make_card expects a BGR uint8 image (H, W, 3)")
    order = sorted(range(len(faces)), key=lambda i: (faces[i].box[0], faces[i].box[1]))[:MAX_ROWS]
    if selected is None and faces:
        selected = max(range(len(faces)), key=lambda i: (faces[i].box[2] - faces[i].box[0])
                       * (faces[i].box[3] - faces[i].box[1]))
    sel = faces[selected] if selected is not None and 0 <= selected < len(faces) else None
    top_matches = sel.matches[:top] if sel is not None else ()
    head = 56
    top_h = (TOP_PHOTO + 90) if top_matches else 0
    rows_h = ROW * max(1, len(order))
    card = np.full((head + rows_h + top_h + 34, WIDTH, 3), BG, np.uint8)
    _text(card, "lookalike-live", 20, 12, 24, FG, 260)
    if title:
        _text(card, title, 290, 18, 16, DIM, WIDTH - 310)
    y = head
    if not order:
        _text(card, "No face found in this photo.", 20, y + 20, 18, DIM, WIDTH - 40)
    for n, i in enumerate(order):
        f = faces[i]
        best = f.matches[0]
        color = STRONG if f.strong else FAINT
        if i == selected and len(order) > 1:
            cv2.rectangle(card, (8, y + 2), (WIDTH - 9, y + ROW - 4), (0, 200, 255), 1)
        _paste(card, _face_crop(image, f.box, PHOTO), 20, y + 8, PHOTO, (200, 200, 200))
        _paste(card, _photo(best, PHOTO), 20 + PHOTO + 16, y + 8, PHOTO, color)
        tx = 20 + 2 * PHOTO + 40
        max_w = WIDTH - tx - 20
        ty = y + 22
        ty += _text(card, f"face {n + 1} · " + ("looks like" if f.strong else "a bit like"), tx, ty, 16, color, max_w)
        ty += _text(card, display_name(best), tx, ty + 4, 26, FG, max_w) + 10
        sub = best.identity if best.identity and best.identity not in display_name(best) else ""
        if sub:
            ty += _text(card, f"id {sub}", tx, ty, 14, DIM, max_w) + 6
        _bar(card, tx, ty + 6, max_w - 120, 10, best.score, color)
        _text(card, f"{percent(best.score)} similar", tx + max_w - 110, ty, 18, FG, 110)
        y += ROW
    if sel is not None and top_matches:
        y += 6
        cv2.line(card, (20, y), (WIDTH - 20, y), (80, 80, 80), 1)
        n = order.index(selected) + 1 if selected in order else selected + 1  # type: ignore[operator]
        _text(card, f"Top {len(top_matches)} for face {n}", 20, y + 10, 18, FG, WIDTH - 40)
        col = (WIDTH - 40) // top
        for k, m in enumerate(top_matches):
            x = 20 + k * col
            c = STRONG if (k == 0 and sel.strong) else FAINT
            _paste(card, _photo(m, TOP_PHOTO), x, y + 40, TOP_PHOTO, c)
            _text(card, f"{k + 1}. {display_name(m)}", x, y + 46 + TOP_PHOTO, 15, FG, col - 12)
            _text(card, percent(m.score), x + TOP_PHOTO + 10, y + 40, 18, c, col - TOP_PHOTO - 14)
        y += top_h
    at = f" ({threshold:.2f})" if threshold is not None else ""
    _text(card, f"similarity: cosine of face embeddings; at or above the threshold{at} a face \"looks like\", "
          "below it \"a bit like\"", 20, card.shape[0] - 26, 12, DIM, WIDTH - 40)
    return card


def check_card_path(path: str | Path) -> Path:
    """The card's path, refused before any work when it cannot be a PNG file."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"--card {out} is a folder: give a file name, e.g. {out / 'card.png'}")
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--card writes a PNG: give a path ending in .png, not {out.name}")
    return out


def save_card(card: np.ndarray, path: str | Path) -> Path:
    """Write ``card`` as PNG at ``path`` (through a temp file: never half a file); returns the path."""
    out = check_card_path(path)
    ok, buf = cv2.imencode(".png", card)
    if not ok:
        raise ConfigError("could not encode the card as PNG")
    tmp = out.with_name(out.name + ".part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the card {out}: {exc.strerror or exc}") from exc
    return out

