"""End-to-end recognition quality on real photos: `embed` over the CelebA fixture with the
MobileFaceNet fixture, scored with exact cosine search (issue 3's done-when)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lookalike_live.datasets import open_dataset
from lookalike_live.evaluation import identification_accuracy, pair_scores, roc_auc, split_gallery_queries


def test_roc_auc_matches_definition() -> None:
    rng = np.random.default_rng(0)
    s = rng.normal(size=200)
    y = rng.random(200) < 0.3
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]])
    assert roc_auc(s, y) == pytest.approx(brute)
    assert roc_auc(np.array([0.9, 0.1]), np.array([True, False])) == 1.0


@pytest.fixture(scope="module")
def celeba_embeddings(tmp_path_factory: pytest.TempPathFactory, model_store: Path, celeba_dir: Path) -> dict:
    out = tmp_path_factory.mktemp("embed") / "celeba.npz"
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(model_store)}
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike_live.cli", "embed", str(celeba_dir / "Img" / "img_celeba"),
         "--model", "mobilefacenet", "--out", str(out), "--json", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    data = dict(np.load(out))
    return {"summary": summary, **data}


@pytest.mark.slow
def test_embed_cli_on_celeba_identifies_lookalikes(celeba_embeddings: dict, celeba_dir: Path) -> None:
    summary = celeba_embeddings["summary"]
    assert summary["images"] == 1000 and not summary["skipped"]
    assert summary["images_with_faces"] >= 990  # >= 99% of the photos yield a face
    emb = celeba_embeddings["embeddings"]
    assert emb.dtype == np.float32 and emb.shape[1] == 128
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)

    # largest face per photo
    paths, boxes = celeba_embeddings["paths"], celeba_embeddings["boxes"]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    best: dict[str, int] = {}
    for i, p in enumerate(paths):
        if p not in best or area[i] > area[best[p]]:
            best[p] = i
    ident = {Path(it.path).name: it.identity for it in open_dataset(celeba_dir, "celeba").items}
    rows = np.array(sorted(best.values(), key=lambda i: paths[i]))
    ids = [ident[Path(paths[i]).name] for i in rows]
    vecs = emb[rows]
    g, q = split_gallery_queries([str(paths[i]) for i in rows], ids, gallery_per_id=7)
    acc = identification_accuracy(vecs[g], np.asarray(ids)[g], vecs[q], np.asarray(ids)[q], ks=(1, 5))
    scores, same = pair_scores(vecs, ids)
    auc = roc_auc(scores, same)
    print(f"top1={acc[1]:.3f} top5={acc[5]:.3f} auc={auc:.4f} queries={int(q.sum())}")
    assert acc[1] >= 0.90
    assert auc >= 0.95


def test_threshold_at_far_definition() -> None:
    from lookalike_live.evaluation import threshold_at_far

    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.normal(0.7, 0.1, 500), rng.normal(0.1, 0.1, 5000)])
    same = np.concatenate([np.ones(500, bool), np.zeros(5000, bool)])
    thr, tar = threshold_at_far(scores, same, 0.01)
    assert np.mean(scores[~same] >= thr) <= 0.01 < np.mean(scores[~same] >= thr - 1e-3)
    assert tar == pytest.approx(np.mean(scores[same] >= thr))


@pytest.mark.slow
def test_eval_cli_on_celeba(model_store: Path, celeba_dir: Path) -> None:
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(model_store)}
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike_live.cli", "eval", "identify", "--dataset", str(celeba_dir),
         "--model", "mobilefacenet", "--limit", "400", "--gallery-per-id", "3", "--json", "--no-progress",
         "--save-threshold"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["images"] == 400 and res["faces"] + len(res["skipped"]) == 400
    assert res["gallery"] + res["queries"] == res["faces"]
    assert res["top1"] >= 0.85 and res["top5"] >= res["top1"] and res["roc_auc"] >= 0.93
    assert 0.0 < res["threshold"] < 1.0 and 0.5 < res["tar_at_far"] <= 1.0
    # the calibrated threshold is what the live commands now use for this model
    from lookalike_live.config import load_settings

    assert Path(res["saved_to"]).is_file()
    assert load_settings({"model": "mobilefacenet"}, path=Path(res["saved_to"]).with_name("none.toml")).threshold \
        == pytest.approx(res["threshold"])


def _split_celeba(celeba_dir: Path, root: Path, distractor_ids: int = 20) -> tuple[Path, Path]:
    """The CelebA sample split by identity: a CelebA-layout gallery set (every identity but the last
    ``distractor_ids``) and a folder-per-person set of the rest (people absent from the gallery)."""
    ds = open_dataset(celeba_dir, "celeba")
    ids = sorted({it.identity for it in ds.items}, key=int)
    held = set(ids[-distractor_ids:])
    gallery = root / "gallery"
    (gallery / "Img").mkdir(parents=True)
    (gallery / "Anno").mkdir()
    (gallery / "Img" / "img_celeba").symlink_to(celeba_dir / "Img" / "img_celeba")
    lines = [f"{Path(it.path).name} {it.identity}" for it in ds.items if it.identity not in held]
    (gallery / "Anno" / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    strangers = root / "strangers"
    for it in ds.items:
        if it.identity in held:
            (strangers / f"person{it.identity}").mkdir(parents=True, exist_ok=True)
            (strangers / f"person{it.identity}" / Path(it.path).name).symlink_to(it.path)
    return gallery, strangers


@pytest.mark.slow
def test_eval_identify_open_set_and_improvements(tmp_path: Path, model_store: Path, celeba_dir: Path) -> None:
    """Issue 7's done-when: MobileFaceNet on the CelebA sample, 7 gallery photos per identity: top-1 >= 0.92
    and a calibrated threshold; TPIR at FPIR 1 % / 10 % against 20 people absent from the gallery; every
    improvement switched on beats the plain nearest-photo baseline; the plots are real PNGs."""
    gallery, strangers = _split_celeba(celeba_dir, tmp_path)
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(model_store)}
    cmd = [sys.executable, "-m", "lookalike_live.cli", "eval", "identify", "--dataset", str(gallery),
           "--model", "mobilefacenet", "--gallery-per-id", "7", "--json", "--no-progress"]
    proc = subprocess.run(cmd + ["--distractors", str(strangers), "--study", "--plots", str(tmp_path / "plots"),
                                 "--match-by", "face"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    for key in ("top1", "top5", "tpir_at_fpir_0.01", "tpir_at_fpir_0.1", "threshold", "queries", "gallery",
                "undetected"):
        assert key in res, key
    assert res["identities"] == 80 and res["distractor_images"] == 200
    assert res["nonmated"] + len(res["distractor_skipped"]) == 200
    assert res["gallery"] == 560 and res["queries"] + res["gallery"] == res["faces"]
    assert res["matching"] == {"flip": False, "match_by": "face", "quality_weighted": False}
    assert res["top1"] >= 0.92 and 0.0 < res["threshold"] < 1.0
    assert 0.5 < res["tpir_at_fpir_0.01"] <= res["tpir_at_fpir_0.1"] <= res["top1"]
    assert res["threshold_at_fpir_0.01"] >= res["threshold_at_fpir_0.1"]
    variants = {v["name"]: v for v in res["variants"]}
    assert set(variants) == {"baseline", "flip", "identity", "identity+quality", "identity, gallery-centred", "all"}
    base, best = variants["baseline"], variants["all"]
    assert base["top1"] == res["top1"] and base["tpir_at_fpir_0.01"] == res["tpir_at_fpir_0.01"]
    assert best["top1"] > base["top1"] and best["tpir_at_fpir_0.01"] > base["tpir_at_fpir_0.01"]
    assert [Path(p).name for p in res["plots"]] == ["roc.png", "scores.png", "pca.png"]
    for p in res["plots"]:
        img = cv2.imread(p)
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 300 and img.std() > 10

    # --holdout-ids: the same people held out of the original dataset give the same open-set figures
    proc = subprocess.run(cmd[:6] + [str(celeba_dir)] + cmd[7:] + ["--holdout-ids", "20"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    held = json.loads(proc.stdout)
    assert held["matching"]["match_by"] == "centred"  # the default, as in the live app
    assert held["top1"] == variants["identity, gallery-centred"]["top1"]
    assert held["tpir_at_fpir_0.01"] == variants["identity, gallery-centred"]["tpir_at_fpir_0.01"]

    # distractors that are gallery photos are refused before any work
    proc = subprocess.run(cmd + ["--distractors", str(celeba_dir / "Img")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2 and "absent from the gallery" in proc.stderr and "Traceback" not in proc.stderr


def test_tpir_at_fpir_definition() -> None:
    from lookalike_live.evaluation import tpir_at_fpir

    rng = np.random.default_rng(3)
    non = rng.normal(0.2, 0.1, 300)
    mated = rng.normal(0.6, 0.15, 200)
    correct = rng.random(200) < 0.9
    for fpir in (0.01, 0.1):
        tpir, thr = tpir_at_fpir(correct, mated, non, fpir)
        assert np.mean(non >= thr) <= fpir < np.mean(non >= thr - 1e-3)
        assert tpir == pytest.approx(np.mean(correct & (mated >= thr)))
    with pytest.raises(ValueError, match="non-mated"):
        tpir_at_fpir(correct, mated, np.zeros(0), 0.01)


def test_identity_scores_face_centroid_and_quality_weights() -> None:
    from lookalike_live.evaluation import identity_scores, score_identification

    g = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    names, face = identity_scores(g, ["a", "b", "b"], np.array([[0.8, 0.6]], np.float32), match_by="face")
    assert list(names) == ["a", "b"] and face[0] == pytest.approx([0.8, 0.96])
    _, cent = identity_scores(g, ["a", "b", "b"], np.array([[0.8, 0.6]], np.float32), match_by="identity")
    c = (g[1] + g[2]) / np.linalg.norm(g[1] + g[2])
    assert cent[0] == pytest.approx([0.8, float(np.array([0.8, 0.6]) @ c)], abs=1e-6)
    # quality weights pull the centroid toward the better photo
    _, w = identity_scores(g, ["a", "b", "b"], g[2:3], match_by="identity", weights=np.array([1, 0.01, 1]))
    _, u = identity_scores(g, ["a", "b", "b"], g[2:3], match_by="identity")
    assert w[0, 1] > u[0, 1]
    res = score_identification(g, ["a", "b", "b"], np.array([[0.9, 0.1], [0.1, 0.9]], np.float32), ["a", "b"],
                               np.array([[-1, 0]], np.float32), match_by="identity")
    assert res["top1"] == 1.0 and res["nonmated"] == 1 and res["tpir_at_fpir_0.1"] == 1.0
    with pytest.raises(ValueError, match="match_by"):
        identity_scores(g, ["a", "b", "b"], g, match_by="crowd")


def test_centring_on_the_gallery_mean_separates_strangers_that_share_a_component() -> None:
    """Synthetic embeddings: each photo is its person's direction plus noise plus a component
    every photo shares, of varying strength (the kind of photo). Strangers then look alike
    through the shared part; taking the gallery's mean out (``match_by="centred"``) leaves the people."""
    from lookalike_live.evaluation import centred, score_identification

    rng = np.random.default_rng(5)
    dim, people, shared = 64, 60, np.eye(64, dtype=np.float32)[0]
    who = rng.normal(size=(people, dim)).astype(np.float32)
    who[:, 0] = 0

    def photos(ids: np.ndarray) -> np.ndarray:
        v = who[ids] + 0.9 * rng.normal(size=(len(ids), dim)) + rng.uniform(0, 12, (len(ids), 1)) * shared
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    gids, qids, nids = np.repeat(np.arange(40), 6), np.repeat(np.arange(40), 3), np.repeat(np.arange(40, 60), 5)
    g, q, n = photos(gids), photos(qids), photos(nids)
    kw = {"fpirs": (0.01,)}
    plain = score_identification(g, gids.astype(str), q, qids.astype(str), n, match_by="identity", **kw)
    centred_ = score_identification(g, gids.astype(str), q, qids.astype(str), n, match_by="centred", **kw)
    print(plain["tpir_at_fpir_0.01"], centred_["tpir_at_fpir_0.01"])
    assert centred_["tpir_at_fpir_0.01"] >= plain["tpir_at_fpir_0.01"] + 0.1
    c = centred(g, g.mean(axis=0))
    assert np.allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5) and abs(float(c.mean(axis=0) @ shared)) < 0.05


