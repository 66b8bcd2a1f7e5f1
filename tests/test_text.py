"""Labels in any script: TrueType text with per-character font fallback (lookalike_live.text), in the
headless overlay. Reference renderings are made with Pillow directly, independent of the renderer's
run splitting; OpenCV's Hershey font (what the overlay used before) turns every non-ASCII letter into '?'."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lookalike_live.overlay import Annotator
from lookalike_live.text import TextRenderer, _cmap, font_chain
from lookalike_live.types import FaceDetections, Frame, FrameResult, Match, Track, TrackState

NAMES = {"latin": "Penélope Cruz", "nordic": "Björk Guðmundsdóttir", "cyrillic": "Владимир Высоцкий",
         "cjk": "李小龙"}


def _fonts_for(text: str) -> list[str]:
    return [p for p in font_chain() if all(ord(c) in _cmap(p) for c in text if not c.isspace())]


def _need(text: str) -> str:
    fonts = _fonts_for(text)
    if not fonts:
        pytest.skip(f"no installed font holds {text!r} (Debian: fonts-dejavu-core, fonts-wqy-microhei)")
    return fonts[0]


def _reference(text: str, font_path: str, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, size)
    w = int(font.getlength(text)) + 4
    h = int(size * 1.25) + 2
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).text((1, 1 + int(size * 1.25) / 2), text, font=font, fill=255, anchor="lm")
    return np.asarray(img)


def _ink(image: np.ndarray) -> np.ndarray:
    """(H, W) 0..255 text mask of a BGR label drawn white on black."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


@pytest.mark.parametrize("script", list(NAMES))
def test_every_script_is_drawn_with_a_font_that_holds_it(script: str) -> None:
    text = NAMES[script]
    font = _need(text)
    r = TextRenderer(size=20)
    assert {f for s, f in r.runs(text) if not s.isspace()} <= set(_fonts_for(text)) | {font}
    canvas = np.zeros((40, 400, 3), np.uint8)
    x1, y1, x2, y2 = r.draw(canvas, text, (0, 0), (255, 255, 255))
    got = _ink(canvas)[y1:y2, x1:x2].astype(np.float32)
    ref = _reference(text, font, 20).astype(np.float32)
    h, w = min(got.shape[0], ref.shape[0]), min(got.shape[1], ref.shape[1])
    corr = np.corrcoef(got[:h, :w].ravel(), ref[:h, :w].ravel())[0, 1]
    assert corr > 0.95, f"{script}: label vs reference rendering, correlation {corr:.3f}"
    # and it is not what OpenCV draws: '?' for every letter outside ASCII
    hershey = np.zeros_like(canvas)
    cv2.putText(hershey, text.encode("ascii", "replace").decode(), (1, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                (255, 255, 255), 1, cv2.LINE_AA)
    assert np.abs(_ink(hershey).astype(np.int16) - _ink(canvas)).mean() > 5


def test_cjk_is_not_drawn_as_missing_glyph_boxes() -> None:
    font = _need(NAMES["cjk"])
    latin_only = [p for p in font_chain() if ord("李") not in _cmap(p)]
    if not latin_only:
        pytest.skip("every installed font holds CJK: no missing-glyph rendering to compare with")
    r = TextRenderer(size=24)
    assert [f for _, f in r.runs("Bruce 李小龙")][-1] == font
    glyphs = np.zeros((40, 120, 3), np.uint8)
    r.draw(glyphs, "李小龙", (0, 0), (255, 255, 255))
    tofu = np.zeros((40, 120, 3), np.uint8)
    TextRenderer(size=24, fonts=latin_only[:1]).draw(tofu, "李小龙", (0, 0), (255, 255, 255))
    # three different characters vs three identical .notdef boxes
    assert np.abs(_ink(glyphs).astype(np.int16) - _ink(tofu)).mean() > 10
    cells = [_ink(glyphs)[:, i * 24:(i + 1) * 24].astype(np.float32) for i in range(3)]
    assert np.abs(cells[0] - cells[1]).mean() > 5 and np.abs(cells[1] - cells[2]).mean() > 5


@pytest.mark.parametrize("script", list(NAMES))
def test_overlay_labels_show_non_ascii_names(script: str) -> None:
    """The overlay's name line, where the layout put it, matches a reference rendering of the name."""
    name = NAMES[script]
    font = _need(name)
    image = np.full((200, 400, 3), 0, np.uint8)
    track = Track(1, (60.0, 80.0, 120.0, 150.0), Match("7", name, 0.81), state=TrackState.DECIDED)
    dets = FaceDetections(np.array([track.xyxy], np.float32), np.ones(1, np.float32), np.zeros((1, 6, 2), np.float32))
    res = FrameResult(Frame("t", 0, 0.0, image), dets, (track,))
    ann = Annotator(panel_alpha=1.0, panel_color=(0, 0, 0))
    tag = ann.layout(res)[0]
    item = next(i for i in tag.texts if i.role == "name")
    assert item.text == name
    out = ann.annotate(image, res, [tag])
    tw, th = TextRenderer(size=item.size).measure(name)
    label = _ink(out[item.y:item.y + th, item.x:item.x + tw]).astype(np.float32)
    ref = _reference(name, font, item.size)[1:, 1:].astype(np.float32)
    h, w = min(label.shape[0], ref.shape[0]), min(label.shape[1], ref.shape[1])
    corr = np.corrcoef(label[:h, :w].ravel(), ref[:h, :w].ravel())[0, 1]
    assert corr > 0.9, f"{script}: overlay name vs reference, correlation {corr:.3f}"


def test_long_names_and_frame_edges_stay_inside_the_image() -> None:
    r = TextRenderer(size=14)
    canvas = np.zeros((30, 100, 3), np.uint8)
    box = r.draw(canvas, "x" * 200, (80, 20), (255, 255, 255), background=(0, 0, 0))
    assert box[0] == 80 and box[2] == 100 and box[3] == 30
    assert r.draw(canvas, "abc", (200, 200), (255, 255, 255)) == (200, 200, 100, 30)  # fully outside: nothing
    assert TextRenderer(fonts=()).runs("Björk") == [("Björk", None)]  # no fonts: the ASCII fallback
    TextRenderer(fonts=(), size=14).draw(canvas, "Björk", (0, 0), (255, 255, 255))
