"""The index build's process workers, its annotation fallbacks, shards and resume cost, run as
users run it (the CLI in a subprocess) against real Milvus (Lite, and the server for shards)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_annotations import annotated_subset
from test_indexing import MODEL, _all_ids, _build, _cli, _env

from lookalike_live.errors import ConfigError
from lookalike_live.gallery import Gallery
from lookalike_live.indexing import parse_shard


@pytest.fixture(scope="module")
def annotated(celeba_dir: Path, sample_landmarks, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 sample photos: 56 with good landmarks, then one each malformed, outside the photo, swapped
    eyes (not a face's layout); 5 with no landmark line (detected)."""
    marks, boxes = sample_landmarks
    names = sorted(marks)[:64]
    keep = {n: marks[n] for n in names[:59]}
    lines = {
        names[56]: f"{names[56]} 1 2 3 4",
        names[57]: f"{names[57]} 5000 10 5100 10 5050 60 5020 90 5080 90",
        names[58]: f"{names[58]} " + " ".join(str(int(v)) for v in np.ravel(marks[names[58]][[1, 0, 2, 4, 3]])),
    }
    return annotated_subset(celeba_dir, tmp_path_factory.mktemp("annotated") / "celeba", keep, boxes, 64, lines)


@pytest.mark.slow
def test_landmarks_place_faces_and_every_fallback_is_counted(annotated: Path, model_store: Path,
                                                             tmp_path: Path) -> None:
    env = _env(model_store, tmp_path / "data")
    r = _build(env, annotated, "--workers", "2", "--batch-size", "8", "--insert-batch", "16")
    assert r["workers"] == 2 and r["worker_restarts"] == 0
    assert r["faces"] + len(r["skipped"]) == 64
    assert r["aligned_by"]["landmarks"] == 56 and r["aligned_by"]["landmarks"] + r["aligned_by"]["detector"] == r["faces"]
    assert r["landmark_fallbacks"] == {"landmark line malformed": 1, "landmarks outside the photo": 1,
                                       "landmarks not laid out like a face": 1, "no landmarks": 5}
    assert any("needs 10 landmark numbers" in p for p in r["annotations_skipped"])
    # the same build in one process (--workers 0) gives the same rows
    again = _build(_env(model_store, tmp_path / "data0"), annotated, "--workers", "0")
    assert again["faces"] == r["faces"] and again["aligned_by"] == r["aligned_by"]
    a = _vectors(str(tmp_path / "data" / "gallery.db"))
    b = _vectors(str(tmp_path / "data0" / "gallery.db"))
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-5) for k in a)
    off = _build(_env(model_store, tmp_path / "off"), annotated, "--annotations", "off", "--limit", "8")
    assert off["aligned_by"] == {"detector": off["faces"]} and not off["landmark_fallbacks"]


def _vectors(uri: str, collection: str = "faces") -> dict[int, np.ndarray]:
    with Gallery(uri, collection=collection, local_index=False) as g:
        return {int(r["id"]): np.asarray(r["vector"], np.float32) for b in g.iterate(["id", "vector"], 1000) for r in b}


def test_a_worker_that_dies_loses_no_photo(annotated: Path, model_store: Path, tmp_path: Path) -> None:
    """A worker killed once at its 3rd photo (fault injection, as the OOM killer would): a new worker
    takes over, the photos it held are read again, every photo is indexed."""
    env = {**_env(model_store, tmp_path / "data"), "LOOKALIKE_FAULT": "prepare:crash@3",
           "LOOKALIKE_FAULT_ONCE": str(tmp_path / "fired")}
    r = _build(env, annotated, "--workers", "2", "--batch-size", "8", "--limit", "40")
    assert r["worker_restarts"] == 1 and (tmp_path / "fired").exists()
    assert r["processed"] == 40 and r["faces"] + len(r["skipped"]) == 40
    assert all(reason == "no face found" for reason in r["skipped"].values()), r["skipped"]
    assert len(_all_ids(str(tmp_path / "data" / "gallery.db"), "faces")) == r["faces"] >= 38


