"""Identity centroids computed from Milvus (two passes over the faces collection), for galleries
without an in-process snapshot (a Milvus server). With one, LocalIndex.identity_rows does it in
memory; both pick the same representative photo (local_index.REP_TIE)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .common import identity_id
from .local_index import rep_key


def centroid_rows(iterate: Callable[[list[str], int], Iterable[list[dict[str, Any]]]], dim: int,
                  batch_size: int) -> list[dict[str, Any]]:
    """Identity rows from two passes over the faces collection (``iterate(fields, batch_size)``
    yields its rows): the sums of each identity's vectors, then its representative face (the one
    nearest the centroid; a tie to the smaller id, as :func:`identity_centroids` breaks it)."""
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
    best: dict[str, tuple[tuple[float, int], int, str, str]] = {}
    for batch in iterate(["vector", "identity", "dataset", "image_path"], batch_size):
        for r in batch:
            if r["identity"] not in cent:  # written between the two passes: in the next rebuild
                continue
            sim = float(np.dot(np.asarray(r["vector"], np.float32), cent[r["identity"]]))
            rank = (float(rep_key(sim)), -int(r["id"]))  # the nearest; a tie to the smaller id
            if r["identity"] not in best or rank > best[r["identity"]][0]:
                best[r["identity"]] = (rank, int(r["id"]), str(r["dataset"]), str(r["image_path"]))
    return [{"id": identity_id(k), "vector": cent[k], "identity": k, "name": display[k], "count": counts[k],
             "face_id": best[k][1], "dataset": best[k][2], "image_path": best[k][3]} for k in cent if k in best]


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
