"""Identity centroids computed from Milvus (two passes over the faces collection), for galleries
without an in-process snapshot (a Milvus server). With one, LocalIndex.identity_rows does it in
memory; both pick the same representative photo (local_index.REP_TIE)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .common import identity_id
from .local_index import centre_vectors, rep_key


def centroid_rows(iterate: Callable[[list[str], int], Iterable[list[dict[str, Any]]]], dim: int,
                  batch_size: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Identity rows from two passes over the faces collection (``iterate(fields, batch_size)``
    yields its rows), and the gallery's mean vector: the sums of each identity's vectors (and of
    all), then its representative face (the one nearest the centroid; a tie to the smaller id, as
    :func:`identity_centroids` breaks it) and its gallery-centred centroid (``"centred"``, as
    :func:`~lookalike_live.gallery.local_index.centred_centroids` makes it)."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    display: dict[str, str] = {}
    for batch in iterate(["vector", "identity", "name"], batch_size):
        v = np.asarray([r["vector"] for r in batch], np.float32)
        s, c, d = accumulate_identities(v, [r["identity"] for r in batch], [r["name"] for r in batch], dim)
        for key, val in s.items():
            if key in sums:
                sums[key] += val
                counts[key] += c[key]
            else:
                sums[key], counts[key], display[key] = val, c[key], d[key]
    cent = {k: (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32) for k, v in sums.items()}
    total = sum(counts.values())
    mean = (np.sum(list(sums.values()), axis=0) / total if total else np.zeros(dim)).astype(np.float32)
    best: dict[str, tuple[tuple[float, int], int, str, str]] = {}
    centred: dict[str, np.ndarray] = {}
    for batch in iterate(["vector", "identity", "dataset", "image_path"], batch_size):
        batch = [r for r in batch if r["identity"] in cent]  # written between the passes: next rebuild
        if not batch:
            continue
        v = np.asarray([r["vector"] for r in batch], np.float32)
        unit = centre_vectors(v, mean)
        for i, r in enumerate(batch):
            key = r["identity"]
            centred[key] = centred[key] + unit[i] if key in centred else unit[i].astype(np.float64)
            rank = (float(rep_key(float(np.dot(v[i], cent[key])))), -int(r["id"]))  # nearest; tie: smaller id
            if key not in best or rank > best[key][0]:
                best[key] = (rank, int(r["id"]), str(r["dataset"]), str(r["image_path"]))
    rows = [{"id": identity_id(k), "vector": cent[k], "identity": k, "name": display[k], "count": counts[k],
             "face_id": best[k][1], "dataset": best[k][2], "image_path": best[k][3],
             "centred": (centred[k] / max(float(np.linalg.norm(centred[k])), 1e-12)).astype(np.float32)}
            for k in cent if k in best]
    return rows, mean


def accumulate_identities(vecs: np.ndarray, idents: Sequence[str], names: Sequence[str], dim: int
                ) -> tuple[dict[str, np.ndarray], dict[str, int], dict[str, str]]:
    codes: dict[str, int] = {}
    labels = np.fromiter((codes.setdefault(s, len(codes)) for s in idents), np.int64, len(idents))
    sums = np.zeros((len(codes), dim), np.float64)
    np.add.at(sums, labels, vecs)
    counts = np.bincount(labels, minlength=len(codes))
    display: dict[str, str] = {}
    for ident, nm in zip(idents, names, strict=True):
        display.setdefault(ident, nm)
    return ({s: sums[c] for s, c in codes.items()}, {s: int(counts[c]) for s, c in codes.items()}, display)
