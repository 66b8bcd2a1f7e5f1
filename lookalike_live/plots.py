"""PNG plots for the evaluation and benchmark reports.

Every plot builds its own :class:`matplotlib.figure.Figure` and renders it with the Agg canvas;
``matplotlib.pyplot`` and its global state are never touched, so the functions are safe inside the
Qt app process and from worker threads. matplotlib is imported lazily, inside the functions, so the
package imports without it. Each plot function writes one PNG (parent folders are created) and
returns its :class:`~pathlib.Path`.

:func:`roc_curve` and :func:`pca_2d` are plain numpy helpers, exposed for tests and reports.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike_live.errors import ShapeError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "roc_curve",
    "curve_auc",
    "pca_2d",
    "plot_roc",
    "plot_score_histograms",
    "plot_latency_histograms",
    "plot_pca_map",
]

log = logging.getLogger(__name__)

DPI = 110
FIGSIZE = (6.4, 4.4)
HIST_BINS = 50
LATENCY_ROW_IN = 2.0
LEGEND_MAX_IDENTITIES = 20


# --------------------------------------------------------------------------- numpy helpers


def _scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a (scores, labels) pair to float64 (N,) and bool (N,) arrays."""
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels)
    if s.ndim != 1:
        raise ShapeError(f"scores must be a 1-D array of shape (N,), got shape {s.shape}")
    if lab.ndim != 1:
        raise ShapeError(f"labels must be a 1-D array of shape (N,), got shape {lab.shape}")
    if s.shape[0] != lab.shape[0]:
        raise ShapeError(
            f"scores and labels must have the same length: expected labels of shape ({s.shape[0]},) "
            f"to match scores, got {s.shape[0]} scores and {lab.shape[0]} labels"
        )
    if s.shape[0] == 0:
        raise ShapeError("scores and labels are empty: expected shape (N,) with N >= 1, got (0,)")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"scores must be finite; {int(np.count_nonzero(~np.isfinite(s)))} are NaN or inf")
    return s, lab.astype(bool)


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of the accept rule ``score >= threshold``, one point per distinct score.

    ``labels`` is True for genuine (same identity) pairs. Returns ``(far, tar, thresholds)`` sorted
    by decreasing threshold and starting at the point (0, 0) with threshold ``+inf``; equal scores
    enter together. Raises :class:`ShapeError` for mismatched or empty inputs and ``ValueError``
    when there are no positives or no negatives.
    """
    s, lab = _scores_labels(scores, labels)
    n_pos = int(np.count_nonzero(lab))
    n_neg = int(lab.size - n_pos)
    if n_pos == 0:
        raise ValueError(f"ROC needs genuine pairs (labels True); all {lab.size:,} labels are False")
    if n_neg == 0:
        raise ValueError(f"ROC needs impostor pairs (labels False); all {lab.size:,} labels are True")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    lab_sorted = lab[order]
    tp = np.cumsum(lab_sorted)
    fp = np.cumsum(~lab_sorted)
    # Last index of each run of equal scores: all tied pairs are accepted together.
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    far = np.r_[0.0, fp[last] / n_neg]
    tar = np.r_[0.0, tp[last] / n_pos]
    thresholds = np.r_[np.inf, s_sorted[last]]
    return far, tar, thresholds


def curve_auc(far: np.ndarray, tar: np.ndarray) -> float:
    """Area under a ROC given by its points (trapezoid rule); ``roc_curve`` ends at (1, 1)."""
    far = np.asarray(far, dtype=np.float64)
    tar = np.asarray(tar, dtype=np.float64)
    if far.shape != tar.shape or far.ndim != 1:
        raise ShapeError(f"far and tar must be 1-D of equal shape, got {far.shape} and {tar.shape}")
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def pca_2d(vectors: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, D) vectors onto their first two principal components.

    Returns ``(projection (N, 2), explained variance ratio (2,))``. Uses the SVD of the centred
    data; missing components (D = 1, N < 3) and zero total variance give zero columns and ratios.
    Component signs are fixed so that each component's largest-magnitude loading is positive.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(f"vectors must have shape (N, D) with N, D >= 1, got shape {x.shape}")
    xc = x - x.mean(axis=0, keepdims=True)
    proj = np.zeros((x.shape[0], 2), dtype=np.float64)
    ratio = np.zeros(2, dtype=np.float64)
    _, sing, vt = np.linalg.svd(xc, full_matrices=False)
    var = sing**2
    total = float(var.sum())
    if total <= 0.0 or not np.isfinite(total):
        return proj, ratio
    k = min(2, vt.shape[0])
    comps = vt[:k].copy()
    for i in range(k):
        if comps[i, np.argmax(np.abs(comps[i]))] < 0:
            comps[i] = -comps[i]
    proj[:, :k] = xc @ comps.T
    ratio[:k] = var[:k] / total
    return proj, ratio


# --------------------------------------------------------------------------- figure plumbing


def _new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    """A pyplot-free figure with an Agg canvas attached."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        from .errors import ConfigError

        raise ConfigError(f"plots need matplotlib ({exc}): pip install 'lookalike-live[plots]'") from exc

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    """Tight-layout ``fig`` and write it as PNG to ``path`` (parents created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=DPI, bbox_inches="tight")
    log.debug("wrote plot %s", out)
    return out


def _fmt_rate(x: float) -> str:
    """Compact rate label: 0.001 -> '1e-03', 0.25 -> '0.25'."""
    return f"{x:.0e}" if x < 0.01 else f"{x:g}"


# --------------------------------------------------------------------------- plots


def plot_roc(curves: Mapping[str, tuple[Any, Any]], path: str | Path, *, title: str = "ROC",
             mark_far: Sequence[float] = (1e-3, 1e-2)) -> Path:
    """ROC curves (TAR vs FAR on a log axis), one line per ``{name: (scores, labels)}`` entry.

    Each legend entry carries the curve's AUC; FAR is clipped at 1/num_impostors so the log axis
    can show the (0, 0) start. Dashed vertical lines mark the FAR values in ``mark_far``.
    """
    if not curves:
        raise ValueError("plot_roc needs at least one curve, got an empty mapping")
    computed = []
    for name, (scores, labels) in curves.items():
        far, tar, _ = roc_curve(scores, labels)
        lab = np.asarray(labels, dtype=bool)
        n_pos = int(np.count_nonzero(lab))
        n_neg = int(lab.size - n_pos)
        computed.append((name, far, tar, curve_auc(far, tar), n_pos, n_neg))

    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    floor = 1.0
    for name, far, tar, auc, _, n_neg in computed:
        curve_floor = 1.0 / n_neg
        floor = min(floor, curve_floor)
        ax.plot(np.clip(far, curve_floor, 1.0), tar, linewidth=1.6, label=f"{name} (AUC {auc:.3f})")
    floor = min(floor, 0.5)  # keep a non-degenerate x range even with a single impostor
    marked = 0
    for value in mark_far:
        if not floor <= value <= 1.0:
            log.debug("FAR mark %g is outside the plotted range [%g, 1]; skipped", value, floor)
            continue
        ax.axvline(value, color="0.45", linestyle="--", linewidth=0.9,
                   label="marked FAR" if marked == 0 else None)
        marked += 1
        ax.text(value, 0.02, f" FAR {_fmt_rate(value)}", rotation=90, va="bottom", ha="right",
                fontsize=7, color="0.35")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.02)
    if len(computed) == 1:
        _, _, _, _, n_pos, n_neg = computed[0]
        ax.set_title(f"{title} ({n_pos:,} genuine / {n_neg:,} impostor pairs)")
    else:
        ax.set_title(title)
    ax.set_xlabel(f"False accept rate (impostor pairs accepted, log scale, floor {_fmt_rate(floor)})")
    ax.set_ylabel("True accept rate (genuine pairs accepted)")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_score_histograms(scores: Any, labels: Any, path: str | Path, *, threshold: float | None = None,
                          title: str = "Genuine vs impostor scores") -> Path:
    """Overlapping density histograms of cosine similarity for genuine (True) and impostor pairs,
    on shared bins over the range of all scores, with an optional threshold line."""
    s, lab = _scores_labels(scores, labels)
    lo, hi = float(s.min()), float(s.max())
    if hi <= lo:
        lo, hi = lo - 0.5e-3, hi + 0.5e-3
    bins = np.linspace(lo, hi, HIST_BINS + 1).tolist()

    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for name, mask, color in (("genuine", lab, "tab:green"), ("impostor", ~lab, "tab:red")):
        values = s[mask]
        if values.size == 0:
            log.warning("plot_score_histograms: no %s pairs; that histogram is left out", name)
            continue
        ax.hist(values, bins=bins, density=True, alpha=0.5, color=color, edgecolor=color,
                linewidth=0.4, label=f"{name} (n={values.size:,})")
    if threshold is not None:
        ax.axvline(float(threshold), color="black", linestyle="--", linewidth=1.2,
                   label=f"threshold {float(threshold):.3f}")
    ax.set_title(title)
    ax.set_xlabel("Cosine similarity")
    ax.set_ylabel("Density (per unit similarity)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_latency_histograms(samples: Mapping[str, Sequence[float]], path: str | Path, *,
                            title: str = "Latency", unit: str = "ms") -> Path:
    """One histogram per ``{name: samples}`` entry, stacked vertically, with p50/p95 lines.

    Entries without (finite) samples are skipped with a warning; ``ValueError`` when all are empty.
    """
    rows: list[tuple[str, np.ndarray]] = []
    for name, raw in samples.items():
        arr = np.asarray(raw, dtype=np.float64).ravel()
        finite = arr[np.isfinite(arr)]
        if finite.size < arr.size:
            log.warning("latency %r: %d non-finite samples dropped", name, arr.size - finite.size)
        if finite.size == 0:
            log.warning("latency %r has no samples; skipped", name)
            continue
        rows.append((str(name), finite))
    if not rows:
        raise ValueError(f"plot_latency_histograms: no samples in any of {len(samples)} entries "
                         f"({', '.join(map(repr, samples)) or 'none given'})")

    fig = _new_figure((FIGSIZE[0], max(LATENCY_ROW_IN * len(rows) + 0.6, 2.6)))
    fig.suptitle(title)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (name, vals) in zip(axes, rows, strict=True):
        p50, p95 = np.percentile(vals, [50, 95])
        ax.hist(vals, bins=min(40, max(5, vals.size // 4)), color="tab:blue", alpha=0.75)
        ax.axvline(p50, color="tab:orange", linestyle="-", linewidth=1.3, label=f"p50 {p50:.1f} {unit}")
        ax.axvline(p95, color="tab:red", linestyle="--", linewidth=1.3, label=f"p95 {p95:.1f} {unit}")
        ax.set_title(f"{name} (n={vals.size:,})", fontsize=9)
        ax.set_xlabel(f"Latency ({unit})", fontsize=8)
        ax.set_ylabel("Count", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def plot_pca_map(vectors: Any, identities: Sequence[str] | Any, path: str | Path, *, max_identities: int = 20,
                 title: str = "Embeddings, PCA 2-D") -> Path:
    """Scatter of embeddings on their first two principal components, coloured by identity.

    Keeps the ``max_identities`` identities with the most rows (ties by name) and runs PCA on
    those rows only. The legend sits outside the axes; it is omitted above 20 identities.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(f"vectors must have shape (N, D) with N, D >= 1, got shape {x.shape}")
    ids = [str(i) for i in identities]
    if len(ids) != x.shape[0]:
        raise ShapeError(f"identities must have one entry per vector: expected {x.shape[0]} "
                         f"(vectors shape {x.shape}), got {len(ids)}")
    if max_identities < 1:
        raise ValueError(f"max_identities must be >= 1, got {max_identities}")
    counts = Counter(ids)
    kept = sorted(counts, key=lambda name: (-counts[name], name))[:max_identities]
    if len(kept) < len(counts):
        log.info("plot_pca_map: showing %d of %d identities", len(kept), len(counts))
    kept_set = set(kept)
    rows = np.fromiter((i in kept_set for i in ids), dtype=bool, count=len(ids))
    proj, ratio = pca_2d(x[rows])
    kept_ids = np.asarray(ids, dtype=object)[rows]

    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for k, name in enumerate(kept):
        sel = kept_ids == name
        ax.scatter(proj[sel, 0], proj[sel, 1], s=14, alpha=0.8, color=cmap(k % cmap.N),
                   edgecolors="none", label=f"{name} (n={counts[name]:,})")
    ax.set_title(f"{title}\n{len(kept):,} identities, {int(rows.sum()):,} of {x.shape[0]:,} vectors "
                 f"(D={x.shape[1]})", fontsize=10)
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f} %)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f} %)")
    ax.grid(True, alpha=0.3)
    if len(kept) <= LEGEND_MAX_IDENTITIES:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7,
                  title="identity", title_fontsize=8)
    return _save(fig, path)


