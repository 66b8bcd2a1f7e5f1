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


def threshold_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> tuple[float, float]:
    """The lowest similarity threshold whose false-accept rate (different-identity pairs at or
    above it) is <= ``far``, and the true-accept rate there: a principled open-set threshold."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    neg = np.sort(scores[~labels])[::-1]
    if len(neg) == 0 or labels.sum() == 0:
        raise ValueError("threshold_at_far needs both positive and negative pairs")
    k = int(np.floor(far * len(neg)))  # negatives allowed at or above the threshold
    thr = float(np.nextafter(neg[k], np.inf)) if k < len(neg) else float(neg[-1])
    tar = float(np.mean(scores[labels] >= thr))
    return thr, tar


def evaluate_dataset(dataset, analyzer, *, gallery_per_id: int = 7, ks: Sequence[int] = (1, 5),  # type: ignore[no-untyped-def]
                     limit: int | None = None, far: float = 0.01, progress: bool = True) -> dict:
    """Recognition quality of ``analyzer``'s model on a labelled dataset: one face per photo (the
    annotated one, else the largest), the first ``gallery_per_id`` photos of each identity as the
    gallery and the rest as queries; closed-set top-k identification accuracy with exact cosine
    search, verification ROC AUC over all pairs, and the threshold at ``far`` false accepts.
    Unreadable photos and photos without a face are counted, never fatal."""
    import time

    from tqdm import tqdm

    from .errors import LookalikeError
    from .imageio import read_image
    from .indexing import choose_face

    items = list(dataset.items[:limit] if limit else dataset.items)
    vecs: list[np.ndarray] = []
    ids: list[str] = []
    paths: list[str] = []
    skipped: dict[str, str] = {}
    t0 = time.perf_counter()
    for item in tqdm(items, unit="img", desc="eval", disable=not progress, dynamic_ncols=True):
        try:
            image = read_image(item.path)
        except LookalikeError as exc:
            skipped[item.rel_path] = str(exc)
            continue
        dets = analyzer.detect(image)
        if len(dets) == 0:
            skipped[item.rel_path] = "no face found"
            continue
        one = dets[[choose_face(dets, item.bbox)]]
        _, emb = analyzer.embed_faces(image, one)
        vecs.append(emb.vectors[0])
        ids.append(item.identity)
        paths.append(item.rel_path)
    seconds = time.perf_counter() - t0
    out: dict = {"dataset": dataset.name, "model": analyzer.spec.name, "images": len(items),
                 "faces": len(vecs), "skipped": skipped, "seconds": round(seconds, 2),
                 "images_per_second": round(len(items) / seconds, 2) if seconds > 0 else None}
    if len(set(ids)) < 2:
        raise ValueError(f"{dataset.name}: need faces of at least two identities to evaluate, got {len(set(ids))}")
    v = np.stack(vecs)
    g, q = split_gallery_queries(paths, ids, gallery_per_id)
    if not q.any():
        raise ValueError(f"no query photos: every identity has <= {gallery_per_id} photos; lower --gallery-per-id")
    acc = identification_accuracy(v[g], np.asarray(ids)[g], v[q], np.asarray(ids)[q], ks=ks)
    scores, same = pair_scores(v, ids)
    thr, tar = threshold_at_far(scores, same, far)
    out.update({f"top{k}": round(a, 4) for k, a in acc.items()})
    out.update(identities=len(set(ids)), gallery=int(g.sum()), queries=int(q.sum()),
               roc_auc=round(roc_auc(scores, same), 4), far=far, threshold=round(thr, 4),
               tar_at_far=round(tar, 4),
               undetected=sum(1 for r in skipped.values() if r == "no face found"))
    return out
