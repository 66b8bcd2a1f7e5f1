"""overlay: the lookalike / open-set wording, tag layout and placement (up to 16 faces, frame edges,
long names), and pure drawing (boxes, matched photo, similarity bar, states, mirror, bad input)."""

from __future__ import annotations

import itertools
import random

import cv2
import numpy as np
import pytest

from lookalike_live import overlay as overlay_mod
from lookalike_live import text as text_mod
from lookalike_live.errors import ShapeError
from lookalike_live.gallery import GalleryMatch
from lookalike_live.overlay import Annotator, Look, Tag, annotate, label_for, look_of, place_rects
from lookalike_live.types import FaceDetections, Frame, FrameResult, Match, Track, TrackState


def _thumb() -> bytes:
    img = np.zeros((96, 96, 3), np.uint8)
    img[:, :48] = (255, 0, 0)
    img[:, 48:] = (0, 0, 255)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def _result(*tracks: Track, size: tuple[int, int] = (360, 640)) -> FrameResult:
    image = np.full((*size, 3), 30, np.uint8)
    boxes = np.array([t.xyxy for t in tracks], np.float32).reshape(-1, 4)
    dets = FaceDetections(boxes, np.ones(len(tracks), np.float32), np.zeros((len(tracks), 6, 2), np.float32))
    return FrameResult(Frame("test", 0, 0.0, image), dets, tuple(tracks))


def _gm(name: str, score: float, thumb: bytes | None = None, ident: str = "2880") -> GalleryMatch:
    return GalleryMatch(ident, name, score, "img/1.jpg", 7, "celeba", thumb)


def test_wording_lookalike_and_open_set() -> None:
    t = lambda m, s: Track(1, (0, 0, 1, 1), m, state=s)  # noqa: E731
    ada = Match("1", "Ada", 0.7)
    faint = Match("1", "Ada", 0.21)
    assert label_for(t(ada, TrackState.DECIDED)) == "looks like Ada 70%"
    assert label_for(t(faint, TrackState.UNKNOWN)) == "a bit like Ada 21%"  # lookalike: always the nearest
    assert label_for(t(faint, TrackState.UNKNOWN), open_set=True) == "unknown 21%"
    assert label_for(t(ada, TrackState.DECIDED), open_set=True) == "looks like Ada 70%"
    assert label_for(t(Match("2880", "", 0.62), TrackState.DECIDED)) == "looks like 2880 62%"  # id when no name
    assert label_for(t(None, TrackState.SEARCH_UNAVAILABLE)) == "search unavailable"
    assert label_for(t(ada, TrackState.SEARCH_UNAVAILABLE)) == "search unavailable (last: Ada)"
    assert label_for(t(None, TrackState.TENTATIVE)) == "…"
    assert look_of(t(faint, TrackState.UNKNOWN)) is Look.FAINT
    assert look_of(t(faint, TrackState.UNKNOWN), open_set=True) is Look.UNKNOWN
    assert label_for(t(Match("1", "A", 1.7), TrackState.DECIDED)).endswith("100%")  # clipped


def test_every_answered_face_shows_photo_name_and_similarity_in_lookalike_mode() -> None:
    thumb = _thumb()
    strong = Track(3, (100.0, 120.0, 180.0, 200.0), _gm("Ada", 0.8, thumb), state=TrackState.DECIDED)
    faint = Track(4, (400.0, 120.0, 470.0, 200.0), _gm("Björk", 0.22, thumb, "7"), state=TrackState.UNKNOWN)
    res = _result(strong, faint)
    ann = Annotator()
    tags = {g.track_id: g for g in ann.layout(res)}
    for tid, name, pct, look in ((3, "Ada", "80%", Look.STRONG), (4, "Björk", "22%", Look.FAINT)):
        g = tags[tid]
        assert g.look is look and g.level == 0 and g.thumbnail == thumb and g.thumb_rect is not None
        texts = {i.role: i.text for i in g.texts}
        assert texts["name"] == name and texts["percent"] == pct
        assert texts["caption"] == ("looks like" if look is Look.STRONG else "a bit like")
    assert tags[3].color != tags[4].color and tags[3].box_width > tags[4].box_width  # strong vs faint look
    # open set: below the threshold the face is "unknown": no name, no photo
    tags = {g.track_id: g for g in Annotator(open_set=True).layout(res)}
    g = tags[4]
    assert g.look is Look.UNKNOWN and g.thumbnail is None and g.thumb_rect is None
    assert {i.role: i.text for i in g.texts} == {"caption": "unknown", "percent": "22%"}
    # track ids only on request (debug)
    assert not any("#3" in i.text for g in ann.layout(res) for i in g.texts)
    assert any(i.text.startswith("#3 ") for g in Annotator(show_track_ids=True).layout(res) for i in g.texts)


