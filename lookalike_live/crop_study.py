"""Which crop of a detected face gives an embedder its best identification: ``eval crops``.

Every photo is read and its face detected once (gallery photos as ``index build`` prepares them,
queries and distractors as the live app sees faces); each crop variant is then cut from the same
image and face, and all variants of a photo (and their mirror images) are embedded in one batch,
so the variants differ only in the crop. Each is scored as ``eval identify`` scores a model: top-1
and top-5 identification, and open-set TPIR at FPIR 1 % and 10 % against people absent from the
gallery, with and without flip test-time augmentation.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from .evaluation import check_distractors, located_eval_faces, score_identification, split_dataset

#: (name, alignment settings) of each crop variant scored by default. "box": the detector's box,
#: enlarged by ``margin``; "aspect": the box's own aspect stretched to the square input;
#: "taller": the square made ``aspect`` times taller than wide, squeezed into the square input
#: (the shape of the MTCNN boxes FaceNet was trained on); "on keypoints": the square centred on the eyes, nose and mouth; "5-point": the similarity
#: transform of the eyes, nose and mouth onto the ArcFace template scaled about the crop centre;
#: "upright": the box turned by the eye line's angle.
CROP_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("box, margin 0.0", {"method": "box", "margin": 0.0}),
    ("box, margin 0.1", {"method": "box", "margin": 0.1}),
    ("box, margin 0.15", {"method": "box", "margin": 0.15}),
    ("box, margin 0.2", {"method": "box", "margin": 0.2}),
    ("box, margin 0.3", {"method": "box", "margin": 0.3}),
    ("box, margin 0.4", {"method": "box", "margin": 0.4}),
    ("box, margin 0.5", {"method": "box", "margin": 0.5}),
    ("box x1.1 taller, margin 0.2", {"method": "box", "margin": 0.2, "aspect": 1.1}),
    ("box x1.2 taller, margin 0.2", {"method": "box", "margin": 0.2, "aspect": 1.2}),
    ("box x1.3 taller, margin 0.2", {"method": "box", "margin": 0.2, "aspect": 1.3}),
    ("box x1.2 taller, margin 0.1", {"method": "box", "margin": 0.1, "aspect": 1.2}),
    ("box x1.2 taller, margin 0.3", {"method": "box", "margin": 0.3, "aspect": 1.2}),
    ("box aspect, margin 0.2", {"method": "box", "margin": 0.2, "square": False}),
    ("box aspect, margin 0.4", {"method": "box", "margin": 0.4, "square": False}),
    ("box on keypoints, margin 0.2", {"method": "box", "margin": 0.2, "center": "keypoints"}),
    ("box on keypoints, margin 0.4", {"method": "box", "margin": 0.4, "center": "keypoints"}),
    ("box upright, margin 0.1", {"method": "box", "margin": 0.1, "upright": True}),
    ("box upright, margin 0.2", {"method": "box", "margin": 0.2, "upright": True}),
    ("5-point template x1.0", {"method": "arcface5", "template_scale": 1.0}),
    ("5-point template x0.85", {"method": "arcface5", "template_scale": 0.85}),
    ("5-point template x0.7", {"method": "arcface5", "template_scale": 0.7}),
)


#: (name, variants averaged): crop ensembles, each face embedded once per crop and the
#: embeddings summed (test-time augmentation at the cost of one embedding per crop).
ENSEMBLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ensemble: box 0.1 + 0.2", ("box, margin 0.1", "box, margin 0.2")),
    ("ensemble: box 0.1 + 0.2 + 0.3", ("box, margin 0.1", "box, margin 0.2", "box, margin 0.3")),
    ("ensemble: box 0.2 + 5-point x1.0", ("box, margin 0.2", "5-point template x1.0")),
)


def _embed_variants(items: list, analyzer: Any, gallery_detector: Any, specs: list, gallery: set[str],
                    progress: bool, desc: str) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, str]]:
    """(V, N, D) plain and (V, N, D) mirrored embeddings of every variant, the identities, skips."""

    from .align import align_faces

    embedder = analyzer.embedder
    plain: list[np.ndarray] = []
    mirrored: list[np.ndarray] = []
    ids: list[str] = []
    skipped: dict[str, str] = {}
    for item, image, one, _ in located_eval_faces(items, analyzer, gallery_detector, specs[0], gallery, skipped,
                                                  progress=progress, desc=desc):
        crops = np.concatenate([align_faces(image, one, s).pixels for s in specs])  # (V, S, S, 3)
        both = embedder.embed_array(np.concatenate([crops, crops[:, :, ::-1]]), flip=False)
        plain.append(both[: len(specs)])
        mirrored.append(both[len(specs):])
        ids.append(item.identity)
    dim = int(embedder.dim)
    if not plain:
        empty = np.zeros((len(specs), 0, dim), np.float32)
        return empty, empty, ids, skipped
    return np.stack(plain, axis=1), np.stack(mirrored, axis=1), ids, skipped


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def crop_study(dataset: Any, analyzer: Any, gallery_detector: Any, *, gallery_per_id: int = 8,
               holdout_ids: int = 0, distractors: Any = None, limit: int | None = None, match_by: str = "centred",
               variants: tuple[tuple[str, dict[str, Any]], ...] = CROP_VARIANTS, progress: bool = True) -> dict:
    """Score each crop variant of ``analyzer``'s embedder (see the module doc) and each of
    :data:`ENSEMBLES`; the result's ``variants`` rows hold ``name``, ``alignment``, ``flip`` and the
    scores, ``best`` the single crop (without flip) with the highest TPIR at FPIR 1 % (then top-1),
    ``current`` the spec's own."""
    check_distractors(dataset, distractors)
    spec = analyzer.embedder.spec
    specs = [dataclasses.replace(spec, alignment=dataclasses.replace(spec.alignment, **{
        "margin": 0.2, "square": True, "center": "box", "upright": False, "template_scale": 1.0, "aspect": 1.0,
        **a})) for _, a in variants]
    gallery, held_ids = split_dataset(dataset, gallery_per_id, holdout_ids, limit)
    items = list(dataset.items[:limit] if limit else dataset.items)
    t0 = time.perf_counter()
    vec, flip, ids_list, skipped = _embed_variants(items, analyzer, gallery_detector, specs, gallery, progress, "crops")
    ids = np.asarray(ids_list, dtype=str)
    paths = [it.rel_path for it in items if it.rel_path not in skipped]
    g = np.fromiter((p in gallery for p in paths), bool, len(paths))
    held = np.isin(ids, sorted(held_ids))
    q = ~g & ~held
    if not q.any() or not g.any():
        raise ValueError("the crop study needs gallery and query photos: lower --gallery-per-id")
    dvec = dflip = None
    if distractors is not None:
        dvec, dflip, _, dskipped = _embed_variants(list(distractors.items), analyzer, gallery_detector, specs, set(),
                                                   progress, "distractors")
        skipped.update({f"distractors/{k}": v for k, v in dskipped.items()})
    names = [n for n, _ in variants]
    scored = [(name, [i], {k: getattr(specs[i].alignment, k) for k in a}) for i, (name, a) in enumerate(variants)]
    scored += [(name, [names.index(p) for p in parts], {"ensemble": list(parts)})
               for name, parts in ENSEMBLES if all(p in names for p in parts)]
    rows = []
    for name, which, alignment in scored:
        for use_flip in (False, True):
            def pick(plain: np.ndarray, mirror: np.ndarray, use: bool = use_flip, sel: list = which) -> np.ndarray:
                """The crops ``sel`` (and their mirror images with flip TTA) summed, re-normalised."""
                return _unit(plain[sel].sum(axis=0) + (mirror[sel].sum(axis=0) if use else 0))
            v = pick(vec, flip)
            parts = [v[held]] + ([pick(dvec, dflip)] if dvec is not None and dflip is not None else [])
            nonmated = np.concatenate(parts)
            res = score_identification(v[g], ids[g].tolist(), v[q], ids[q].tolist(),
                                       nonmated if len(nonmated) else None, match_by=match_by)
            rows.append({"name": name, "alignment": alignment, "flip": use_flip, **res})
    plain = [r for r in rows if not r["flip"]]
    single = plain[: len(variants)]  # one crop each: what a spec's [alignment] can say
    key = "tpir_at_fpir_0.01" if "tpir_at_fpir_0.01" in plain[0] else "top1"
    best = max(single, key=lambda r: (r[key], r["top1"]))
    al = spec.alignment
    current = next((r["name"] for r, s in zip(single, specs, strict=True) if s.alignment == al), None)
    return {"model": spec.name, "dataset": dataset.name, "match_by": match_by, "images": len(items),
            "gallery": int(g.sum()), "queries": int(q.sum()), "nonmated": int(held.sum()) + (
                0 if dvec is None else dvec.shape[1]),
            "skipped": skipped, "seconds": round(time.perf_counter() - t0, 1),
            "variants": rows, "best": best["name"], "current": current}
