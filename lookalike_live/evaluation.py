"""Identification and verification metrics on L2-normalised embeddings (numpy only)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def split_gallery_queries(paths: Sequence[str], identities: Sequence[str], gallery_per_id: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per identity, the first ``gallery_per_id`` photos by file name form the gallery, the rest
    are queries. Returns boolean masks (gallery, query) over the inputs."""
    by_id: dict[str, list[int]] = defaultdict(list)
    for i, ident in enumerate(identities):
        by_id[ident].append(i)
    gallery = np.zeros(len(paths), bool)
    for rows in by_id.values():
        rows.sort(key=lambda i: str(paths[i]).rsplit("/", 1)[-1])
        gallery[rows[:gallery_per_id]] = True
    return gallery, ~gallery


def identification_accuracy(gallery: np.ndarray, gallery_ids: Sequence[str], queries: np.ndarray,
                            query_ids: Sequence[str], ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Closed-set top-k accuracy of exact cosine search: a query is right at k when one of the
    k most similar gallery *identities* (best photo per identity) is its own."""
    gids = np.asarray(gallery_ids)
    names, inverse = np.unique(gids, return_inverse=True)
    sims = queries @ gallery.T  # (Q, G)
    per_id = np.full((len(queries), len(names)), -np.inf, np.float32)
    for j in range(len(names)):
        per_id[:, j] = sims[:, inverse == j].max(axis=1)
    order = np.argsort(-per_id, axis=1)
    truth = np.asarray(query_ids)
    out = {}
    for k in ks:
        top = names[order[:, :k]]
        out[k] = float(np.mean([t in row for t, row in zip(truth, top, strict=True)]))
    return out


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (probability a positive outscores a negative; ties count half)."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        raise ValueError("roc_auc needs both positive and negative pairs")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def pair_scores(vectors: np.ndarray, identities: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and same-identity label of every unordered pair."""
    sims = vectors @ vectors.T
    ids = np.asarray(identities)
    iu = np.triu_indices(len(ids), k=1)
    return sims[iu], (ids[:, None] == ids[None, :])[iu]
