"""`lookalike-live match` (photo mode) on real photos and a real gallery: the nearest celebrity of every
face with the open-set decision beside it, and the lookalike card (`--card out.png`)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_fixtures import UNICODE_NAMES, LiveGallery, live_main, unicode_gallery, unicode_names  # noqa: F401

from lookalike_live.card import PHOTO, WIDTH


@pytest.fixture
def env(unicode_gallery: LiveGallery, monkeypatch: pytest.MonkeyPatch) -> LiveGallery:  # noqa: F811
    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(unicode_gallery.store))
    return unicode_gallery


def _argv(g: LiveGallery, *extra: str) -> list[str]:
    return ["match", *extra, "--model", "mobilefacenet", "--backend", "onnx", "--milvus-uri", g.uri,
            "--collection", g.collection, "--detector", "full", "--json"]


def _photos(celeba_dir: Path) -> list[tuple[Path, str]]:
    lines = (celeba_dir / "Anno" / "identity_CelebA.txt").read_text().split("\n")
    rows = [ln.split() for ln in lines if ln.strip()]
    return [(celeba_dir / "Img" / "img_celeba" / r[0], r[1]) for r in rows]


def test_match_json_has_nearest_and_decision_and_the_card_shows_the_lookalike(
        env: LiveGallery, celeba_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo, identity = _photos(celeba_dir)[0]  # a gallery photo: its own identity is the nearest
    card = tmp_path / "cards" / "card.png"
    assert live_main(_argv(env, str(photo), "--card", str(card), "--threshold", "0.5")) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["card"] == str(card) and out["threshold"] == 0.5
    (face,) = out["faces"]
    names = unicode_names(celeba_dir)
    assert face["nearest"]["identity"] == identity and face["nearest"]["name"] == names[identity]
    assert face["decision"] == "match" and face["match"] == names[identity] and face["score"] > 0.9
    assert len(face["top"]) == 3 and len({m["identity"] for m in face["top"]}) == 3

    img = cv2.imread(str(card))
    assert img is not None and img.shape[1] == WIDTH
    # the matched celebrity's photo (the gallery's thumbnail of the nearest face) is on the card
    from lookalike_live.datasets import open_dataset
    from lookalike_live.gallery import Gallery, face_id

    fid = face_id(open_dataset(celeba_dir, "celeba").name, f"img_celeba/{photo.name}", 0)
    with Gallery(env.uri, collection=env.collection) as g:
        thumb = g.thumbnails({fid})[fid]
    assert thumb
    ref = cv2.resize(cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_COLOR), (PHOTO, PHOTO),
                     interpolation=cv2.INTER_CUBIC)
    score = float(cv2.matchTemplate(img, ref[4:-4, 4:-4], cv2.TM_CCOEFF_NORMED).max())
    assert score > 0.9, score
    # and the name, in its script
    from test_live_cli import _pillow_reference

    name_ref = _pillow_reference(names[identity], 26)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert float(cv2.matchTemplate(gray, name_ref, cv2.TM_CCOEFF_NORMED).max()) > 0.8


def test_match_below_the_threshold_still_names_the_nearest(env: LiveGallery, celeba_dir: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    photo, _ = _photos(celeba_dir)[-1]  # an identity outside the gallery's first photos
    assert live_main(_argv(env, str(photo), "--threshold", "0.99")) == 0
    (face,) = json.loads(capsys.readouterr().out)["faces"]
    assert face["decision"] == "unknown" and face["match"] is None
    assert face["nearest"]["name"] in UNICODE_NAMES and face["nearest"]["score"] == face["score"]


def test_card_errors_are_clear_and_write_nothing(env: LiveGallery, celeba_dir: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    (a, _), (b, _) = _photos(celeba_dir)[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    cases = [
        ([str(a), str(b), "--card", str(tmp_path / "c1.png")], "one photo"),
        ([str(a), "--card", str(tmp_path / "c2.jpg")], "ending in .png"),
        ([str(bad), "--card", str(tmp_path / "c3.png")], "no card written"),
        ([str(a), "--card", str(tmp_path)], "is a folder"),
        ([str(blank), "--card", str(tmp_path / "c4.png")], "no face found in blank.png"),
    ]
    for extra, message in cases:
        caplog.clear()
        assert live_main(_argv(env, *extra)) == 2, extra
        assert message in caplog.text, (extra, caplog.text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.png", "broken.jpg"]
