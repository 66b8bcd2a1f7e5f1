"""card.make_card: the lookalike card's content and its bad input (no pure-Python fakes of the drawing:
the card is checked in its pixels)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lookalike_live.card import MAX_ROWS, PHOTO, WIDTH, CardFace, faces_from_tracks, make_card
from lookalike_live.errors import ShapeError
from lookalike_live.gallery import GalleryMatch
from lookalike_live.types import Track, TrackState


def _photo(color: tuple[int, int, int]) -> bytes:
    img = np.zeros((96, 96, 3), np.uint8)
    img[:] = color
    img[30:60, 30:60] = (255, 255, 255)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def _m(ident: str, name: str, score: float, thumb: bytes | None) -> GalleryMatch:
    return GalleryMatch(ident, name, score, "img/x.jpg", int(ident), "celeba", thumb)


def _found(card: np.ndarray, thumb: bytes, size: int) -> float:
    ref = cv2.resize(cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_COLOR), (size, size),
                     interpolation=cv2.INTER_CUBIC)[4:-4, 4:-4]
    return float(cv2.matchTemplate(card, ref, cv2.TM_CCOEFF_NORMED).max())


def test_card_shows_each_face_beside_its_celebrity_and_the_top_3() -> None:
    image = np.random.default_rng(0).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    red, green, blue, grey = _photo((0, 0, 200)), _photo((0, 200, 0)), _photo((200, 0, 0)), _photo((90, 90, 90))
    faces = [CardFace((400.0, 100.0, 480.0, 180.0), (_m("1", "Björk", 0.61, red), _m("2", "B", 0.4, green),
                                                      _m("3", "C", 0.3, blue)), True),
             CardFace((100.0, 100.0, 140.0, 140.0), (_m("4", "李小龙", 0.2, grey),), False)]
    card = make_card(image, faces, title="photo.jpg", threshold=0.5)
    assert card.shape[1] == WIDTH and card.dtype == np.uint8
    for thumb in (red, grey):  # each face's nearest, at the row size
        assert _found(card, thumb, PHOTO) > 0.9
    for thumb in (red, green, blue):  # the top 3 of the largest face
        assert _found(card, thumb, 120) > 0.9
    # the face crops from the image are on it too (the larger face, row 2 since rows go left to right)
    crop = cv2.resize(image[84:196, 384:496], (PHOTO, PHOTO), interpolation=cv2.INTER_AREA)
    assert float(cv2.matchTemplate(card, crop[10:-10, 10:-10], cv2.TM_CCOEFF_NORMED).max()) > 0.5


def test_card_bad_input_never_throws() -> None:
    image = np.full((360, 640, 3), 80, np.uint8)
    long_name = "Very Long Celebrity Name " * 8  # 200 characters
    faces = [CardFace((float(10 + 35 * k), 10.0, float(40 + 35 * k), 40.0),
                      (_m(str(k), long_name, 0.5, b"\xff\xd8 broken" if k % 2 else None),), bool(k % 2))
             for k in range(18)]
    card = make_card(image, faces)
    assert card.shape[1] == WIDTH
    assert card.shape[0] < 200 + MAX_ROWS * (PHOTO + 20) + 300  # at most 16 rows
    assert make_card(image, []).shape[1] == WIDTH  # "No face found"
    edge = [CardFace((600.0, 330.0, 700.0, 420.0), (_m("1", "A", 0.9, _photo((1, 2, 3))),), True)]
    assert make_card(image, edge).shape[1] == WIDTH  # a face past the frame edge
    with pytest.raises(ShapeError):
        make_card(np.zeros((10, 10), np.uint8), faces)


def test_faces_from_tracks_put_the_vote_first_and_skip_unanswered() -> None:
    a, b = _m("1", "A", 0.5, None), _m("2", "B", 0.6, None)
    tracks = [Track(1, (0, 0, 10, 10), a, state=TrackState.DECIDED, top_k=(b, a)),
              Track(2, (0, 0, 10, 10), None), Track(3, (0, 0, 10, 10), a, state=TrackState.LOST)]
    (face,) = faces_from_tracks(tracks)
    assert face.matches[0] is a and face.matches[1] is b and face.strong and face.track_id == 1
