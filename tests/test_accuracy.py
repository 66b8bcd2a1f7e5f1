"""End-to-end recognition quality on real photos: `embed` over the CelebA fixture with the
MobileFaceNet fixture, scored with exact cosine search (issue 3's done-when)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
