"""overlay.annotate: pure drawing of tracks (boxes, labels, similarity bar, thumbnails, states)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lookalike_live.errors import ShapeError
from lookalike_live.gallery import GalleryMatch
from lookalike_live.overlay import Annotator, annotate, label_for
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


def test_labels_for_every_state() -> None:
    m = Match("2880", "", 0.62)
    assert label_for(Track(1, (0, 0, 1, 1), m, state=TrackState.DECIDED)) == "2880 0.62"  # CelebA id when no name
    assert label_for(Track(1, (0, 0, 1, 1), Match("1", "Ada", 0.7), state=TrackState.DECIDED)) == "Ada 0.70"
    assert label_for(Track(1, (0, 0, 1, 1), Match("1", "Ada", 0.21), state=TrackState.UNKNOWN)) == \
        "no close lookalike (best 0.21)"
    assert label_for(Track(1, (0, 0, 1, 1), None, state=TrackState.SEARCH_UNAVAILABLE)) == "search unavailable"
    assert label_for(Track(1, (0, 0, 1, 1), m, state=TrackState.SEARCH_UNAVAILABLE)) == "2880 (search unavailable)"
    assert label_for(Track(1, (0, 0, 1, 1), None)) == "..."


def test_annotate_draws_box_bar_and_thumbnail_without_touching_the_input() -> None:
    match = GalleryMatch("2880", "Ada", 0.8, "img/1.jpg", 7, "celeba", _thumb())
    res = _result(Track(3, (100.0, 120.0, 180.0, 200.0), match, {"2880": 0.8}, TrackState.DECIDED))
    before = res.frame.image.copy()
    ann = Annotator(thumbnail_size=64)
    out = ann.annotate(res.frame.image, res)
    assert np.array_equal(res.frame.image, before)  # pure
    assert out.shape == before.shape and out.dtype == np.uint8
    assert np.array_equal(out, ann.annotate(res.frame.image, res))  # deterministic
    # box edge in the decided colour
    assert tuple(out[160, 100]) == ann.decided_color
    # thumbnail right of the box: left half blue, right half red (BGR)
    left, right = out[140, 182 + 16], out[140, 182 + 48]
    assert left[0] > 200 and left[2] < 60 and right[2] > 200 and right[0] < 60
    # similarity bar above the box: 80 % filled with the decided colour
    bar_y = 120 - ann.bar_height - 2 + 2
    assert tuple(out[bar_y, 100 + 30]) == ann.decided_color
    assert tuple(out[bar_y, 100 + 78]) == (40, 40, 40)


def test_states_have_distinct_colours_and_lost_tracks_are_hidden() -> None:
    ann = Annotator()
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


def test_faces_near_the_border_and_bad_input() -> None:
    match = GalleryMatch("1", "Very Long Name Of A Celebrity", 1.0, "x.jpg", 1, "celeba", _thumb())
    res = _result(Track(1, (590.0, 0.0, 640.0, 40.0), match, state=TrackState.DECIDED))
    out = annotate(res.frame.image, res)
    assert out.shape == (360, 640, 3)
    with pytest.raises(ShapeError, match="BGR uint8"):
        annotate(np.zeros((10, 10), np.uint8), res)
    broken = GalleryMatch("1", "A", 0.9, "x.jpg", 1, "celeba", b"\xff\xd8 not a jpeg")
    res = _result(Track(1, (100.0, 100.0, 150.0, 150.0), broken, state=TrackState.DECIDED))
    assert annotate(res.frame.image, res).shape == (360, 640, 3)  # an undecodable thumbnail is skipped
