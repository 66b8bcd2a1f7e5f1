"""Identification and verification metrics on L2-normalised embeddings (numpy only)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import MATCH_BY


def split_gallery_queries(paths: Sequence[str], identities: Sequence[str] | np.ndarray, gallery_per_id: int
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


def pair_scores(vectors: np.ndarray, identities: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and same-identity label of every unordered pair."""
    sims = vectors @ vectors.T
    ids = np.asarray(identities)
    iu = np.triu_indices(len(ids), k=1)
    return sims[iu], (ids[:, None] == ids[None, :])[iu]


def _threshold_for_rate(negatives: np.ndarray, rate: float) -> float:
    """The lowest threshold that accepts (score >= threshold) at most ``rate`` of ``negatives``."""
    neg = np.sort(np.asarray(negatives, np.float64))[::-1]
    k = int(np.floor(rate * len(neg)))
    return float(np.nextafter(neg[k], np.inf)) if k < len(neg) else float(neg[-1])


def threshold_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> tuple[float, float]:
    """The lowest similarity threshold whose false-accept rate (different-identity pairs at or
    above it) is <= ``far``, and the true-accept rate there: a principled open-set threshold."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        raise ValueError("threshold_at_far needs both positive and negative pairs")
    thr = _threshold_for_rate(scores[~labels], far)
    return thr, float(np.mean(scores[labels] >= thr))


@dataclass
class EmbeddedSet:
    """One face per photo of a labelled set: plain and horizontally flipped embeddings (both
    L2-normalised (N, D)), the face's quality in [0, 1], identity and path per row, and what was
    skipped (path -> reason)."""

    vectors: np.ndarray
    flipped: np.ndarray
    quality: np.ndarray
    identities: np.ndarray
    paths: list[str]
    images: int
    skipped: dict[str, str]
    seconds: float

    def embeddings(self, flip: bool) -> np.ndarray:
        """The vectors to score: plain, or with flip test-time augmentation (the normalised sum of
        the face's and its mirror image's embeddings)."""
        if not flip:
            return self.vectors
        v = self.vectors + self.flipped
        return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def locate_eval_face(item, analyzer, gallery_detector, spec, in_gallery: bool):
    """(image, the one face, its five annotated points (1,5,2) or None) of a labelled photo as the
    evaluation sees it, or None without a face: a gallery photo as ``index build`` prepares it (by
    its annotated landmarks when the dataset has usable ones, :func:`lookalike_live.prepare.locate_by_landmarks`,
    else :func:`lookalike_live.prepare.locate_face` with ``gallery_detector``), any other photo as the
    live app sees a face (``analyzer.detect`` on the whole photo). Raises LookalikeError for an
    unreadable photo."""
    from .imageio import read_image
    from .prepare import choose_face, locate_by_landmarks, locate_face

    if in_gallery:
        if item.landmarks is not None:
            placed = locate_by_landmarks(item, spec)
            if not isinstance(placed, str):
                return placed[0], placed[2], placed[3]
        found = locate_face(item, gallery_detector, spec)
        return None if found is None else (found[0], found[2], None)
    image = read_image(item.path)
    dets = analyzer.detect(image)
    if not len(dets):
        return None
    return image, dets[[choose_face(dets, item.bbox)]], None


def located_eval_faces(items: Sequence[Any], analyzer: Any, gallery_detector: Any, spec: Any,
                       gallery: frozenset[str] | set[str], skipped: dict[str, str], *, progress: bool = True,
                       desc: str = "eval") -> Iterator[tuple[Any, np.ndarray, Any, np.ndarray | None]]:
    """(item, image, its one face, annotated points or None) for each item as the evaluation sees it
    (:func:`locate_eval_face`), with a progress bar; an item whose photo cannot be read or shows no
    face goes into ``skipped`` with the reason and is left out."""
    from tqdm import tqdm

    from .errors import LookalikeError

    for item in tqdm(items, unit="img", desc=desc, disable=not progress, dynamic_ncols=True):
        try:
            found = locate_eval_face(item, analyzer, gallery_detector, spec, item.rel_path in gallery)
        except LookalikeError as exc:
            skipped[item.rel_path] = str(exc)
            continue
        if found is None:
            skipped[item.rel_path] = "no face found"
            continue
        yield item, found[0], found[1], found[2]


def embed_dataset(dataset, analyzer, *, limit: int | None = None, progress: bool = True,
                  desc: str = "eval", gallery: frozenset[str] | set[str] = frozenset(),
                  gallery_detector=None) -> EmbeddedSet:
    """Detect, align and embed one face per photo (the annotated one, else the largest), and its
    mirror image. Photos whose relative path is in ``gallery`` are prepared as ``index build``
    prepares them (:func:`lookalike_live.indexing.prepare_face` with ``gallery_detector``), the
    others as the live app sees a face (``analyzer.detect`` on the whole photo). Unreadable photos
    and photos without a face are skipped with the reason."""
    import time

    from .align import align_faces
    from .errors import LookalikeError

    if gallery and gallery_detector is None:
        raise ValueError("embed_dataset: gallery photos need the gallery_detector the index build uses")
    items = list(dataset.items[:limit] if limit else dataset.items)
    vecs: list[np.ndarray] = []
    flips: list[np.ndarray] = []
    quality: list[float] = []
    ids: list[str] = []
    paths: list[str] = []
    skipped: dict[str, str] = {}
    embedder = analyzer.embedder
    t0 = time.perf_counter()
    for item, image, one, points in located_eval_faces(items, analyzer, gallery_detector, embedder.spec, gallery,
                                                       skipped, progress=progress, desc=desc):
        try:
            crops = align_faces(image, one, embedder.spec, points5=points)
        except LookalikeError as exc:
            skipped[item.rel_path] = str(exc)
            continue
        pixels, q = crops.pixels, float(crops.quality[0])
        # the face and its mirror image in one call, each embedded plainly (no built-in flip TTA)
        both = embedder.embed_array(np.concatenate([pixels, pixels[:, :, ::-1]]), flip=False)
        vecs.append(both[0])
        flips.append(both[1])
        quality.append(q)
        ids.append(item.identity)
        paths.append(item.rel_path)
    seconds = time.perf_counter() - t0
    dim = int(getattr(embedder, "dim", 0))
    return EmbeddedSet(np.asarray(vecs, np.float32).reshape(-1, dim) if vecs else np.zeros((0, dim), np.float32),
                       np.asarray(flips, np.float32).reshape(-1, dim) if flips else np.zeros((0, dim), np.float32),
                       np.asarray(quality, np.float32), np.asarray(ids, dtype=str), paths, len(items), skipped,
                       seconds)


def identity_scores(gallery: np.ndarray, gallery_ids: Sequence[str] | np.ndarray, probes: np.ndarray, *,
                    match_by: str = "face", weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Similarity of every probe to every gallery identity: (names (I,), scores (P, I)).

    ``match_by="face"``: an identity's score is its most similar photo's; ``"identity"``: the
    similarity to the identity's centroid (mean of its photos' vectors, weighted by ``weights``
    when given, re-normalised); ``"centred"`` (what the live commands match by default): the same
    after the gallery's mean vector is taken out of every vector (:func:`centred`)."""
    if match_by not in MATCH_BY:
        raise ValueError(f"match_by must be one of {MATCH_BY}, got {match_by!r}")
    names, inverse = np.unique(np.asarray(gallery_ids), return_inverse=True)
    if match_by == "centred":
        mean = np.asarray(gallery, np.float32).mean(axis=0)
        gallery, probes = centred(gallery, mean), centred(probes, mean)
    if match_by != "face":
        from .gallery import mean_directions

        w = None if weights is None else np.maximum(np.asarray(weights, np.float32), 1e-6)
        cent = mean_directions(np.asarray(gallery, np.float32), inverse, len(names), w)
        return names, (probes @ cent.T).astype(np.float32)
    sims = probes @ gallery.T
    out = np.full((len(probes), len(names)), -np.inf, np.float32)
    for j in range(len(names)):
        out[:, j] = sims[:, inverse == j].max(axis=1)
    return names, out


