"""Tests of lookalike_live.plots: ROC maths, PCA, and real PNG output through matplotlib's Agg canvas."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from lookalike_live import plots
from lookalike_live.errors import ShapeError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pairs(rng: np.random.Generator, n_pos: int = 300, n_neg: int = 700) -> tuple[np.ndarray, np.ndarray]:
    scores = np.r_[rng.normal(0.55, 0.15, n_pos), rng.normal(0.1, 0.12, n_neg)]
    labels = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    perm = rng.permutation(scores.size)
    return scores[perm], labels[perm]


def _assert_png(path: Path, min_w: int = 200, min_h: int = 150) -> np.ndarray:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None and img.size > 0
    h, w = img.shape[:2]
    assert min_w <= w <= 3000 and min_h <= h <= 4000, (w, h)
    assert img.std() > 5  # not a blank canvas
    return img


# --------------------------------------------------------------------------- roc_curve


def test_roc_curve_matches_brute_force_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores, labels = _pairs(rng, 80, 120)
    scores = np.round(scores, 1)  # many ties
    far, tar, thr = plots.roc_curve(scores, labels)

    distinct = np.unique(scores)[::-1]
    assert thr[0] == np.inf and (far[0], tar[0]) == (0.0, 0.0)
    np.testing.assert_array_equal(thr[1:], distinct)
    assert far.shape == tar.shape == thr.shape == (distinct.size + 1,)
    for f, t, th in zip(far[1:], tar[1:], thr[1:], strict=True):
        accepted = scores >= th
        assert f == pytest.approx(np.mean(accepted[~labels]))
        assert t == pytest.approx(np.mean(accepted[labels]))
    assert (far[-1], tar[-1]) == (1.0, 1.0)
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0) and np.all(np.diff(thr) < 0)


def test_roc_curve_all_equal_scores_enter_together() -> None:
    far, tar, thr = plots.roc_curve([0.3, 0.3, 0.3, 0.3], [True, False, True, False])
    np.testing.assert_array_equal(far, [0.0, 1.0])
    np.testing.assert_array_equal(tar, [0.0, 1.0])
    np.testing.assert_array_equal(thr, [np.inf, 0.3])


def test_roc_auc_perfect_and_random() -> None:
    far, tar, _ = plots.roc_curve([0.9, 0.8, 0.2, 0.1], [True, True, False, False])
    assert plots.curve_auc(far, tar) == pytest.approx(1.0)
    far, tar, _ = plots.roc_curve([0.5] * 4, [True, True, False, False])
    assert plots.curve_auc(far, tar) == pytest.approx(0.5)


def test_roc_curve_errors() -> None:
    with pytest.raises(ShapeError) as err:
        plots.roc_curve([0.1, 0.2, 0.3], [True, False])
    assert "3" in str(err.value) and "2" in str(err.value)
    with pytest.raises(ValueError, match="genuine"):
        plots.roc_curve([0.1, 0.2], [False, False])
    with pytest.raises(ValueError, match="impostor"):
        plots.roc_curve([0.1, 0.2], [True, True])
    with pytest.raises(ShapeError):
        plots.roc_curve([], [])


# --------------------------------------------------------------------------- pca_2d


def test_pca_2d_recovers_known_plane() -> None:
    rng = np.random.default_rng(1)
    d, n = 64, 120
    e1, e2 = np.zeros(d), np.zeros(d)
    e1[5], e2[40] = 1.0, 1.0
    centres = np.where(np.arange(n)[:, None] < n // 2, 3.0 * e1, -3.0 * e1)  # two clusters along e1
    x = centres + rng.normal(0, 1.0, (n, 1)) * e2 + rng.normal(0, 1e-3, (n, d))
    proj, ratio = plots.pca_2d(x)
    assert proj.shape == (n, 2) and ratio.shape == (2,)
    assert ratio.sum() > 0.99 and ratio[0] >= ratio[1]
    a, b = proj[: n // 2, 0], proj[n // 2 :, 0]
    assert min(a.min(), b.min()) < 0 < max(a.max(), b.max())
    assert a.max() < b.min() or b.max() < a.min()  # clusters separated along PC1
    assert abs(a.mean() - b.mean()) == pytest.approx(6.0, rel=0.05)


def test_pca_2d_degenerate_inputs() -> None:
    proj, ratio = plots.pca_2d(np.array([[1.0], [2.0], [4.0]]))  # D = 1
    assert proj.shape == (3, 2) and np.all(proj[:, 1] == 0)
    np.testing.assert_allclose(ratio, [1.0, 0.0])
    proj, ratio = plots.pca_2d(np.ones((1, 8)))  # N = 1, no variance
    assert proj.shape == (1, 2) and np.all(proj == 0) and np.all(ratio == 0)
    with pytest.raises(ShapeError, match=r"\(N, D\)"):
        plots.pca_2d(np.zeros(5))


# --------------------------------------------------------------------------- plots write PNGs


def test_plot_roc_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    good, bad = _pairs(rng), _pairs(rng)
    bad = (bad[0] + rng.normal(0, 0.4, bad[0].size), bad[1])  # a worse model
    out = plots.plot_roc({"mobilefacenet": good, "noisy": bad}, tmp_path / "sub" / "roc.png",
                         title="ROC test", mark_far=(1e-3, 1e-2, 0.1))
    assert out == tmp_path / "sub" / "roc.png"
    _assert_png(out)
    auc_good = plots.curve_auc(*plots.roc_curve(*good)[:2])
    auc_bad = plots.curve_auc(*plots.roc_curve(*bad)[:2])
    assert auc_good > auc_bad
    with pytest.raises(ValueError):
        plots.plot_roc({}, tmp_path / "empty.png")


def test_plot_score_histograms_writes_png(tmp_path: Path) -> None:
    scores, labels = _pairs(np.random.default_rng(3))
    out = plots.plot_score_histograms(scores, labels, str(tmp_path / "hist.png"), threshold=0.267)
    assert isinstance(out, Path)
    _assert_png(out)
    with pytest.raises(ShapeError):
        plots.plot_score_histograms(scores, labels[:-1], tmp_path / "bad.png")


def test_plot_latency_histograms_writes_png_and_grows(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    one = plots.plot_latency_histograms({"detect": rng.gamma(4, 1.5, 500)}, tmp_path / "one.png")
    three = plots.plot_latency_histograms(
        {"detect": rng.gamma(4, 1.5, 500), "empty": [], "embed": list(rng.gamma(2, 3, 200)), "search": [1.0]},
        tmp_path / "three.png", title="Stage latency", unit="ms")
    h1 = _assert_png(one).shape[0]
    h3 = _assert_png(three).shape[0]
    assert h3 > 2 * h1  # three subplots (the empty entry skipped) stacked vertically


def test_plot_latency_histograms_all_empty_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no samples"):
        plots.plot_latency_histograms({"a": [], "b": []}, tmp_path / "x.png")
    with pytest.raises(ValueError):
        plots.plot_latency_histograms({}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_pca_map_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ids = [f"id{i:02d}" for i in range(25) for _ in range(i % 4 + 2)]
    vectors = rng.normal(size=(len(ids), 32))
    _assert_png(plots.plot_pca_map(vectors, ids, tmp_path / "pca.png", max_identities=20))
    _assert_png(plots.plot_pca_map(vectors, ids, tmp_path / "pca_all.png", max_identities=25))  # no legend
    _assert_png(plots.plot_pca_map(rng.normal(size=(5, 1)), list("aabbc"), tmp_path / "d1.png"))
    _assert_png(plots.plot_pca_map(rng.normal(size=(2, 8)), ["x", "y"], tmp_path / "n2.png"))
    with pytest.raises(ShapeError) as err:
        plots.plot_pca_map(vectors, ids[:-1], tmp_path / "bad.png")
    assert str(len(ids)) in str(err.value) and str(len(ids) - 1) in str(err.value)


# --------------------------------------------------------------------------- no pyplot, threads


def test_plot_in_thread(tmp_path: Path) -> None:
    scores, labels = _pairs(np.random.default_rng(6))
    errors: list[BaseException] = []
    outs: list[Path] = []

    def work(i: int) -> None:
        try:
            outs.append(plots.plot_score_histograms(scores, labels, tmp_path / f"t{i}.png", threshold=0.3))
        except BaseException as exc:  # re-raised on the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(outs) == 2
    for out in outs:
        _assert_png(out)


def test_package_imports_without_pyplot(tmp_path: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "import lookalike_live.plots as p\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'\n"
        f"p.plot_score_histograms(np.array([0.1, 0.5, 0.9]), np.array([False, True, True]), {str(tmp_path / 'a.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    _assert_png(tmp_path / "a.png")


def test_curve_auc_agrees_with_the_rank_statistic() -> None:
    """The trapezoid area under roc_curve's points equals evaluation.roc_auc (P(genuine > impostor), ties half)."""
    from lookalike_live.evaluation import roc_auc

    rng = np.random.default_rng(7)
    labels = rng.random(400) < 0.3
    scores = np.round(np.where(labels, rng.normal(0.5, 0.2, 400), rng.normal(0.2, 0.2, 400)), 2)
    assert plots.curve_auc(*plots.roc_curve(scores, labels)[:2]) == pytest.approx(roc_auc(scores, labels))
