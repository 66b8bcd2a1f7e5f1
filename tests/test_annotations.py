"""CelebA's landmark and box files: read in the official format, faces placed by them without a
detector, and every bad line or bad point falling back to detection, counted.

The landmark files here are written from our own detector's keypoints (``sample_landmarks``), in
CelebA's format: a stand-in for CelebA's annotations, which the test sample does not ship."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike_live.bench.celeba_fixture import write_annotations
from lookalike_live.datasets import open_dataset
from lookalike_live.errors import ConfigError
from lookalike_live.prepare import (
    DetectorConfig,
    PrepareConfig,
    Preparer,
    landmark_box,
    landmark_problem,
    locate_by_landmarks,
)

MODEL = "mobilefacenet"


def annotated_subset(celeba_dir: Path, root: Path, marks: dict, boxes: dict, n: int,
                     landmark_lines: dict[str, str] | None = None) -> Path:
    """A CelebA tree at ``root`` of the first ``n`` sample photos (linked) whose landmark file holds
    ``marks`` (as written by CelebA), with ``landmark_lines`` replacing or adding raw lines."""
    lines = (celeba_dir / "Anno" / "identity_CelebA.txt").read_text().splitlines()
    chosen = sorted(lines, key=lambda line: line.split()[0])[:n]
    img = root / "Img" / "img_celeba"
    img.mkdir(parents=True, exist_ok=True)
    for line in chosen:
        name = line.split()[0]
        (img / name).symlink_to(celeba_dir / "Img" / "img_celeba" / name)
    (root / "Anno").mkdir(parents=True, exist_ok=True)
    (root / "Anno" / "identity_CelebA.txt").write_text("\n".join(chosen) + "\n")
    names = {line.split()[0] for line in chosen}
    write_annotations(root / "Anno", {k: v for k, v in marks.items() if k in names},
                      {k: v for k, v in boxes.items() if k in names})
    if landmark_lines:
        path = root / "Anno" / "list_landmarks_celeba.txt"
        text = [line for line in path.read_text().splitlines() if line.split()[0] not in landmark_lines]
        path.write_text("\n".join(text + list(landmark_lines.values())) + "\n")
    return root


def test_landmark_file_in_the_official_format_is_read(tmp_path: Path, celeba_dir: Path, sample_landmarks) -> None:
    marks, boxes = sample_landmarks
    root = annotated_subset(celeba_dir, tmp_path / "c", marks, boxes, 20)
    text = (root / "Anno" / "list_landmarks_celeba.txt").read_text().splitlines()
    assert text[0] == "20" and text[1].split()[:2] == ["lefteye_x", "lefteye_y"] and len(text[2].split()) == 11
    ds = open_dataset(root, "celeba")
    assert ds.landmarks_file == "Anno/list_landmarks_celeba.txt" and not ds.problems
    first = ds.items[0]
    assert first.landmarks == tuple(float(round(v)) for v in np.ravel(marks[first.path.name]))
    x1, y1, x2, y2 = boxes[first.path.name]
    assert first.bbox == pytest.approx((round(x1), round(y1), round(x1) + round(x2 - x1), round(y1) + round(y2 - y1)))
    assert open_dataset(root, "celeba", annotations="off").items[0].landmarks is None


def test_bad_landmark_lines_are_listed_and_never_stop_the_reader(tmp_path: Path, celeba_dir: Path,
                                                                  sample_landmarks) -> None:
    marks, boxes = sample_landmarks
    names = sorted(marks)[:6]
    bad = {
        names[0]: f"{names[0]} 1 2 3",  # too few numbers
        names[1]: f"{names[1]} a b c d e f g h i j",  # not numbers
        names[2]: f"{names[2]} nan 1 2 3 4 5 6 7 8 9",  # not finite
        names[3]: f"{names[3]} 1 2 3 4 5 6 7 8 9 10 11",  # too many
    }
    root = annotated_subset(celeba_dir, tmp_path / "c", marks, boxes, 6, bad)
    path = root / "Anno" / "list_landmarks_celeba.txt"
    path.write_bytes(path.read_bytes() + b"\xff\xfe broken bytes\n" + f"{names[4]} 1 1 1 1 1 1 1 1 1 1\n".encode())
    ds = open_dataset(root, "celeba")
    assert ds.landmarks_malformed == {f"img_celeba/{n}" for n in names[:4]}
    by_name = {i.path.name: i for i in ds.items}
    assert all(by_name[n].landmarks is None for n in names[:4])
    assert by_name[names[4]].landmarks is not None  # listed twice: the first line kept
    assert sum("needs 10 landmark numbers" in p for p in ds.problems) == 4
    assert any("not UTF-8" in p for p in ds.problems) and any("listed again" in p for p in ds.problems)


def test_annotations_on_needs_the_file_and_the_aligned_layout_has_its_own(tmp_path: Path) -> None:
    img = tmp_path / "Img" / "img_align_celeba"
    img.mkdir(parents=True)
    (img / "000001.jpg").write_bytes(b"x")
    (tmp_path / "Anno").mkdir()
    (tmp_path / "Anno" / "identity_CelebA.txt").write_text("000001.jpg 1\n")
    with pytest.raises(ConfigError, match=r"--annotations on: .*list_landmarks_align_celeba\.txt.*--annotations auto"):
        open_dataset(tmp_path, "celeba", annotations="on")
    assert open_dataset(tmp_path, "celeba").items[0].landmarks is None  # auto: detected
    # the in-the-wild landmark file does not describe the aligned photos
    (tmp_path / "Anno" / "list_landmarks_celeba.txt").write_text("1\nh\n000001.jpg 165 184 244 176 196 249 194 271 266 260\n")
    assert open_dataset(tmp_path, "celeba").items[0].landmarks is None
    (tmp_path / "Anno" / "list_landmarks_align_celeba.txt").write_text("1\nh\n000001.jpg 69 109 106 113 77 142 73 152 108 154\n")
    ds = open_dataset(tmp_path, "celeba", annotations="on")
    assert ds.items[0].landmarks == (69, 109, 106, 113, 77, 142, 73, 152, 108, 154)
    assert ds.landmarks_file == "Anno/list_landmarks_align_celeba.txt"
    with pytest.raises(ConfigError, match="--format is folders"):
        open_dataset(tmp_path, "folders", annotations="on")


def test_landmark_problems() -> None:
    good = (165, 184, 244, 176, 196, 249, 194, 271, 266, 260)  # CelebA's first line
    assert landmark_problem(good, 409, 687) is None
    assert landmark_problem(good, 200, 687) == "landmarks outside the photo"
    assert landmark_problem((-1,) + good[1:], 409, 687) == "landmarks outside the photo"
    swapped = good[2:4] + good[0:2] + good[4:6] + good[8:10] + good[6:8]
    assert landmark_problem(swapped, 409, 687) == "landmarks not laid out like a face"
    assert landmark_problem((10, 10) * 5, 409, 687) == "landmarks not laid out like a face"


def test_the_landmark_box_is_the_detectors_box(celeba_dir: Path, model_store: Path, sample_landmarks) -> None:
    """landmark_box from the five points lands on BlazeFace's box of the same photo (the fit the
    constants come from, checked on the photos at hand)."""
    marks, boxes = sample_landmarks
    names = sorted(marks)
    derived = landmark_box(np.stack([marks[n] for n in names]))
    real = np.stack([boxes[n] for n in names])
    x1, y1 = np.maximum(derived[:, 0], real[:, 0]), np.maximum(derived[:, 1], real[:, 1])
    x2, y2 = np.minimum(derived[:, 2], real[:, 2]), np.minimum(derived[:, 3], real[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    iou = inter / (area(derived) + area(real) - inter)
    assert np.median(iou) > 0.88 and np.percentile(iou, 10) > 0.7, (np.median(iou), np.percentile(iou, 10))


@pytest.mark.parametrize("model", ["mobilefacenet", "facenet-casia-webface"])
def test_landmark_crops_match_detector_crops(model: str, tmp_path: Path, celeba_dir: Path, model_store: Path,
                                             sample_landmarks, request: pytest.FixtureRequest) -> None:
    """The same photo placed by its landmarks (no detector; decoded at a reduced scale where the face
    is big) and by the detector: embeddings of the same person agree (ArcFace 5-point and the
    FaceNet box crop made from the landmark box)."""
    from lookalike_live.embed import create_embedder
    from lookalike_live.prepare import prepare_face

    store = model_store if model == MODEL else request.getfixturevalue("casia_store")
    marks, boxes = sample_landmarks
    ds = open_dataset(annotated_subset(celeba_dir, tmp_path / "c", marks, boxes, 40), "celeba")
    emb = create_embedder(model, store=store)
    cfg = PrepareConfig(emb.spec, DetectorConfig(store=store))
    sims, reduced = [], 0
    with DetectorConfig(store=store, quick=False).create() as det:
        for item in ds.items:
            placed = locate_by_landmarks(item, emb.spec)
            assert not isinstance(placed, str), placed
            reduced += placed[1] > 1.0
            a = Preparer(cfg).prepare(item)
            b = prepare_face(item, det, emb.spec)
            assert a is not None and b is not None and a.how == "landmarks" and b.how == "detector"
            va, vb = emb.embed_array(np.stack([a.crop, b.crop]))
            sims.append(float(va @ vb))
    emb.close()
    assert reduced > 0  # some photos were decoded smaller than stored
    assert np.median(sims) > 0.9 and min(sims) > 0.6, (np.median(sims), min(sims))


def test_an_annotated_dataset_never_loads_a_detector(tmp_path: Path, celeba_dir: Path, model_store: Path,
                                                      sample_landmarks, monkeypatch: pytest.MonkeyPatch) -> None:
    from lookalike_live.embed import create_embedder
    from lookalike_live.gallery import Gallery
    from lookalike_live.indexing import BuildOptions, build_index

    marks, boxes = sample_landmarks
    root = annotated_subset(celeba_dir, tmp_path / "c", marks, boxes, 24)
    names = sorted(marks)[:24]
    lines = (root / "Anno" / "list_landmarks_celeba.txt").read_text().splitlines()
    ds = open_dataset(root, "celeba")

    def no_detector(self: DetectorConfig) -> None:
        raise AssertionError("a detector was made for a photo with landmarks")

    monkeypatch.setattr(DetectorConfig, "create", no_detector)
    emb = create_embedder(MODEL, store=model_store)
    with Gallery(str(tmp_path / "g.db")) as g:
        summary = build_index(ds, DetectorConfig(store=model_store), emb, g,
                              BuildOptions(workers=0, progress=False, batch_size=8, insert_batch=8))
    assert summary.faces == 24 and summary.aligned_by == {"landmarks": 24} and not summary.landmark_fallbacks
    assert len(lines) == 26 and names[0] in lines[2]
