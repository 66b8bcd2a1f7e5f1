"""Text in any script on BGR images: Pillow's FreeType renderer with per-character font fallback.

OpenCV's ``putText`` has Hershey fonts only: "Penélope Cruz", "Björk" or "李小龙" come out as
"?". :class:`TextRenderer` draws with TrueType fonts instead. A font chain is found once: the
fonts named by ``$LOOKALIKE_FONTS`` (paths, ``:``-separated), then fontconfig's answers
(``fc-match``) for a sans-serif face and for Chinese, Japanese, Korean, Arabic, Hebrew, Thai and
Devanagari text, then DejaVu Sans wherever it lies (the Debian package, matplotlib's own copy).
Each character is drawn with the first font whose character map holds it (read with fontTools),
so a line mixes scripts freely; a character no font holds is drawn with the first font (its
"missing glyph" box), never as "?". Without any TrueType font, OpenCV's Hershey font draws the
ASCII part and the rest shows as "?" (logged once).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["TextRenderer", "font_chain", "default_renderer"]

#: fontconfig patterns asked for, in order: a Latin/Cyrillic/Greek sans face, then other scripts.
FC_PATTERNS = ("sans-serif", "sans-serif:lang=zh-cn", "sans-serif:lang=ja", "sans-serif:lang=ko",
               "sans-serif:lang=ar", "sans-serif:lang=he", "sans-serif:lang=th", "sans-serif:lang=hi")
LINE_HEIGHT = 1.25  # a line's height, in font sizes
_KNOWN = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf")


def _fc_match(pattern: str) -> str | None:
    exe = shutil.which("fc-match")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-f", "%{file}", pattern], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = out.stdout.strip()
    return path if path and Path(path).is_file() and path.lower().endswith((".ttf", ".otf", ".ttc")) else None


def _matplotlib_dejavu() -> str | None:
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    except Exception:  # noqa: BLE001 - matplotlib missing or broken: just no font from there
        return None
    return str(path) if path.is_file() else None


@functools.lru_cache(maxsize=1)
def font_chain() -> tuple[str, ...]:
    """The font files text is drawn with, in fallback order (see the module doc); may be empty."""
    found: list[str] = []
    env = os.environ.get("LOOKALIKE_FONTS", "")
    candidates = [p for p in env.split(":") if p] + [_fc_match(p) for p in FC_PATTERNS] + list(_KNOWN) \
        + [_matplotlib_dejavu()]
    for path in candidates:
        if path and Path(path).is_file() and path not in found:
            found.append(path)
    if not found:
        log.warning("no TrueType font found (install fonts-dejavu-core, or set LOOKALIKE_FONTS): "
                    "labels are drawn with OpenCV's ASCII-only font")
    return tuple(found)


@functools.lru_cache(maxsize=16)
def _cmap(path: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    try:
        with TTFont(path, fontNumber=0, lazy=True) as font:
            return frozenset(font.getBestCmap() or {})
    except Exception as exc:  # noqa: BLE001 - a broken font file is left out, not fatal
        log.warning("cannot read font %s (%s); it is not used", path, exc)
        return frozenset()


@functools.lru_cache(maxsize=64)
def _font(path: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


@dataclass(frozen=True)
class TextRenderer:
    """Draws one line of text at a pixel height; :meth:`draw` is pure given the same fonts."""

    size: int = 14  # font size in pixels
    fonts: Sequence[str] | None = None  # None: font_chain()

    def _chain(self) -> list[str]:
        chain = list(self.fonts) if self.fonts is not None else list(font_chain())
        return [p for p in chain if _cmap(p)]

    def runs(self, text: str) -> list[tuple[str, str | None]]:
        """``text`` split into (substring, font path) runs, each character with the first font that
        holds it (the first font for characters no font holds; None without fonts)."""
        return list(_layout(text, self.size, tuple(self._chain()))[0])

    def measure(self, text: str) -> tuple[int, int]:
        """(width, height) in pixels of ``text`` drawn by :meth:`draw`."""
        _, w, h = _layout(text, self.size, tuple(self._chain()))
        return w, h

    def draw(self, image: np.ndarray, text: str, origin: tuple[int, int], color: tuple[int, int, int],
             background: tuple[int, int, int] | None = None, pad: int = 1) -> tuple[int, int, int, int]:
        """Draw ``text`` into ``image`` (BGR uint8, in place) with its top-left corner at ``origin``,
        clipped to the image; ``background`` fills the text's box first. Returns the box drawn
        (x1, y1, x2, y2), clipped."""
        h, w = image.shape[:2]
        runs, tw, th = _layout(text, self.size, tuple(self._chain()))
        x0, y0 = int(origin[0]), int(origin[1])
        box = (max(0, x0), max(0, y0), min(w, x0 + tw + 2 * pad), min(h, y0 + th + 2 * pad))
        if box[2] <= box[0] or box[3] <= box[1]:
            return box
        if background is not None:
            image[box[1]:box[3], box[0]:box[2]] = background
        if not runs or runs[0][1] is None:  # no TrueType font: Hershey, ASCII only
            cv2.putText(image, text.encode("ascii", "replace").decode(), (x0 + pad, y0 + pad + int(th * 0.75)),
                        cv2.FONT_HERSHEY_SIMPLEX, self.size / 30, color, 1, cv2.LINE_AA)
            return box
        alpha = _mask(self.size, runs, tw, th, pad)
        # the part of the text box inside the image
        ax0, ay0 = box[0] - x0, box[1] - y0
        region = image[box[1]:box[3], box[0]:box[2]]
        a = alpha[ay0:ay0 + region.shape[0], ax0:ax0 + region.shape[1]]
        blended = region.astype(np.float32) * (1 - a) + np.asarray(color, np.float32) * a
        region[:] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return box


@functools.lru_cache(maxsize=1024)
def _layout(text: str, size: int, chain: tuple[str, ...]) -> tuple[tuple[tuple[str, str | None], ...], int, int]:
    """(runs, width, height) of ``text`` at ``size`` with the font ``chain`` (see TextRenderer.runs)."""
    runs: list[tuple[str, str | None]] = []
    for ch in text:
        font = next((p for p in chain if ord(ch) in _cmap(p)), chain[0] if chain else None)
        if runs and runs[-1][1] == font:
            runs[-1] = (runs[-1][0] + ch, font)
        else:
            runs.append((ch, font))
    if not runs or runs[0][1] is None:
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size / 30, 1)
        return tuple(runs), w, h + base
    width = sum(int(round(_font(str(f), size).getlength(s))) for s, f in runs)
    return tuple(runs), width, int(round(size * LINE_HEIGHT))


@functools.lru_cache(maxsize=512)
def _mask(size: int, runs: tuple[tuple[str, str | None], ...], tw: int, th: int, pad: int) -> np.ndarray:
    """The text's coverage (H, W, 1) float32 in [0, 1], rendered once per label (labels repeat
    from frame to frame: a track's text changes only when its match does)."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (tw + 2 * pad, th + 2 * pad), 0)
    pen = ImageDraw.Draw(mask)
    x = pad
    for s, f in runs:
        font = _font(str(f), size)
        pen.text((x, pad + th / 2), s, font=font, fill=255, anchor="lm")
        x += int(round(font.getlength(s)))
    alpha = np.asarray(mask, np.float32)[..., None] / 255.0
    alpha.setflags(write=False)
    return alpha


@functools.lru_cache(maxsize=8)
def default_renderer(size: int = 14) -> TextRenderer:
    return TextRenderer(size=size)