def centred(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``vectors`` minus ``mean`` (the gallery's mean embedding), L2-normalised again: what the
    gallery's centred collection and match_by "centred" do (see
    :func:`lookalike_live.gallery.local_index.centre_vectors`)."""
    from .gallery.local_index import centre_vectors

    return centre_vectors(vectors, mean)


def tpir_at_fpir(top1_correct: np.ndarray, mated_scores: np.ndarray, nonmated_scores: np.ndarray,
                 fpir: float) -> tuple[float, float]:
    """Open-set identification (as NIST FRVT defines it): the threshold at which at most ``fpir``
    of the non-mated probes (people absent from the gallery) are given a name, and the
    true-positive identification rate there: mated probes whose top-1 identity is right *and*
    scores at or above the threshold. ``top1_correct`` and ``mated_scores`` per mated probe,
    ``nonmated_scores`` the top-1 score of each non-mated probe. Returns (tpir, threshold)."""
    if len(nonmated_scores) == 0 or len(mated_scores) == 0:
        raise ValueError("tpir_at_fpir needs mated and non-mated probes")
    thr = _threshold_for_rate(nonmated_scores, fpir)
    return float(np.mean(np.asarray(top1_correct, bool) & (np.asarray(mated_scores) >= thr))), thr


def score_identification(gallery: np.ndarray, gallery_ids: Sequence[str] | np.ndarray, probes: np.ndarray,
                         probe_ids: Sequence[str] | np.ndarray, nonmated: np.ndarray | None = None, *, match_by: str = "face",
                         weights: np.ndarray | None = None, ks: Sequence[int] = (1, 5), far: float = 0.01,
                         fpirs: Sequence[float] = (0.01, 0.1)) -> dict:
    """Closed-set top-k accuracy of ``probes`` against the gallery; the threshold at ``far`` over
    probe-vs-other-identity scores (one comparison's false-accept rate, in the score the live app
    thresholds) with the true-accept rate there; and, given ``nonmated`` probes (distractors),
    open-set TPIR at each FPIR with its threshold (``threshold_at_fpir_<f>``)."""
    names, sc = identity_scores(gallery, gallery_ids, probes, match_by=match_by, weights=weights)
    truth = np.asarray(probe_ids)
    order = np.argsort(-sc, axis=1, kind="stable")
    out: dict = {}
    for k in ks:
        top = names[order[:, :k]]
        out[f"top{k}"] = round(float(np.mean((top == truth[:, None]).any(axis=1))), 4)
    own = names[None, :] == truth[:, None]  # (P, I): the probe's own identity
    thr, tar = threshold_at_far(sc.ravel(), own.ravel(), far)
    out.update(far=far, threshold=round(thr, 4), tar_at_far=round(tar, 4))
    if nonmated is not None and len(nonmated):
        _, nsc = identity_scores(gallery, gallery_ids, nonmated, match_by=match_by, weights=weights)
        correct = names[order[:, 0]] == truth
        best = sc[np.arange(len(sc)), order[:, 0]]
        for f in fpirs:
            tpir, t = tpir_at_fpir(correct, best, nsc.max(axis=1), f)
            out[f"tpir_at_fpir_{f:g}"] = round(tpir, 4)
            out[f"threshold_at_fpir_{f:g}"] = round(t, 4)
        out["nonmated"] = len(nonmated)
    return out


#: (name, flip, match_by, quality_weighted) of each variant that ``evaluate_dataset(study=True)``
#: scores ("centred": identity centroids with the gallery's mean embedding taken out, :func:`centred`)
VARIANTS = (
    ("baseline", False, "face", False),
    ("flip", True, "face", False),
    ("identity", False, "identity", False),
    ("identity+quality", False, "identity", True),
    ("identity, gallery-centred", False, "centred", False),
    ("all", True, "centred", True),
)


def check_distractors(dataset, distractors) -> None:
    """ValueError when a distractor photo is also a photo of ``dataset``."""
    from pathlib import Path

    if distractors is None:
        return
    gallery_files = {Path(i.path).resolve() for i in dataset.items}
    overlap = sorted(p for p in (Path(i.path).resolve() for i in distractors.items) if p in gallery_files)
    if overlap:
        raise ValueError(f"{len(overlap)} distractor photos are also in the dataset (e.g. {overlap[0]}); "
                         "distractors must be people absent from the gallery (or use --holdout-ids)")


def split_dataset(dataset, gallery_per_id: int, holdout_ids: int = 0, limit: int | None = None
                  ) -> tuple[set[str], set[str]]:
    """(relative paths of the gallery photos, identities held out as non-mated probes): per
    identity the first ``gallery_per_id`` photos by file name, the last ``holdout_ids`` identities
    of the dataset held out; made over the photos before any detection."""
    items = list(dataset.items[:limit] if limit else dataset.items)
    item_ids = np.asarray([it.identity for it in items], dtype=str)
    held_ids = set(item_ids[_holdout(item_ids, holdout_ids)].tolist()) if holdout_ids else set()
    in_gallery, _ = split_gallery_queries([it.rel_path for it in items], item_ids, gallery_per_id)
    gallery = {it.rel_path for it, gi in zip(items, in_gallery, strict=True) if gi and it.identity not in held_ids}
    return gallery, held_ids


def _holdout(ids: np.ndarray, n: int) -> np.ndarray:
    """Mask of the rows of the last ``n`` identities (numeric ids in numeric order, then names)."""
    uniq = sorted(set(ids.tolist()), key=lambda s: (0, int(s), "") if s.isdigit() else (1, 0, s))
    if n >= len(uniq):
        raise ValueError(f"--holdout-ids {n} leaves no gallery identities (the dataset has {len(uniq)})")
    return np.isin(ids, uniq[len(uniq) - n:])


def evaluate_dataset(dataset, analyzer, *, gallery_per_id: int = 7, ks: Sequence[int] = (1, 5),
                     limit: int | None = None, far: float = 0.01, progress: bool = True,
                     distractors=None, holdout_ids: int = 0, flip: bool = False, match_by: str = "face",
                     quality_weighted: bool = False, study: bool = False, plots=None, gallery_detector=None) -> dict:
    """Recognition quality of ``analyzer``'s model on a labelled dataset.

    One face per photo (the annotated one, else the largest); per identity the first
    ``gallery_per_id`` photos by file name form the gallery and the rest are mated queries.
    Non-mated probes come from ``distractors`` (a Dataset of people absent from the gallery)
    and/or the last ``holdout_ids`` identities of ``dataset``. Reports closed-set top-k, the
    threshold at ``far``, verification ROC AUC over all photo pairs and, with non-mated probes,
    TPIR at FPIR 1 % and 10 %. ``flip``/``match_by``/``quality_weighted`` choose how faces are
    scored; ``study`` also scores every variant of :data:`VARIANTS` from the same embeddings.
    ``plots``: a folder for PNGs (ROC, genuine vs impostor, PCA map). ``gallery_detector``: the
    detector ``index build`` uses (:func:`lookalike_live.indexing.gallery_detector`); when given,
    gallery photos are prepared exactly as the build prepares them and the queries as the live app
    sees faces; None: every photo through ``analyzer``. The split into gallery and queries is made
    over the dataset's photos before any detection. Unreadable photos and photos without a face
    are counted, never fatal."""
    from pathlib import Path

    check_distractors(dataset, distractors)
    gallery_paths, held_ids = split_dataset(dataset, gallery_per_id, holdout_ids, limit)
    emb = embed_dataset(dataset, analyzer, limit=limit, progress=progress,
                        gallery=gallery_paths if gallery_detector is not None else frozenset(),
                        gallery_detector=gallery_detector)
    out: dict = {"dataset": dataset.name, "model": analyzer.spec.name, "images": emb.images,
                 "faces": len(emb.vectors), "skipped": emb.skipped, "seconds": round(emb.seconds, 2),
                 "images_per_second": round(emb.images / emb.seconds, 2) if emb.seconds > 0 else None,
                 "gallery_detector": repr(gallery_detector) if gallery_detector is not None else "as the queries",
                 "gallery_landmarks": getattr(dataset, "landmarks_file", None)}
    ids = emb.identities
    held = np.isin(ids, sorted(held_ids))
    if len(set(ids[~held].tolist())) < 2:
        raise ValueError(f"{dataset.name}: need faces of at least two identities to evaluate, "
                         f"got {len(set(ids[~held].tolist()))}")
    g = np.fromiter((p in gallery_paths for p in emb.paths), bool, len(emb.paths))
    q = ~g & ~held
    if not q.any():
        raise ValueError(f"no query photos: every identity has <= {gallery_per_id} photos; lower --gallery-per-id")
    dis = None
    if distractors is not None:
        dis = embed_dataset(distractors, analyzer, progress=progress, desc="distractors")
        out.update(distractor_images=dis.images, distractor_skipped=dis.skipped)

    def nonmated(flip_: bool) -> np.ndarray | None:
        parts = [emb.embeddings(flip_)[held]] + ([dis.embeddings(flip_)] if dis is not None else [])
        v = np.concatenate(parts)
        return v if len(v) else None

    def score(flip_: bool, match_by_: str, qw: bool) -> dict:
        v = emb.embeddings(flip_)
        return score_identification(v[g], ids[g], v[q], ids[q], nonmated(flip_), match_by=match_by_,
                                    weights=emb.quality[g] if qw else None, ks=ks, far=far)

    out.update(score(flip, match_by, quality_weighted))
    out["matching"] = {"flip": flip, "match_by": match_by, "quality_weighted": quality_weighted}
    vecs = emb.embeddings(flip)
    scores, same = pair_scores(vecs[~held], ids[~held])
    undetected = [r for r in emb.skipped.values()] + ([r for r in dis.skipped.values()] if dis is not None else [])
    out.update(identities=len(set(ids[~held].tolist())), gallery=int(g.sum()), queries=int(q.sum()),
               roc_auc=round(roc_auc(scores, same), 4), undetected=undetected.count("no face found"))
    if study:
        out["variants"] = [{"name": n, "flip": f, "match_by": m, "quality_weighted": w, **score(f, m, w)}
                           for n, f, m, w in VARIANTS]
    if plots is not None:
        from . import plots as charts

        def comparisons(flip_: bool, match_by_: str) -> tuple[np.ndarray, np.ndarray]:
            """Every query against every gallery identity: (score, same identity)."""
            v = emb.embeddings(flip_)
            names, sc = identity_scores(v[g], ids[g], v[q], match_by=match_by_)
            return sc.ravel(), (names[None, :] == ids[q][:, None]).ravel()

        folder = Path(plots)
        title = f"{out['model']} on {dataset.name}"
        curves = {"nearest photo": comparisons(False, "face"), "nearest photo, flip TTA": comparisons(True, "face"),
                  "identity centroid": comparisons(False, "identity"),
                  "identity centroid, flip TTA": comparisons(True, "identity"),
                  "gallery-centred centroid": comparisons(False, "centred")}
        scores_mine, same_mine = comparisons(flip, match_by)
        out["plots"] = [
            str(charts.plot_roc(curves, folder / "roc.png", title=f"ROC, query vs gallery identity: {title}")),
            str(charts.plot_score_histograms(scores_mine, same_mine, folder / "scores.png", threshold=out["threshold"],
                                             title=f"Genuine vs impostor ({match_by} matching): {title}")),
            str(charts.plot_pca_map(vecs[~held], ids[~held], folder / "pca.png",
                                    title=f"Embeddings, PCA 2-D: {title}")),
        ]
    return out


# --------------------------------------------------------------------------- verification (LFW pairs)
def parse_lfw_pairs(path, images_dir, ext: str = ".jpg") -> list[list[tuple]]:
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


def verify_pairs(folds: list[list[tuple]], analyzer, *, progress: bool = True) -> dict:
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
