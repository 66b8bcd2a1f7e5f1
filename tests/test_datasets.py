"""Dataset readers: CelebA (with/without header, boxes, names), folders, VGGFace2."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike_live.datasets import open_dataset
from lookalike_live.errors import ConfigError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_real_celeba_fixture(celeba_dir: Path) -> None:
    ds = open_dataset(celeba_dir, "celeba")
    assert len(ds) == 1000 and ds.identities == 100
    assert all(i.path.is_file() for i in ds.items)
    assert ds.items[0].rel_path.startswith("img_celeba/") and ds.items[0].name == f"CelebA #{ds.items[0].identity}"


@pytest.mark.parametrize("header", ["", "3\n", "image_id identity\n"])
def test_celeba_header_variants_boxes_and_names(tmp_path: Path, header: str) -> None:
    for f in ("000001.jpg", "000002.jpg", "000003.jpg"):
        _touch(tmp_path / "Img" / "img_celeba" / f)
    (tmp_path / "Anno").mkdir()
    (tmp_path / "Anno" / "identity_CelebA.txt").write_text(
        header + "000001.jpg 10\n000002.jpg 10\n000003.jpg 11\ngarbage line here\n"
    )
    (tmp_path / "Anno" / "list_bbox_celeba.txt").write_text(
        "3\nimage_id x_1 y_1 width height\n000001.jpg 95 71 226 313\n"
    )
    (tmp_path / "Anno" / "identity_names.csv").write_text("identity,name\n10,Ada Lovelace\n")
    ds = open_dataset(tmp_path, "celeba")
    assert [i.identity for i in ds.items] == ["10", "10", "11"]
    assert ds.items[0].bbox == (95.0, 71.0, 321.0, 384.0) and ds.items[1].bbox is None
    assert ds.items[0].name == "Ada Lovelace" and ds.items[2].name == "CelebA #11"
    assert len(ds.problems) == 1 and "garbage" in ds.problems[0]


def test_celeba_aligned_variant_and_missing_layout(tmp_path: Path) -> None:
    _touch(tmp_path / "Img" / "img_align_celeba" / "000001.jpg")
    (tmp_path / "Anno").mkdir()
    (tmp_path / "Anno" / "identity_CelebA.txt").write_text("000001.jpg 5\n")
    assert open_dataset(tmp_path, "celeba").items[0].rel_path == "img_align_celeba/000001.jpg"
    with pytest.raises(ConfigError, match="not a CelebA folder"):
        open_dataset(tmp_path / "Img", "celeba")
    with pytest.raises(ConfigError, match="does not exist"):
        open_dataset(tmp_path / "nope", "celeba")


def test_folders_and_vggface2(tmp_path: Path) -> None:
    _touch(tmp_path / "lfw" / "Ada_Lovelace" / "Ada_Lovelace_0001.jpg")
    _touch(tmp_path / "lfw" / "Alan_Turing" / "a.png")
    _touch(tmp_path / "lfw" / "Alan_Turing" / "notes.txt")
    ds = open_dataset(tmp_path / "lfw", "folders")
    assert [(i.identity, i.name) for i in ds.items] == [("Ada_Lovelace", "Ada Lovelace"), ("Alan_Turing", "Alan Turing")]

    v = tmp_path / "vgg"
    _touch(v / "train" / "n000002" / "0001_01.jpg")
    _touch(v / "test" / "n000001" / "0001_01.jpg")
    (v / "identity_meta.csv").write_text(
        'Class_ID, Name, Sample_Num, Flag, Gender\nn000001, "14th_Dalai_Lama", 424, 0, m\nn000002, A_Fine_Frenzy, 315, 1, f\n'
    )
    ds = open_dataset(v, "vggface2")
    assert {(i.identity, i.name, i.rel_path) for i in ds.items} == {
        ("n000002", "A Fine Frenzy", "train/n000002/0001_01.jpg"),
        ("n000001", "14th Dalai Lama", "test/n000001/0001_01.jpg"),
    }
    with pytest.raises(ConfigError, match="unknown dataset format"):
        open_dataset(v, "lfw")


def test_celeba_identity_file_corpus(tmp_path: Path) -> None:
    """Every kind of bad identity line is a problem with its line number, never the end of the
    build: a photo listed twice (same or another identity), a line that is not UTF-8, a BOM and
    CRLF endings, an identity longer than the gallery keeps, paths that leave the dataset."""
    for f in ("000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"):
        _touch(tmp_path / "Img" / "img_celeba" / f)
    (tmp_path / "Anno").mkdir()
    lines = [
        b"\xef\xbb\xbf000001.jpg 10",  # a BOM before the first line
        b"000002.jpg 10",
        b"000001.jpg 10",  # the same photo again
        b"000002.jpg 12",  # again, as someone else
        b"000003.jpg caf\xe9",  # Latin-1, not UTF-8
        b"000004.jpg " + b"9" * 300,  # longer than the gallery's 256-byte identity
        b"../../../../etc/passwd.jpg 13",
        b"/etc/shadow.jpg 13",
        b"C:\\Windows\\x.jpg 13",
        b"000003.jpg 11",
    ]
    (tmp_path / "Anno" / "identity_CelebA.txt").write_bytes(b"\r\n".join(lines) + b"\r\n")
    (tmp_path / "Anno" / "identity_names.csv").write_bytes(b"\xef\xbb\xbfidentity,name\r\n10,Ada \xff Lovelace\r\n")
    ds = open_dataset(tmp_path, "celeba")
    assert [(i.rel_path, i.identity) for i in ds.items] == [
        ("img_celeba/000001.jpg", "10"), ("img_celeba/000002.jpg", "10"), ("img_celeba/000003.jpg", "11")]
    assert ds.items[0].name == "Ada \ufffd Lovelace"  # an undecodable byte in a name is replaced, not fatal
    problems = "\n".join(ds.problems)
    assert len(ds.problems) == 7, problems
    assert "identity_CelebA.txt:3: 000001.jpg is listed again (first at line 1); the first kept" in problems
    assert "identity_CelebA.txt:4: 000002.jpg is listed again (first at line 2 as identity 10, not 12)" in problems
    assert "identity_CelebA.txt:5: not UTF-8 text (byte 0xe9 at column 15); skipped" in problems
    assert "identity_CelebA.txt:6: the identity is 300 bytes long, the gallery keeps at most 256; skipped" in problems
    for n in (7, 8, 9):
        assert f"identity_CelebA.txt:{n}: the path" in problems and "leaves the dataset folder" in problems
    assert all(i.path.resolve().is_relative_to(tmp_path.resolve()) for i in ds.items)


def test_folders_survive_symlink_loops(tmp_path: Path) -> None:
    root = tmp_path / "people"
    _touch(root / "Ada" / "a.jpg")
    (root / "Ada" / "loop").symlink_to(root / "Ada", target_is_directory=True)  # Ada/loop -> Ada
    long_name = "N" * 250
    _touch(root / long_name / "b.jpg")
    ds = open_dataset(root, "folders")
    assert sorted(i.rel_path for i in ds.items) == ["Ada/a.jpg", f"{long_name}/b.jpg"]
    assert any("symlink loop" in p for p in ds.problems), ds.problems
