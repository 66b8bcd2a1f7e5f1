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


# --------------------------------------------------------------------------- verification (LFW pairs)
def parse_lfw_pairs(path, images_dir, ext: str = ".jpg") -> list[list[tuple]]:  # type: ignore[no-untyped-def]
    """LFW ``pairs.txt``: a header ``FOLDS N`` then per fold N same-person lines
    ``name i j`` and N different-person lines ``name1 i name2 j``; images are
    ``images_dir/name/name_%04d.jpg``. Returns folds of (image1, image2, same) tuples.
    A header-less file (pairs only) is one fold."""
    from pathlib import Path

    from .errors import ConfigError

    root = Path(images_dir)

    def img(name: str, idx: str) -> Path:
        return root / name / f"{name}_{int(idx):04d}{ext}"

    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise ConfigError(f"{path}: no pairs")
    folds_n, per = (int(lines[0][0]), int(lines[0][1])) if len(lines[0]) == 2 else (1, 0)
    body = lines[1:] if len(lines[0]) == 2 else lines
    pairs: list[tuple] = []
    for no, parts in enumerate(body, start=2 if len(lines[0]) == 2 else 1):
        if len(parts) == 3:
            pairs.append((img(parts[0], parts[1]), img(parts[0], parts[2]), True))
        elif len(parts) == 4:
            pairs.append((img(parts[0], parts[1]), img(parts[2], parts[3]), False))
        else:
            raise ConfigError(f"{path}:{no}: expected 'name i j' or 'name1 i name2 j', got {' '.join(parts)!r}")
    if folds_n > 1:
        if len(pairs) != folds_n * 2 * per:
            raise ConfigError(f"{path}: header says {folds_n} folds x {2 * per} pairs, found {len(pairs)} pairs")
        size = 2 * per
        return [pairs[f * size : (f + 1) * size] for f in range(folds_n)]
    return [pairs]


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold (midpoint between neighbouring scores) that maximises accuracy."""
    s = np.sort(np.unique(scores))
    cands = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    acc = [np.mean((scores >= t) == labels) for t in cands]
    return float(cands[int(np.argmax(acc))])


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, fold: np.ndarray) -> tuple[float, float, list[float]]:
    """LFW protocol: for each fold, the threshold that is best on the other folds, applied to it.
    Returns (mean accuracy, std, per-fold thresholds). One fold: the threshold is fit on itself."""
    scores, labels, fold = np.asarray(scores, np.float64), np.asarray(labels, bool), np.asarray(fold)
    accs, thrs = [], []
    ids = np.unique(fold)
    for f in ids:
        test = fold == f
        train = ~test if len(ids) > 1 else test
        t = best_threshold(scores[train], labels[train])
        thrs.append(t)
        accs.append(float(np.mean((scores[test] >= t) == labels[test])))
    return float(np.mean(accs)), float(np.std(accs)), thrs


def verify_pairs(folds: list[list[tuple]], analyzer, *, progress: bool = True) -> dict:  # type: ignore[no-untyped-def]
    """Embed each image of the pairs once (its largest face) and score every pair by cosine
    similarity: 10-fold accuracy, ROC AUC, TAR at FAR 1e-3 and 1e-2. Pairs with an unreadable
    image or no face are left out and counted."""
    from tqdm import tqdm

    from .errors import LookalikeError
    from .imageio import read_image

    images = sorted({p for f in folds for a, b, _ in f for p in (a, b)})
    vec: dict = {}
    problems: dict[str, str] = {}
    for path in tqdm(images, unit="img", desc="verify", disable=not progress, dynamic_ncols=True):
        try:
            image = read_image(path)
        except LookalikeError as exc:
            problems[str(path)] = str(exc)
            continue
        dets = analyzer.detect(image)
        if len(dets) == 0:
            problems[str(path)] = "no face found"
            continue
        _, emb = analyzer.embed_faces(image, dets[[int(np.argmax(dets.area))]])
        vec[path] = emb.vectors[0]
    scores, labels, fold_of = [], [], []
    left_out = 0
    for f, pairs in enumerate(folds):
        for a, b, same in pairs:
            if a not in vec or b not in vec:
                left_out += 1
                continue
            scores.append(float(vec[a] @ vec[b]))
            labels.append(bool(same))
            fold_of.append(f)
    s, y = np.asarray(scores), np.asarray(labels, bool)
    if y.all() or not y.any():
        raise ValueError("verification needs both same-person and different-person pairs with faces")
    acc, std, thrs = kfold_accuracy(s, y, np.asarray(fold_of))
    out = {"folds": len(folds), "pairs": len(s), "left_out_pairs": left_out, "images": len(images),
           "undetected": sum(1 for r in problems.values() if r == "no face found"), "problems": problems,
           "accuracy": round(acc, 4), "accuracy_std": round(std, 4),
           "threshold": round(float(np.mean(thrs)), 4), "roc_auc": round(roc_auc(s, y), 4)}
    for far in (1e-3, 1e-2):
        thr, tar = threshold_at_far(s, y, far)
        out[f"tar_at_far_{far:g}"] = round(tar, 4)
    return out