def plot_monitor_load(runs: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """The ``monitor`` bench: frames analysed a second per camera (median, min-max bar) and the
    worst camera's decision p95 against the number of cameras, one line per rate and detector."""
    from matplotlib.ticker import ScalarFormatter

    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        label = (f"detect_fps {r['detect_fps']}" + ("" if r.get("detector", "default") == "default"
                                                     else f", {r['detector']}-range detector")
                 + (", streams in step" if r.get("streams") == "in step" else ""))
        groups.setdefault(label, []).append(r)
    fig = _new_figure((FIGSIZE[0], 3.4))
    ax_fps, ax_lat = fig.subplots(1, 2)
    for label, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["cameras"])
        n = np.array([r["cameras"] for r in rs], float)
        med = np.array([r["fps_median"] for r in rs], float)
        err = np.array([[m - r["fps_min"] for m, r in zip(med, rs, strict=True)],
                        [r["fps_max"] - m for m, r in zip(med, rs, strict=True)]])
        ax_fps.errorbar(n, med, yerr=err, marker="o", capsize=3, label=label)
        lat = [r["decision_p95_ms"] if r.get("decision_p95_ms") is not None else np.nan for r in rs]
        ax_lat.plot(n, lat, marker="o", label=label)
    ax_fps.set_xlabel("Cameras", fontsize=8)
    ax_fps.set_ylabel("Frames analysed / s per camera", fontsize=8)
    ax_fps.set_title("Per-camera rate (median, min-max)", fontsize=9)
    ax_lat.axhline(1000, color="tab:red", linestyle="--", linewidth=1, label="1 s")
    ax_lat.set_xlabel("Cameras", fontsize=8)
    ax_lat.set_ylabel("Decision latency p95 (ms)", fontsize=8)
    ax_lat.set_title("Worst camera's decision p95", fontsize=9)
    for ax in (ax_fps, ax_lat):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16])
        ax.get_xaxis().set_major_formatter(ScalarFormatter())
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)