def test_kfold_accuracy_uses_thresholds_from_the_other_folds() -> None:
    from lookalike_live.evaluation import kfold_accuracy

    rng = np.random.default_rng(2)
    labels = np.tile([True] * 50 + [False] * 50, 4)
    scores = np.where(labels, rng.normal(0.6, 0.1, 400), rng.normal(0.1, 0.1, 400))
    fold = np.repeat(np.arange(4), 100)
    acc, std, thrs = kfold_accuracy(scores, labels, fold)
    assert len(thrs) == 4 and all(0.2 < t < 0.5 for t in thrs)
    assert 0.95 < acc <= 1.0 and std < 0.05
    # a fold whose own best threshold differs is scored with the others' threshold
    scores[fold == 0] += 0.3
    acc2, _, thrs2 = kfold_accuracy(scores, labels, fold)
    assert acc2 < acc and thrs2[0] < 0.5


def _lfw_from_celeba(celeba_dir: Path, root: Path, ids: int = 20, per: int = 4) -> tuple[Path, Path]:
    """An LFW-layout copy (name/name_0001.jpg) of the first photos of the first identities, and a
    2-fold pairs.txt over it."""
    import shutil

    ds = open_dataset(celeba_dir, "celeba")
    by_id: dict[str, list[Path]] = {}
    for it in ds.items:
        by_id.setdefault(it.identity, []).append(Path(it.path))
    names = [i for i, p in by_id.items() if len(p) >= per][:ids]
    images = root / "lfw"
    for n in names:
        (images / f"id{n}").mkdir(parents=True)
        for k, src in enumerate(by_id[n][:per], start=1):
            shutil.copy(src, images / f"id{n}" / f"id{n}_{k:04d}.jpg")
    rng = np.random.default_rng(0)
    folds = []
    for f in range(2):
        own = names[f * ids // 2 : (f + 1) * ids // 2]
        pos = [f"id{n} {a} {b}" for n in own for a, b in ((1, 2), (3, 4))]
        neg = []
        for _ in range(len(pos)):
            a, b = rng.choice(len(own), 2, replace=False)
            neg.append(f"id{own[a]} {rng.integers(1, per + 1)} id{own[b]} {rng.integers(1, per + 1)}")
        folds.append(pos + neg)
    pairs = root / "pairs.txt"
    pairs.write_text(f"2 {len(folds[0]) // 2}\n" + "\n".join(line for f in folds for line in f) + "\n")
    return pairs, images


def test_eval_verify_cli_on_lfw_style_pairs(tmp_path: Path, model_store: Path, celeba_dir: Path) -> None:
    pairs, images = _lfw_from_celeba(celeba_dir, tmp_path)
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(model_store)}
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike_live.cli", "eval", "verify", "--pairs", str(pairs), "--images", str(images),
         "--model", "mobilefacenet", "--json", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["folds"] == 2 and res["pairs"] + res["left_out_pairs"] == 80 and res["images"] == 80
    assert res["accuracy"] >= 0.8 and res["roc_auc"] >= 0.9
    assert 0.0 < res["threshold"] < 1.0 and 0.0 <= res["tar_at_far_0.01"] <= 1.0
    # a malformed pairs file is one clear line, not a traceback
    bad = tmp_path / "bad.txt"
    bad.write_text("2 1\nonly two\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike_live.cli", "eval", "verify", "--pairs", str(bad), "--images", str(images),
         "--model", "mobilefacenet"], capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 2 and "bad.txt:2" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_real_facenet_casia_identifies_held_out_people(tmp_path: Path, casia_store: Path, celeba_dir: Path) -> None:
    """Real FaceNet (CASIA-WebFace, from the package registry), 8 gallery photos per identity, the last 50
    people of the sample as distractors absent from the gallery, matched as the product matches by default
    (gallery-centred identity centroids). Measured with the spec's crop (box x1.2 taller): top-1 0.96,
    TPIR at FPIR 1 % 0.92 (0.91 with plain centroids; square crop: 0.95 / 0.94, plain 0.88). Issue 12
    asks 0.97 / 0.90: top-1 not met on this half (see README "FaceNet crops"); this guards against
    regressions."""
    gallery, strangers = _split_celeba(celeba_dir, tmp_path, distractor_ids=50)
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(casia_store)}
    proc = subprocess.run([sys.executable, "-m", "lookalike_live.cli", "eval", "identify", "--dataset", str(gallery),
                           "--gallery-per-id", "8", "--distractors", str(strangers), "--json", "--no-progress",
                           "--study"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["model"] == "facenet-casia-webface"  # the default embedder: the best installed FaceNet
    assert res["matching"]["match_by"] == "centred"  # the default matching
    assert res["identities"] == 50 and res["queries"] >= 98 and res["nonmated"] >= 495
    print({k: res[k] for k in ("top1", "top5", "tpir_at_fpir_0.01", "tpir_at_fpir_0.1", "threshold")})
    assert res["top1"] >= 0.94
    assert res["tpir_at_fpir_0.01"] >= 0.90 and res["tpir_at_fpir_0.1"] >= 0.90
    plain = {v["name"]: v for v in res["variants"]}["identity"]
    print("plain centroids:", {k: plain[k] for k in ("top1", "tpir_at_fpir_0.01", "tpir_at_fpir_0.1")})
    # what centring buys: +0.06 with the square crop, +0.01 with the taller one (which lifts plain centroids)
    assert res["tpir_at_fpir_0.01"] >= plain["tpir_at_fpir_0.01"]


def test_video_faces_cuts_photos_the_evaluation_finds_again(tmp_path: Path, model_store: Path,
                                                          hamilton_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/video_faces.py: the faces of a video as photos of people absent from a gallery."""
    from lookalike_live.detect import FaceDetector
    from lookalike_live.errors import SourceError
    from lookalike_live.video_faces import face_photos

    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(model_store))
    searched, written = face_photos(hamilton_clip, tmp_path / "out", every=40, min_side=40)
    photos = sorted((tmp_path / "out" / hamilton_clip.stem).glob("*.jpg"))
    assert searched == 7 and written == len(photos) >= 5  # frames 0, 40, ..., 240 of 275
    from lookalike_live.tracking import iou_matrix

    cap = cv2.VideoCapture(str(hamilton_clip))
    frames = [cap.read()[1] for _ in range(241)]
    cap.release()
    with FaceDetector("full", running_mode="image", store=model_store) as det:
        for p in photos:  # the largest face of each photo (what eval takes) is the face it was cut for
            frame, k = (int(x) for x in p.stem.split("_"))
            meant = det.detect(frames[frame]).xyxy[[k]]
            found = det.detect(cv2.imread(str(p)))
            assert len(found), p.name
            assert iou_matrix(found.xyxy[[int(np.argmax(found.area))]], meant)[0, 0] >= 0.5, p.name
    assert len(open_dataset(tmp_path / "out", "folders").items) == written
    with pytest.raises(SourceError, match="cannot open video"):
        face_photos(tmp_path / "missing.mp4", tmp_path / "out2")


@pytest.mark.slow
def test_real_facenet_casia_identifies_the_whole_sample_against_strangers_from_a_video(
        tmp_path: Path, casia_store: Path, celeba_dir: Path, hamilton_clip: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12's done-when as it reads: real FaceNet (CASIA), the whole CelebA sample as the gallery (8
    photos per identity, 100 identities, 199 queries) and, as people the sample does not contain, the
    faces of the Hamilton clip (every 3rd frame, faces of 40 px or more: 134 photos whose largest face
    is the one they were cut for, 133 found by eval). Measured (the spec's crop, 2026-12-02): top-1
    0.975, TPIR at FPIR 1 % 0.889 (the issue asks 0.90: not met; plain centroids 0.910, nearest photo
    0.935). This guards against regressions."""
    from lookalike_live.video_faces import face_photos

    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(casia_store))  # the detector to cut the faces with
    face_photos(hamilton_clip, tmp_path / "strangers", every=3, min_side=40)
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(casia_store)}
    proc = subprocess.run([sys.executable, "-m", "lookalike_live.cli", "eval", "identify", "--dataset", str(celeba_dir),
                           "--gallery-per-id", "8", "--distractors", str(tmp_path / "strangers"), "--json",
                           "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["model"] == "facenet-casia-webface" and res["matching"]["match_by"] == "centred"
    assert res["identities"] == 100 and res["queries"] >= 198 and res["nonmated"] >= 125
    print({k: res[k] for k in ("top1", "top5", "tpir_at_fpir_0.01", "tpir_at_fpir_0.1", "nonmated")})
    assert res["top1"] >= 0.97
    assert res["tpir_at_fpir_0.01"] >= 0.85


@pytest.mark.slow
def test_shipped_thresholds_are_what_eval_measures_on_the_sample(casia_store: Path, celeba_dir: Path) -> None:
    """The thresholds a new user gets (the spec's [calibration]) are what the documented command
    measures now, for every matching mode: a change of crop, model or matching that moves them must
    re-calibrate the spec."""
    from lookalike_live.models import get_spec

    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(casia_store)}
    proc = subprocess.run([sys.executable, "-m", "lookalike_live.cli", "eval", "identify", "--dataset", str(celeba_dir),
                           "--study", "--json", "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["model"] == "facenet-casia-webface" and res["far"] == 0.01 and res["queries"] == 298
    measured = {v["match_by"]: v["threshold"] for v in res["variants"] if not v["flip"] and not v["quality_weighted"]}
    shipped = get_spec("facenet-casia-webface").calibration
    for by in ("centred", "identity", "face"):
        assert abs(getattr(shipped, by) - measured[by]) <= 0.003, (by, getattr(shipped, by), measured[by])


@pytest.mark.slow
def test_eval_crops_scores_every_crop_on_the_same_faces(tmp_path: Path, model_store: Path, celeba_dir: Path) -> None:
    subset, _ = _split_celeba(celeba_dir, tmp_path, distractor_ids=70)  # the first 30 identities
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(model_store)}
    proc = subprocess.run([sys.executable, "-m", "lookalike_live.cli", "eval", "crops", "--dataset", str(subset),
                           "--model", "mobilefacenet", "--gallery-per-id", "7", "--holdout-ids", "10",
                           "--json", "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    from lookalike_live.crop_study import CROP_VARIANTS, ENSEMBLES

    names = [n for n, _ in CROP_VARIANTS] + [n for n, _ in ENSEMBLES]
    assert [v["name"] for v in res["variants"]] == [n for n in names for _ in (0, 1)]
    assert [v["flip"] for v in res["variants"][:2]] == [False, True]
    assert res["current"] == "5-point template x1.0"  # mobilefacenet's own spec: arcface5 at scale 1
    assert res["best"] in names and res["queries"] == 60 and res["nonmated"] >= 95
    rows = {(v["name"], v["flip"]): v for v in res["variants"]}
    # crops differ, so their scores do: a 5-point-aligned model is hurt by box crops far off its template
    assert rows[("5-point template x1.0", False)]["top1"] > rows[("box, margin 0.5", False)]["top1"]
    for v in res["variants"]:
        assert 0 <= v["tpir_at_fpir_0.01"] <= v["tpir_at_fpir_0.1"] <= v["top1"] <= v["top5"] <= 1