def test_annotate_draws_box_photo_and_bar_without_touching_the_input() -> None:
    res = _result(Track(3, (100.0, 120.0, 180.0, 200.0), _gm("Ada", 0.8, _thumb()), {"2880": 0.8},
                        TrackState.DECIDED))
    before = res.frame.image.copy()
    ann = Annotator()
    tag = ann.layout(res)[0]
    out = ann.annotate(res.frame.image, res)
    assert np.array_equal(res.frame.image, before)  # pure
    assert out.shape == before.shape and out.dtype == np.uint8
    assert np.array_equal(out, ann.annotate(res.frame.image, res))  # deterministic
    assert tuple(out[160, 100]) == ann.strong_color  # box edge in the strong colour
    # the matched photo where the layout put it: left half blue, right half red (BGR)
    tx, ty, s, _ = tag.thumb_rect
    left, right = out[ty + s // 2, tx + s // 4], out[ty + s // 2, tx + 3 * s // 4]
    assert left[0] > 200 and left[2] < 60 and right[2] > 200 and right[0] < 60
    assert tag.rect[0] >= 180  # right of the box, where there is room
    # similarity bar: 80 % filled with the strong colour, the rest grey
    bx, by, bw, bh = tag.bar_rect
    assert tuple(out[by + bh // 2, bx + int(bw * 0.7)]) == ann.strong_color
    assert tuple(out[by + bh // 2, bx + int(bw * 0.9)]) == (70, 70, 70)


def test_states_have_distinct_colours_and_lost_tracks_are_hidden() -> None:
    ann = Annotator(open_set=True)
    tracks = [
        Track(1, (20.0, 60.0, 80.0, 120.0), Match("1", "A", 0.2), state=TrackState.UNKNOWN),
        Track(2, (200.0, 60.0, 260.0, 120.0), None, state=TrackState.SEARCH_UNAVAILABLE),
        Track(3, (400.0, 60.0, 460.0, 120.0), None, state=TrackState.TENTATIVE),
        Track(4, (500.0, 200.0, 560.0, 260.0), None, state=TrackState.LOST),
    ]
    res = _result(*tracks)
    out = annotate(res.frame.image, res, ann)
    assert tuple(out[90, 20]) == ann.unknown_color
    assert tuple(out[90, 200]) == ann.unavailable_color
    assert tuple(out[90, 400]) == ann.pending_color
    assert np.array_equal(out[195:265, 495:565], res.frame.image[195:265, 495:565])  # LOST: not drawn
    assert {g.track_id for g in ann.layout(res)} == {1, 2, 3}


def _check_layout(tags: list[Tag], size: tuple[int, int]) -> None:
    """Tags inside the frame, apart from each other and from every other face."""
    w, h = size
    rects = [(g.track_id, g.rect) for g in tags if g.rect is not None]
    for tid, (x, y, rw, rh) in rects:
        assert x >= 0 and y >= 0 and x + rw <= w and y + rh <= h, (tid, (x, y, rw, rh))
    for (a, ra), (b, rb) in itertools.combinations(rects, 2):
        assert not _intersects(ra, rb), (a, ra, b, rb)
    for tid, r in rects:
        for g in tags:
            if g.track_id != tid:
                x1, y1, x2, y2 = g.box
                assert not _intersects(r, (x1, y1, x2 - x1 + 1, y2 - y1 + 1)), (tid, r, g.track_id, g.box)


def _intersects(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


NAMES = ["Penélope Cruz", "Björk Guðmundsdóttir", "Владимир Высоцкий", "李小龙", "CelebA #2880", "A" * 200]
STATES = [TrackState.DECIDED, TrackState.UNKNOWN, TrackState.TENTATIVE, TrackState.SEARCH_UNAVAILABLE]


def _grid_tracks(n: int, size: tuple[int, int], rng: random.Random, thumb: bytes) -> list[Track]:
    """n faces in random cells of a 4x4 grid (random size within its cell), random states and names."""
    w, h = size
    cw, ch = w // 4, h // 4
    tracks = []
    for k, cell in enumerate(rng.sample(range(16), n)):
        side = rng.uniform(0.3, 0.55) * min(cw, ch)
        x = (cell % 4) * cw + rng.uniform(0, cw - side)
        y = (cell // 4) * ch + rng.uniform(0, ch - side)
        st = rng.choice(STATES)
        m = None if st is TrackState.TENTATIVE else _gm(rng.choice(NAMES), rng.uniform(0.1, 0.9), thumb, str(k))
        tracks.append(Track(k, (x, y, x + side, y + side), m, state=st))
    return tracks


@pytest.mark.parametrize("size", [(640, 360), (1280, 720)])
def test_up_to_16_faces_tags_never_overlap_or_leave_the_frame(size: tuple[int, int]) -> None:
    rng = random.Random(7)
    thumb = _thumb()
    for trial in range(40):
        n = 16 if trial % 2 == 0 else rng.randint(1, 15)
        res = _result(*_grid_tracks(n, size, rng, thumb), size=(size[1], size[0]))
        for ann in (Annotator(), Annotator(open_set=True), Annotator(mirror=True)):
            tags = ann.layout(res)
            _check_layout(tags, size)
            assert len(tags) == n
            for g, t in zip(sorted(tags, key=lambda g: g.track_id), res.tracks, strict=True):
                assert g.rect is not None, t  # every face has its tag...
                if t.best is not None and g.look in (Look.STRONG, Look.FAINT):  # ...with the similarity
                    assert any(i.role == "percent" and "%" in i.text for i in g.texts)
            out = ann.annotate(res.frame.image, res, tags)
            assert out.shape == res.frame.image.shape


def test_few_faces_get_the_full_tag_and_a_crowd_gets_smaller_ones() -> None:
    thumb = _thumb()
    one = _result(Track(1, (300.0, 150.0, 360.0, 210.0), _gm("Ada", 0.6, thumb), state=TrackState.DECIDED))
    assert Annotator().layout(one)[0].level == 0
    crowd = [Track(k, (10 + (k % 8) * 80, 10 + (k // 8) * 180, 60 + (k % 8) * 80, 60 + (k // 8) * 180),
                   _gm("Ada Lovelace", 0.6, thumb), state=TrackState.DECIDED) for k in range(16)]
    tags = Annotator().layout(_result(*crowd))
    _check_layout(tags, (640, 360))
    assert max(g.level for g in tags) > 0  # no room for 16 photos: smaller tags, still no overlap


def test_faces_at_the_frame_edges_and_long_names_stay_inside() -> None:
    thumb = _thumb()
    corners = [(0.0, 0.0, 50.0, 50.0), (590.0, 0.0, 640.0, 50.0), (0.0, 310.0, 50.0, 360.0),
               (590.0, 310.0, 640.0, 360.0), (-30.0, 150.0, 20.0, 200.0), (620.0, 150.0, 700.0, 230.0)]
    tracks = [Track(i, b, _gm("Very Long Name " * 14, 0.9, thumb), state=TrackState.DECIDED)
              for i, b in enumerate(corners)]
    res = _result(*tracks)
    ann = Annotator()
    tags = ann.layout(res)
    _check_layout(tags, (640, 360))
    for g in tags:
        name = next(i.text for i in g.texts if i.role in ("name", "percent"))
        assert len(name) < 60 and (g.level == 2 or name.endswith("…"))  # a 210-character name is cut
        assert g.rect[2] <= (ann.max_name_width + ann.thumbnail_size + 40)
        x1, y1, x2, y2 = g.box
        assert 0 <= x1 <= x2 <= 639 and 0 <= y1 <= y2 <= 359
    assert ann.annotate(res.frame.image, res).shape == (360, 640, 3)


def test_bad_input_never_throws() -> None:
    res = _result(Track(1, (100.0, 100.0, 150.0, 150.0), _gm("A", 0.9, b"\xff\xd8 not a jpeg"),
                        state=TrackState.DECIDED))
    ann = Annotator()
    tag = ann.layout(res)[0]
    out = ann.annotate(res.frame.image, res)  # an undecodable photo: a grey square, the rest drawn
    tx, ty, s, _ = tag.thumb_rect
    assert tuple(out[ty + s // 2, tx + s // 2]) == (90, 90, 90)
    with pytest.raises(ShapeError, match="BGR uint8"):
        annotate(np.zeros((10, 10), np.uint8), res)
    with pytest.raises(ShapeError, match="640x360"):
        annotate(np.zeros((100, 100, 3), np.uint8), res)
    # no tracker: plain boxes from the detections
    dets = FaceDetections(np.array([[10, 10, 60, 60]], np.float32), np.ones(1, np.float32),
                          np.zeros((1, 6, 2), np.float32))
    bare = FrameResult(Frame("t", 0, 0.0, res.frame.image), dets)
    out = annotate(res.frame.image, bare)
    assert tuple(out[35, 10]) == ann.pending_color


def test_missing_fonts_still_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TrueType font at all: the labels fall back to OpenCV's font (ASCII), nothing throws."""
    monkeypatch.setattr(text_mod, "font_chain", lambda: ())
    overlay_mod._pillow_measure.cache_clear()
    text_mod.default_renderer.cache_clear()
    try:
        res = _result(Track(1, (100.0, 100.0, 150.0, 150.0), _gm("Björk", 0.9, _thumb()), state=TrackState.DECIDED))
        out = Annotator().annotate(res.frame.image, res)
        assert (np.abs(out.astype(int) - res.frame.image).sum(axis=2) > 0).sum() > 500
    finally:
        overlay_mod._pillow_measure.cache_clear()
        text_mod.default_renderer.cache_clear()


def test_mirror_flips_the_picture_not_the_labels() -> None:
    res = _result(Track(1, (100.0, 100.0, 160.0, 160.0), _gm("Ada", 0.7, _thumb()), state=TrackState.DECIDED))
    res.frame.image[:, :320] = (0, 90, 0)  # left half green
    plain, mirrored = Annotator(), Annotator(mirror=True)
    tag, mtag = plain.layout(res)[0], mirrored.layout(res)[0]
    assert mtag.box == (640 - 160, 100, 640 - 100, 160)
    out = mirrored.annotate(res.frame.image, res)
    assert tuple(out[300, 600]) == (0, 90, 0) and tuple(out[300, 40]) == (30, 30, 30)  # picture flipped
    # the name reads the same: its pixels equal the unmirrored rendering, moved
    a = plain.annotate(res.frame.image, res)
    n1 = next(i for i in tag.texts if i.role == "name")
    n2 = next(i for i in mtag.texts if i.role == "name")
    w, h = overlay_mod.pillow_measure(n1.text, n1.size)
    crop = lambda img, i: img[i.y:i.y + int(h), i.x:i.x + int(w)].astype(int)  # noqa: E731
    assert np.abs(crop(a, n1) - crop(out, n2)).mean() < 20


def test_place_rects_prefers_right_left_above_below() -> None:
    boxes = [(100, 100, 150, 150)]
    assert place_rects((640, 360), boxes, [(0, [(80, 40)])]) == {0: (0, 156, 100)}  # right
    boxes = [(580, 100, 630, 150)]
    (level, x, y), = place_rects((640, 360), boxes, [(0, [(80, 40)])]).values()
    assert x + 80 <= 580 and y == 100  # no room on the right: left
    boxes = [(0, 100, 630, 150)]
    (level, x, y), = place_rects((640, 360), boxes, [(0, [(80, 40)])]).values()
    assert y + 40 <= 100  # above