def test_a_photo_that_always_crashes_its_worker_is_skipped(annotated: Path, model_store: Path, tmp_path: Path) -> None:
    name = sorted(p.name for p in (annotated / "Img" / "img_celeba").iterdir())[10]
    env = {**_env(model_store, tmp_path / "data"), "LOOKALIKE_FAULT": f"prepare:crash={name}"}
    r = _build(env, annotated, "--workers", "1", "--batch-size", "8")
    assert r["skipped"] == {f"img_celeba/{name}": "the photo crashed the worker that read it, twice "
                                                  "(killed by signal 9); skipped"}
    assert r["faces"] == 63 and r["worker_restarts"] == 2


def test_a_kill_costs_at_most_the_batch_in_flight(annotated: Path, model_store: Path, tmp_path: Path) -> None:
    """SIGKILL while the 3rd batch of 16 rows is about to be written: exactly the 32 rows before it
    survive, and the re-run reads only the photos not saved (nothing saved is done again)."""
    env = _env(model_store, tmp_path / "data")
    args = [sys.executable, "-m", "lookalike_live.cli", "index", "build", "--dataset", str(annotated), "--model",
            MODEL, "--no-progress", "--batch-size", "8", "--insert-batch", "16", "--workers", "2"]
    killed = subprocess.run(args, env={**env, "LOOKALIKE_FAULT": "build:before-upsert@3"}, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    saved = _all_ids(str(tmp_path / "data" / "gallery.db"), "faces")
    assert len(saved) == 32
    resumed = _build(env, annotated, "--batch-size", "8", "--insert-batch", "16")
    assert resumed["already_indexed"] == 32
    assert resumed["processed"] == 64 - 32 - resumed["previously_skipped"]
    assert resumed["faces"] + len(resumed["skipped"]) == resumed["processed"]


def test_shard_flag() -> None:
    assert parse_shard("0/1") == (0, 1) and parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


@pytest.mark.slow
@pytest.mark.milvus_server
def test_two_shards_fill_one_server_like_one_build(annotated: Path, model_store: Path, tmp_path: Path,
                                                   milvus_server_uri: str) -> None:
    """Two shards run at once into one Milvus server, then `index centroids` once: the same faces,
    vectors and identity centroids as one unsharded build."""
    coll, ref_coll = f"shards_{os.getpid()}", f"whole_{os.getpid()}"
    env = _env(model_store, tmp_path / "data")
    base = [sys.executable, "-m", "lookalike_live.cli", "index", "build", "--dataset", str(annotated), "--model", MODEL,
            "--no-progress", "--json", "--milvus-uri", milvus_server_uri, "--collection", coll, "--workers", "1"]
    procs = [subprocess.Popen([*base, "--shard", f"{i}/2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    import json

    parts = [json.loads(o[0]) for o in outs]
    assert {p["shard"] for p in parts} == {"0/2", "1/2"} and all(0 < p["images"] < 64 for p in parts)
    assert sum(p["images"] for p in parts) == 64
    with Gallery(milvus_server_uri, collection=coll, local_index=False) as g:
        assert not g.centroids_current()  # the shards leave the centroids to `index centroids`
    made = _cli(env, "index", "centroids", "--milvus-uri", milvus_server_uri, "--collection", coll, "--json")
    whole = _build(env, annotated, "--milvus-uri", milvus_server_uri, "--collection", ref_coll)
    assert made["faces"] == whole["gallery"]["faces"] == sum(p["faces"] for p in parts)
    a, b = _vectors(milvus_server_uri, coll), _vectors(milvus_server_uri, ref_coll)
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-5) for k in a)
    ca, cb = _centroids(milvus_server_uri, coll), _centroids(milvus_server_uri, ref_coll)
    assert ca.keys() == cb.keys() and all(ca[k][0] == cb[k][0] and np.allclose(ca[k][1], cb[k][1], atol=1e-5)
                                          for k in ca)
    with Gallery(milvus_server_uri, collection=coll, local_index=False) as g:
        assert g.centroids_current()


def _centroids(uri: str, collection: str) -> dict[str, tuple[int, np.ndarray]]:
    with Gallery(uri, collection=collection, local_index=False) as g:
        return {r["identity"]: (int(r["count"]), np.asarray(r["vector"], np.float32))
                for b in g.iterate(["identity", "count", "vector"], 1000, g.identities_collection) for r in b}
