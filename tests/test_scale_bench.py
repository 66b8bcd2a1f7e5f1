"""The scale benchmark's pieces: the synthetic CelebA tree (real photos re-encoded, CelebA's spread
of photos per identity, landmarks moved with the photo) and one size's figures, measured for real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_annotations import annotated_subset

from lookalike_live.bench.celeba_fixture import PER_IDENTITY_MAX, synthetic_celeba
from lookalike_live.datasets import open_dataset
from lookalike_live.workers import default_workers


class _Embedder:
    def __init__(self, backend: str, threads: int | None) -> None:
        self.backend, self.threads = backend, threads


def test_default_workers_are_the_cores_the_embedder_leaves() -> None:
    assert default_workers(_Embedder("onnx-cpu", 2), cpus=2) == 2  # at least 2 (see its doc)
    assert default_workers(_Embedder("onnx-cpu", 1), cpus=1) == 1
    assert default_workers(_Embedder("onnx-cpu", 4), cpus=16) == 12
    assert default_workers(_Embedder("tensorrt", None), cpus=16) == 15
    assert default_workers(_Embedder("onnx-cuda", None), cpus=8) == 7


def test_synthetic_tree_moves_landmarks_with_the_photo(tmp_path: Path, celeba_dir: Path, model_store: Path,
                                                       sample_landmarks) -> None:
    from lookalike_live.bench.celeba_fixture import detect_landmarks

    marks, boxes = sample_landmarks
    src = annotated_subset(celeba_dir, tmp_path / "src", marks, boxes, 30)
    tree = synthetic_celeba(src, tmp_path / "syn", 90, seed=1, workers=1)
    ds = open_dataset(tree, "celeba")
    assert len(ds) == 90 and not ds.problems and all(i.landmarks is not None for i in ds.items)
    counts = np.bincount([int(i.identity) for i in ds.items])[1:]
    assert counts.max() <= PER_IDENTITY_MAX and len(counts) >= 2
    # our detector on the jittered photos finds the landmarks the file says (moved by the shift)
    found, _ = detect_landmarks(tree, store=model_store, limit=12)
    by_name = {i.path.name: np.asarray(i.landmarks, np.float32).reshape(5, 2) for i in ds.items}
    # eyes and nose, as a fraction of the eye distance (the re-encoding moves the detector's points a little)
    err = [np.abs(found[n][:3] - by_name[n][:3]).max() / np.linalg.norm(by_name[n][1] - by_name[n][0]) for n in found]
    assert len(err) >= 10 and np.median(err) < 0.1, err
    assert synthetic_celeba(src, tmp_path / "syn", 90) == tmp_path / "syn"  # made once, then reused


@pytest.mark.slow
def test_one_scale_point_is_measured(tmp_path: Path, celeba_dir: Path, model_store: Path, sample_landmarks) -> None:
    from lookalike_live.bench import scale

    marks, boxes = sample_landmarks
    src = annotated_subset(celeba_dir, tmp_path / "src", marks, boxes, 40)
    tree = synthetic_celeba(src, tmp_path / "syn", 600, workers=1)
    r = scale.run_one(tree, 600, "mobilefacenet", model_store, tmp_path / "scratch", 128)
    assert r["faces"] == 600 and r["aligned_by"] == {"landmarks": 600} and r["images_per_second"] > 0
    assert r["peak_rss_mb"] > r["peak_rss_minus_vectors_mb"] > 0 and r["gallery_disk_mb"] > 0
    res = r["resume"]
    # killed before the 2nd upsert of 256 rows: 256 saved, the batch in flight (256) read again
    assert res["rows_saved_before_kill"] == 256 and res["photos_read_again"] == 256
    assert res["faces_after_resume"] == 600 and res["same_faces_as_uninterrupted"]
    assert r["search_p50_ms"] > 0
