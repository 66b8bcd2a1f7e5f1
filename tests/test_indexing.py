"""The offline index build, run as users run it (the CLI in a subprocess) against real Milvus:
idempotent re-runs, resume after SIGKILL, bad photos skipped and listed, build -> match."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lookalike_live.datasets import open_dataset
from lookalike_live.gallery import Gallery, face_id

MODEL = "mobilefacenet"


def _env(model_store: Path, data: Path) -> dict[str, str]:
    return {**os.environ, "LOOKALIKE_MODELS_DIR": str(model_store), "LOOKALIKE_DATA_DIR": str(data)}


def _cli(env: dict[str, str], *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "lookalike_live.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def _build(env: dict[str, str], dataset: Path, *extra: str) -> dict:
    return _cli(env, "index", "build", "--dataset", str(dataset), "--model", MODEL, "--no-progress", "--json", *extra)


def _all_ids(uri: str, collection: str) -> list[int]:
    with Gallery(uri, collection=collection, local_index=False) as g:
        return g.face_ids()


@pytest.mark.parametrize("target", ["lite", pytest.param("server", marks=[pytest.mark.milvus_server, pytest.mark.slow])])
def test_building_twice_leaves_one_row_per_face(target: str, request: pytest.FixtureRequest, tmp_path: Path,
                                                model_store: Path, celeba_dir: Path) -> None:
    env = _env(model_store, tmp_path / "data")
    gallery_args: list[str] = []
    uri, collection = str(tmp_path / "data" / "gallery.db"), "faces"
    limit = ["--limit", "1000"] if target == "lite" else ["--limit", "300"]  # server: the same logic, less time
    if target == "server":
        uri, collection = request.getfixturevalue("milvus_server_uri"), f"idx_{int(time.time() * 1000) % 10**9}"
        gallery_args = ["--milvus-uri", uri, "--collection", collection]
    first = _build(env, celeba_dir, *limit, *gallery_args)
    n = int(limit[1])
    assert first["images"] == n and first["processed"] == n and first["already_indexed"] == 0
    assert first["faces"] + len(first["skipped"]) == n and first["faces"] >= 0.95 * n
    assert first["gallery"]["faces"] == first["faces"]
    assert first["images_per_second"] > 0
    second = _build(env, celeba_dir, *limit, *gallery_args)
    assert second["faces"] == 0 and second["already_indexed"] == first["faces"]
    assert second["previously_skipped"] == len(first["skipped"]) and second["processed"] == 0
    ids = _all_ids(uri, collection)
    assert len(ids) == len(set(ids)) == first["faces"]
    ds = open_dataset(celeba_dir, "celeba")
    expected = {face_id("celeba", it.rel_path, 0) for it in ds.items[:n] if it.rel_path not in first["skipped"]}
    assert set(ids) == expected
    stats = _cli(env, "index", "stats", "--json", *gallery_args)
    assert stats["faces"] == first["faces"] and stats["identities"] == first["identities"]
    assert stats["model"] == MODEL and stats["dim"] == 128


def test_a_killed_build_resumes_without_loss_or_duplicates(tmp_path: Path, model_store: Path,
                                                           celeba_dir: Path) -> None:
    env = _env(model_store, tmp_path / "data")
    args = [sys.executable, "-m", "lookalike_live.cli", "index", "build", "--dataset", str(celeba_dir),
            "--model", MODEL, "--limit", "600", "--insert-batch", "32", "--batch-size", "16", "--no-progress"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    saved = 0
    deadline = time.monotonic() + 300
    assert proc.stderr is not None
    for line in proc.stderr:
        if "saved " in line and "this run" in line:
            saved = int(line.split("(")[-1].split()[0])
            if saved >= 96:
                break
        assert time.monotonic() < deadline, "the build never reported saved faces"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and 96 <= saved < 600, saved

    # everything reported as saved before the kill survived it
    ids_after_kill = _all_ids(str(tmp_path / "data" / "gallery.db"), "faces")
    assert len(ids_after_kill) >= saved

    resumed = _build(env, celeba_dir, "--limit", "600")
    assert resumed["already_indexed"] == len(ids_after_kill)
    assert resumed["already_indexed"] + resumed["faces"] + len(resumed["skipped"]) == 600
    ids = _all_ids(str(tmp_path / "data" / "gallery.db"), "faces")
    assert len(ids) == len(set(ids)) == resumed["already_indexed"] + resumed["faces"]
    assert set(ids_after_kill) <= set(ids)


def test_bad_photos_are_skipped_and_listed(tmp_path: Path, model_store: Path, celeba_dir: Path) -> None:
    # a folder-per-identity gallery with real photos and every kind of bad file
    src = sorted((celeba_dir / "Img" / "img_celeba").glob("*.jpg"))[:6]
    root = tmp_path / "people"
    for i, f in enumerate(src):
        (root / f"person_{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / f"person_{i % 2}" / f.name)
    (root / "person_0" / "truncated.jpg").write_bytes(src[0].read_bytes()[:200])
    (root / "person_0" / "empty.jpg").write_bytes(b"")
    (root / "person_1" / "text.jpg").write_text("not an image")
    cv2.imwrite(str(root / "person_1" / "blank.png"), np.full((200, 200, 3), 128, np.uint8))
    env = _env(model_store, tmp_path / "data")

    res = _build(env, root, "--format", "folders")
    assert res["images"] == 10 and res["processed"] == 10 and res["faces"] == 6
    skipped = res["skipped"]
    assert set(skipped) == {"person_0/truncated.jpg", "person_0/empty.jpg", "person_1/text.jpg", "person_1/blank.png"}
    assert skipped["person_1/blank.png"] == "no face found"
    for bad in ("person_0/truncated.jpg", "person_0/empty.jpg", "person_1/text.jpg"):
        assert "not a readable image" in skipped[bad] or "empty" in skipped[bad], skipped[bad]
    assert res["gallery"]["faces"] == 6 and res["gallery"]["identities"] == 2

    # a re-run remembers them; --retry-skipped tries them again
    again = _build(env, root, "--format", "folders")
    assert again["previously_skipped"] == 4 and again["processed"] == 0 and again["already_indexed"] == 6
    retry = _build(env, root, "--format", "folders", "--retry-skipped")
    assert retry["processed"] == 4 and len(retry["skipped"]) == 4 and retry["faces"] == 0
    # a run that only skips still remembers what it skipped
    (root / "person_0" / "empty.jpg").unlink()
    (root / "person_1" / "text.jpg").write_text("still not an image")
    state = next((tmp_path / "data" / "builds").glob("*.skipped.jsonl"))
    state.unlink()
    only_bad = _build(env, root, "--format", "folders")
    assert only_bad["faces"] == 0 and len(only_bad["skipped"]) == 3
    assert _build(env, root, "--format", "folders")["previously_skipped"] == 3


def test_index_build_then_match_finds_the_same_person(tmp_path: Path, model_store: Path, celeba_dir: Path) -> None:
    env = _env(model_store, tmp_path / "data")
    built = _build(env, celeba_dir, "--limit", "200")
    ds = open_dataset(celeba_dir, "celeba")
    # a photo of an indexed identity that is NOT itself in the gallery
    indexed = {it.identity for it in ds.items[:200]}
    probe = next(it for it in ds.items[200:] if it.identity in indexed)
    res = _cli(env, "match", str(probe.path), "--model", MODEL, "--top-k", "5", "--json")
    assert res["faces"], "no face found in the probe photo"
    top_ids = [m["identity"] for m in res["faces"][0]["top"]]
    assert len(top_ids) == 5 and probe.identity in top_ids, (probe.identity, top_ids)
    # a gallery photo finds itself (~1; its gallery crop may come from the quick short-range pass,
    # the query's from the full-range model, whose keypoints differ a little)
    own = ds.items[0]
    res = _cli(env, "match", str(own.path), "--model", MODEL, "--json")
    best = res["faces"][0]["top"][0]
    assert best["image"] == own.rel_path and best["score"] > 0.9
    assert built["gallery"]["faces"] == built["faces"]


def test_model_dimension_mismatch_is_refused(tmp_path: Path, model_store: Path, celeba_dir: Path) -> None:
    env = _env(model_store, tmp_path / "data")
    with Gallery(str(tmp_path / "data" / "gallery.db")) as g:
        g.ensure(dim=512, model="facenet-vggface2")
    proc = subprocess.run([sys.executable, "-m", "lookalike_live.cli", "index", "build", "--dataset",
                           str(celeba_dir), "--model", MODEL, "--limit", "5", "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "512" in proc.stderr and "128" in proc.stderr
    # the way out it names is a command that exists (it named a Python call, Gallery.drop())
    assert "`lookalike-live index drop --collection faces --yes`" in proc.stderr and "Gallery.drop" not in proc.stderr


def test_a_changed_crop_is_refused_by_a_build_and_warned_by_a_match(tmp_path: Path, model_store: Path,
                                                                    celeba_dir: Path) -> None:
    """The gallery records the crop its faces were embedded with: after the model's spec changes its
    crop, adding photos is refused (one clear line naming the commands), matching still answers."""
    from importlib import resources

    env = _env(model_store, tmp_path / "data")
    built = _build(env, celeba_dir, "--limit", "5")
    assert built["gallery"]["crop"] == "arcface5 template_scale=1"
    # the same model with another crop: a spec override in the model store (what a user edits)
    store = tmp_path / "store"
    (store / "specs").mkdir(parents=True)
    for f in model_store.iterdir():
        if f.is_file():
            (store / f.name).symlink_to(f)
    text = resources.files("lookalike_live.model_specs").joinpath("mobilefacenet.toml").read_text()
    (store / "specs" / "mobilefacenet.toml").write_text(text.replace("[alignment]\n", "[alignment]\ntemplate_scale = 0.9\n"))
    changed = {**env, "LOOKALIKE_MODELS_DIR": str(store)}
    proc = subprocess.run([sys.executable, "-m", "lookalike_live.cli", "index", "build", "--dataset", str(celeba_dir),
                           "--model", MODEL, "--limit", "8", "--no-progress"], capture_output=True, text=True,
                          env=changed, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "cropped as 'arcface5 template_scale=1'" in proc.stderr and "'arcface5 template_scale=0.9'" in proc.stderr
    assert "`lookalike-live index drop --collection faces --yes`" in proc.stderr
    assert len(_all_ids(str(tmp_path / "data" / "gallery.db"), "faces")) == built["faces"]  # nothing added
    photo = open_dataset(celeba_dir, "celeba").items[0].path
    proc = subprocess.run([sys.executable, "-m", "lookalike_live.cli", "match", str(photo), "--model", MODEL, "--json"],
                          capture_output=True, text=True, env=changed, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["faces"] and "less accurate until it is rebuilt" in proc.stderr


def _prepared_vs_whole(path: Path, model_store: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list, object, float]:
    """prepare_face on ``path`` next to detecting and aligning the whole decoded photo: (the reads it
    made as (long_side, scale), its PreparedFace, the cosine of the two crops' MobileFaceNet embeddings)."""
    from lookalike_live import prepare as indexing
    from lookalike_live.align import align_faces
    from lookalike_live.datasets import GalleryItem
    from lookalike_live.detect import FaceDetector
    from lookalike_live.embed import create_embedder
    from lookalike_live.imageio import read_image

    reads: list[tuple[int, float]] = []
    real = indexing.read_image_scaled

    def counting(p: Path, long_side: int) -> tuple[np.ndarray, float]:
        image, scale = real(p, long_side)
        reads.append((long_side, scale))
        return image, scale

    monkeypatch.setattr(indexing, "read_image_scaled", counting)
    emb = create_embedder(MODEL, backend="onnx", store=model_store)
    with FaceDetector("full", store=model_store) as det:
        prepared = indexing.prepare_face(GalleryItem(path, path.name, "x", "x"), det, emb.spec)
        whole = read_image(path)
        dets = det.detect(whole)
        ref = align_faces(whole, dets[[indexing.choose_face(dets, None)]], emb.spec)
    assert prepared is not None and len(dets)
    np.testing.assert_allclose(prepared.bbox, dets.xyxy[indexing.choose_face(dets, None)], atol=4.0)
    cos = float(emb.embed_array(prepared.crop[None])[0] @ emb.embed_array(ref.pixels)[0])
    emb.close()
    return reads, prepared, cos


def test_big_photos_are_read_smaller_with_the_same_face(tmp_path: Path, model_store: Path, celeba_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A big JPEG is decoded at 1/2 scale (1448x2000 -> 724x1000): the box comes back in the photo's own
    pixels and the crop embeds like the crop of the whole photo."""
    src = cv2.imread(str(celeba_dir / "Img" / "img_celeba" / "010801.jpg"))
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), cv2.resize(src, (1448, 2000), interpolation=cv2.INTER_CUBIC), [cv2.IMWRITE_JPEG_QUALITY, 95])
    reads, prepared, cos = _prepared_vs_whole(path, model_store, monkeypatch)
    assert reads == [(640, 2.0)]
    assert prepared.bbox[2] - prepared.bbox[0] > 600  # original pixels, not the half-size decode's
    assert cos > 0.98


def test_a_small_face_in_a_big_photo_is_read_again_larger(tmp_path: Path, model_store: Path, celeba_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A face too small at the reduced scale for the embedder's crop is cropped from a larger read."""
    src = cv2.imread(str(celeba_dir / "Img" / "img_celeba" / "010801.jpg"))
    small = cv2.resize(src, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    canvas = cv2.copyMakeBorder(small, 0, 1400 - small.shape[0], 0, 1400 - small.shape[1], cv2.BORDER_CONSTANT)
    path = tmp_path / "canvas.jpg"
    cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 95])
    reads, prepared, cos = _prepared_vs_whole(path, model_store, monkeypatch)
    assert len(reads) == 2 and reads[0] == (640, 2.0) and reads[1][1] == 1.0
    assert cos > 0.98


def test_a_broken_detector_model_stops_the_build_at_once(tmp_path: Path, model_store: Path, celeba_dir: Path) -> None:
    """A broken model fails every photo: the build stops with the fix named, it does not skip 1,000 photos."""
    store = tmp_path / "models"
    shutil.copytree(model_store, store)
    for tflite in store.rglob("*.tflite"):
        tflite.write_bytes(b"not a tflite model" * 100)
    env = _env(store, tmp_path / "data")
    proc = subprocess.run([sys.executable, "-m", "lookalike_live.cli", "index", "build", "--dataset", str(celeba_dir),
                           "--model", MODEL, "--no-progress", "--json"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "models fetch" in proc.stderr and "skipped" not in proc.stderr
    assert not list((tmp_path / "data").glob("builds/*.skipped.jsonl"))


@pytest.mark.parametrize("workers", ["0", pytest.param("1", marks=pytest.mark.slow)])
def test_an_internal_error_stops_the_build_and_keeps_what_is_done(workers: str, tmp_path: Path, model_store: Path,
                                                                  celeba_dir: Path) -> None:
    """A bug or a broken install (here: an AttributeError at the 8th photo, in this process or in a
    prepare worker) is not a bad photo: the build stops with it, keeps the faces embedded before it
    and remembers no photo as skipped."""
    clean = _env(model_store, tmp_path / "data")
    env = {**clean, "LOOKALIKE_FAULT": "prepare:bug@8"}
    uri = str(tmp_path / "g.db")
    proc = subprocess.run([sys.executable, "-m", "lookalike_live.cli", "index", "build", "--dataset", str(celeba_dir),
                           "--model", MODEL, "--milvus-uri", uri, "--limit", "40", "--workers", workers, "--batch-size", "4",
                           "--insert-batch", "4", "--no-progress", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0 and "AttributeError" in proc.stderr and "injected" in proc.stderr, proc.stderr[-2000:]
    assert "skipped img_celeba" not in proc.stderr
    assert not any(p.stat().st_size for p in (tmp_path / "data").glob("builds/*.skipped.jsonl"))
    saved = _all_ids(uri, "faces")
    assert len(saved) == 7  # the faces before the fault are kept
    # the same build without the fault finishes the rest, no duplicates
    out = _build(clean, celeba_dir, "--milvus-uri", uri, "--limit", "40")
    assert out["already_indexed"] == len(saved) and out["previously_skipped"] == 0
    assert len(_all_ids(uri, "faces")) == len(set(_all_ids(uri, "faces"))) == out["already_indexed"] + out["faces"]


def _celeba_subset(celeba_dir: Path, root: Path, n: int) -> list[str]:
    """A CelebA-layout copy of the sample's first ``n`` photos; returns its identity lines."""
    lines = (celeba_dir / "Anno" / "identity_CelebA.txt").read_text().split("\n")
    lines = [ln for ln in lines if ln.strip()][:n]
    (root / "Img" / "img_celeba").mkdir(parents=True)
    (root / "Anno").mkdir()
    for ln in lines:
        name = ln.split()[0]
        shutil.copy(celeba_dir / "Img" / "img_celeba" / name, root / "Img" / "img_celeba" / name)
    return lines


def test_a_bad_identity_file_never_blocks_the_build(tmp_path: Path, model_store: Path, celeba_dir: Path) -> None:
    """A photo listed twice and a 300-byte identity used to abort every run at the same batch
    ("ids must be unique within one call"); now they are listed and the build completes."""
    root = tmp_path / "celeba"
    lines = _celeba_subset(celeba_dir, root, 40)
    bad = [*lines[:20], lines[3], lines[5].split()[0] + " 77777", lines[20].split()[0] + " " + "9" * 300, *lines[21:]]
    (root / "Anno" / "identity_CelebA.txt").write_text("\n".join(bad) + "\n")
    env = _env(model_store, tmp_path / "data")
    first = _build(env, root, "--batch-size", "8", "--insert-batch", "8")
    assert first["faces"] + len(first["skipped"]) == 39  # 40 photos, one of them refused
    assert len(first["annotations_skipped"]) == 3, first["annotations_skipped"]
    assert first["gallery"]["identities"] > 0
    again = _build(env, root)
    assert again["faces"] == 0 and again["already_indexed"] == first["faces"]


def _contents(uri: str) -> tuple[dict, dict, bool, set[int]]:
    """(faces {id: (identity, vector)}, identities {id: (identity, count, face id, vector)}, centroids
    current?, the ids in the persisted local index) of a Lite gallery."""
    from lookalike_live.gallery import LocalIndex

    with Gallery(uri, local_index=False) as g:
        faces = {int(r["id"]): (r["identity"], np.asarray(r["vector"], np.float32))
                 for b in g.iterate(["id", "vector", "identity"], 1000) for r in b}
        idents = {int(r["id"]): (r["identity"], int(r["count"]), int(r["face_id"]), np.asarray(r["vector"], np.float32))
                  for b in g.iterate(["id", "vector", "identity", "count", "face_id"], 1000, g.identities_collection)
                  for r in b}
        current = g.centroids_current()
        generation = g.info()["generation"]
    local = LocalIndex.load(Path(uri + ".lookalike-index") / "faces")
    assert local.generation == generation  # the persisted copy is of the gallery as it is
    return faces, idents, current, set(local.arrays()[0].tolist())


@pytest.fixture(scope="module")
def small_celeba(celeba_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small") / "celeba"
    lines = _celeba_subset(celeba_dir, root, 48)
    (root / "Anno" / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def uninterrupted(small_celeba: Path, model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    data = tmp_path_factory.mktemp("reference")
    _build(_env(model_store, data), small_celeba, "--batch-size", "8", "--insert-batch", "8")
    return _contents(str(data / "gallery.db"))


@pytest.mark.slow
@pytest.mark.parametrize("point", [
    "build:before-upsert", "build:after-upsert", "build:after-last-upsert", "centroids:written", "local-index:save"])
def test_a_build_killed_at_any_point_ends_like_an_uninterrupted_one(point: str, small_celeba: Path, model_store: Path,
                                                                    uninterrupted: tuple, tmp_path: Path) -> None:
    """SIGKILL at each phase of a build (fault injection, lookalike_live.faults), then a plain
    re-run: the same faces, vectors, identity centroids (marked current) and local index as a build
    that was never interrupted."""
    from lookalike_live import faults

    assert point in faults.POINTS
    env = _env(model_store, tmp_path / "data")
    args = [sys.executable, "-m", "lookalike_live.cli", "index", "build", "--dataset", str(small_celeba), "--model",
            MODEL, "--no-progress", "--batch-size", "8", "--insert-batch", "8"]
    killed = subprocess.run(args, env={**env, "LOOKALIKE_FAULT": point}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    _build(env, small_celeba, "--batch-size", "8", "--insert-batch", "8")
    faces, idents, current, local_ids = _contents(str(tmp_path / "data" / "gallery.db"))
    ref_faces, ref_idents, ref_current, ref_local = uninterrupted
    assert faces.keys() == ref_faces.keys() and local_ids == ref_local == set(faces)
    for fid, (ident, vec) in faces.items():
        assert ident == ref_faces[fid][0] and np.allclose(vec, ref_faces[fid][1], atol=1e-4)
    assert idents.keys() == ref_idents.keys() and current and ref_current
    for iid, (ident, count, rep, vec) in idents.items():
        assert (ident, count, rep) == ref_idents[iid][:3] and np.allclose(vec, ref_idents[iid][3], atol=1e-4)


def test_index_drop_asks_for_yes_then_deletes(small_celeba: Path, model_store: Path, tmp_path: Path) -> None:
    env = _env(model_store, tmp_path / "data")
    built = _build(env, small_celeba, "--limit", "8")
    cmd = [sys.executable, "-m", "lookalike_live.cli", "index", "drop"]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2 and f"deletes {built['gallery']['faces']} faces" in refused.stderr
    assert "--yes" in refused.stderr
    dropped = subprocess.run([*cmd, "--yes", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert dropped.returncode == 0, dropped.stderr[-2000:]
    assert json.loads(dropped.stdout)["faces"] == built["gallery"]["faces"]
    assert _cli(env, "index", "stats", "--json")["exists"] is False
    assert not (tmp_path / "data" / "gallery.db.lookalike-index" / "faces").exists()
