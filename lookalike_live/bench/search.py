"""Gallery search benchmark: insert, index, latency at nq=1 and nq=8, recall@1 against exact search.

Synthetic vectors "clustered like faces" (:func:`synthetic_faces`): ``identities`` random unit
centres, each face = centre + a shared low-rank "nuisance" part (pose, light: 32 directions common
to all identities) + isotropic noise, L2-normalised. Faces of one identity then have cosine ~0.63
with each other and ~0 with other identities, like FaceNet embeddings of CelebA; queries are new
faces of gallery identities (not gallery vectors). Recall@1 is the fraction of queries whose top
hit is the exact (numpy) nearest gallery face; ``identity_recall@1`` whether its identity matches.

Backends (``uris``: name -> Milvus URI; default: a Milvus Lite file in a temp dir, plus a
``milvus-server`` started from the venv when ``with_server``, via the repository's
tests/milvus_server.py):

* Milvus Lite is measured twice: through :class:`~lookalike_live.gallery.Gallery` as the product
  uses it (its in-process :class:`~lookalike_live.gallery.LocalIndex`), and Lite's own search
  (``local_index=False``) for reference.
* a Milvus server through ``Gallery`` (HNSW in Milvus), at the default ``ef`` and at each of
  ``server_efs`` (search-time HNSW breadth: recall against latency).

Latency is measured once it is steady (:func:`_settle`, recorded under ``settle``).

Each backend is also measured searching identity centroids: the centroids are built
(:meth:`~lookalike_live.gallery.Gallery.rebuild_centroids`) and searched plain (``match_by=
"identity"``, ``search_identity``) and gallery-centred as live matching does by default
(``match_by="centred"``, ``search_centred``), each with recall@1 against exact numpy search over
the same centroids.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

COLLECTION = "bench_search"


def synthetic_faces(n: int, dim: int = 512, identities: int = 10_177, seed: int = 0, queries: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(gallery (n, dim) float32, gallery labels (n,), queries (queries, dim), query labels)."""
    rng = np.random.default_rng(seed)
    identities = max(1, min(identities, n))
    centres = rng.standard_normal((identities, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    r = min(32, dim)
    basis = np.linalg.qr(rng.standard_normal((dim, r)).astype(np.float32))[0].T.astype(np.float32)

    def draw(labels: np.ndarray) -> np.ndarray:
        x = centres[labels].copy()
        x += (rng.standard_normal((len(labels), r), dtype=np.float32) * np.float32(0.6 / np.sqrt(r))) @ basis
        x += rng.standard_normal((len(labels), dim), dtype=np.float32) * np.float32(0.5 / np.sqrt(dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    labels = rng.permutation(np.arange(n) % identities)
    gallery = np.empty((n, dim), np.float32)
    for s in range(0, n, 50_000):
        gallery[s : s + 50_000] = draw(labels[s : s + 50_000])
    qlabels = rng.integers(0, identities, queries)
    return gallery, labels, draw(qlabels), qlabels


def exact_top1(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.concatenate([np.argmax(queries[s : s + 64] @ gallery.T, axis=1) for s in range(0, len(queries), 64)])


def _pct(values: list[float]) -> dict[str, Any]:
    a = np.asarray(values) * 1e3
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "samples": len(values), "samples_ms": [round(float(x), 3) for x in a]}


def _nq8_latencies(gallery: Any, queries: np.ndarray, match_by: str = "face") -> list[float]:
    """Seconds of each search of 8 consecutive queries (each query once)."""
    lat = []
    for s in range(0, len(queries) - 7, 8):
        t0 = time.perf_counter()
        gallery.search(queries[s : s + 8], k=1, match_by=match_by)
        lat.append(time.perf_counter() - t0)
    return lat


def _timed_searches(gallery: Any, queries: np.ndarray, match_by: str = "face") -> tuple[list[float], list[Any], list[float]]:
    """After a warm-up: (seconds of each nq=1 search, its top match or None, seconds of each nq=8 search)."""
    gallery.search(queries[:8], k=1, match_by=match_by)  # warm-up
    lat1, top = [], []
    for i in range(len(queries)):
        t0 = time.perf_counter()
        res = gallery.search(queries[i : i + 1], k=1, match_by=match_by)
        lat1.append(time.perf_counter() - t0)
        top.append(res[0][0] if res and res[0] else None)
    return lat1, top, _nq8_latencies(gallery, queries, match_by)


def _settle(gallery: Any, queries: np.ndarray, max_s: float = 300.0, tolerance: float = 0.1) -> dict[str, Any]:
    """Search (nq=8) until latency is steady: two consecutive rounds whose medians are within
    ``tolerance`` of each other, at most ``max_s``. A Milvus server keeps working after its index
    is built (compaction, handing indexed segments to the query node): measured on 2 cores, nq=8
    went from ~23 ms right after indexing to ~16 ms some minutes later at the same ef."""
    t0 = time.perf_counter()
    medians: list[float] = []
    while True:
        medians.append(float(np.median(_nq8_latencies(gallery, queries[:200]))) * 1e3)
        steady = len(medians) >= 2 and abs(medians[-1] - medians[-2]) <= tolerance * medians[-2]
        if steady or time.perf_counter() - t0 > max_s:
            break
        if len(medians) >= 2:
            time.sleep(5.0)  # let background work finish rather than compete with it
    return {"settle_s": round(time.perf_counter() - t0, 1), "rounds_nq8_p50_ms": [round(m, 2) for m in medians],
            "steady": bool(steady)}


def _measure(gallery: Any, queries: np.ndarray, gt: np.ndarray, labels: np.ndarray, qlabels: np.ndarray,
             ids: np.ndarray, limit: int | None = None) -> dict[str, Any]:
    """Latency at nq=1 and nq=8 (each query once), recall@1 over all queries."""
    q = queries if limit is None else queries[:limit]
    lat1, top, lat8 = _timed_searches(gallery, q)
    got = [m.face_id if m is not None else -1 for m in top]
    pos = {int(f): i for i, f in enumerate(ids.tolist())}
    rows = np.array([pos.get(int(f), -1) for f in got])
    hit = rows == gt[: len(q)]
    return {
        "nq1": _pct(lat1), "nq8": _pct(lat8) if lat8 else None,
        "recall@1": round(float(hit.mean()), 4),
        "identity_recall@1": round(float((labels[rows] == labels[gt[: len(q)]]).mean()), 4),
        "query_identity_accuracy@1": round(float((labels[rows] == qlabels[: len(q)]).mean()), 4),
    }


def exact_identity_top1(vecs: np.ndarray, labels: np.ndarray, queries: np.ndarray, centred: bool = False) -> np.ndarray:
    """The label of each query's nearest identity centroid (normalised mean of its vectors), or
    with ``centred`` its nearest gallery-centred centroid (the query centred on the same mean)."""
    from ..gallery.local_index import centre_vectors, centred_centroids, mean_directions

    n_ids = int(labels.max()) + 1
    if centred:
        mean, cent = centred_centroids(vecs, labels, n_ids)
        return np.argmax(centre_vectors(queries, mean) @ cent.T, axis=1)
    return np.argmax(queries @ mean_directions(vecs, labels, n_ids).T, axis=1)


def _measure_identity(gallery: Any, queries: np.ndarray, gt: np.ndarray, qlabels: np.ndarray,
                      match_by: str = "identity") -> dict[str, Any]:
    """Identity-centroid search (``match_by`` "identity" or "centred"): latency at nq=1 and nq=8,
    and recall@1 against ``gt``, exact numpy search over the same centroids."""
    lat1, top, lat8 = _timed_searches(gallery, queries, match_by=match_by)
    got_a = np.asarray([int(m.identity) if m is not None else -1 for m in top])
    return {"nq1": _pct(lat1), "nq8": _pct(lat8) if lat8 else None,
            "recall@1": round(float((got_a == gt).mean()), 4),
            "query_identity_accuracy@1": round(float((got_a == qlabels[: len(got_a)]).mean()), 4)}


def _insert(gallery: Any, vecs: np.ndarray, labels: np.ndarray, ids: np.ndarray, batch: int,
            thumbnails: bool) -> float:
    rng = np.random.default_rng(1)
    n = len(vecs)
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        e = min(n, s + batch)
        ident = [str(v) for v in labels[s:e].tolist()]
        thumbs = ([b"\xff\xd8" + rng.bytes(3000) for _ in range(e - s)] if thumbnails else None)
        gallery.upsert_faces(ids[s:e], vecs[s:e], ident, [f"Celebrity {v}" for v in ident], "synthetic",
                             [f"img/{i:06d}.jpg" for i in range(s, e)],
                             bbox=np.tile(np.array([[10, 10, 90, 110]], np.float32), (e - s, 1)),
                             quality=np.full(e - s, 0.8, np.float32), thumbnail=thumbs)
        if (s // batch) % 20 == 0:
            log.info("inserted %d / %d (%.0f s)", e, n, time.perf_counter() - t0)
    return time.perf_counter() - t0


def _bench_backend(name: str, uri: str, vecs: np.ndarray, labels: np.ndarray, queries: np.ndarray,
                   qlabels: np.ndarray, gt: np.ndarray, ids: np.ndarray, batch: int, thumbnails: bool,
                   native_lite_queries: int, server_efs: tuple[int, ...] = (),
                   gt_identity: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    from ..gallery import Gallery

    out: dict[str, Any] = {"uri": uri}
    with Gallery(uri, collection=COLLECTION, timeout=60) as g:
        out["local_index"] = g.local_index_enabled
        g.drop()
        g.ensure(dim=vecs.shape[1], model="synthetic")
        out["insert_s"] = round(_insert(g, vecs, labels, ids, batch, thumbnails), 1)
        out["insert_rows_per_s"] = round(len(vecs) / out["insert_s"], 1)
        if g.is_lite and native_lite_queries:
            # Lite's own search right after the insert (memtable + segments still being indexed)
            with Gallery(uri, collection=COLLECTION, local_index=False, timeout=120) as raw:
                out["lite_native_after_insert"] = _measure(raw, queries, gt, labels, qlabels, ids,
                                                           limit=native_lite_queries)
        t0 = time.perf_counter()
        g.wait_for_index(timeout=3600)
        out["flush_and_index_s"] = round(time.perf_counter() - t0, 1)
        if g.local_index_enabled:
            t0 = time.perf_counter()
            g.warm_local_index()
            out["local_index_build_and_save_s"] = round(time.perf_counter() - t0, 1)
        out["stats"] = {k: v for k, v in g.stats().items() if k in ("faces", "index", "local_index", "server_version")}
        out["settle"] = _settle(g, queries)
        out["search"] = _measure(g, queries, gt, labels, qlabels, ids)
        # the identity centroids, plain and gallery-centred (what live matching searches by default)
        if gt_identity is None:
            gt_identity = (exact_identity_top1(vecs, labels, queries), exact_identity_top1(vecs, labels, queries, True))
        t0 = time.perf_counter()
        out["centroids"] = g.rebuild_centroids()
        for coll in (g.identities_collection, g.centred_collection):
            g.wait_for_index(timeout=3600, collection=coll)
        out["centroids_build_s"] = round(time.perf_counter() - t0, 1)
        out["search_identity"] = _measure_identity(g, queries, gt_identity[0], qlabels)
        out["search_centred"] = _measure_identity(g, queries, gt_identity[1], qlabels, "centred")
        out["ef"] = g.ef if not g.local_index_enabled else None
        if not g.local_index_enabled and server_efs:
            default_ef = g.ef
            out["search_by_ef"] = {}
            for ef in server_efs:
                g.ef = ef
                out["search_by_ef"][str(ef)] = _measure(g, queries, gt, labels, qlabels, ids)
            g.ef = default_ef
    if out["local_index"]:
        t0 = time.perf_counter()
        with Gallery(uri, collection=COLLECTION, timeout=120) as g:
            g.search(queries[:1], k=1)
            out["reopen_to_first_search_s"] = round(time.perf_counter() - t0, 1)
            if native_lite_queries:
                with Gallery(uri, collection=COLLECTION, local_index=False, timeout=120) as raw:
                    raw.search(queries[:1], k=1)  # let Lite finish loading its segment indexes
                    out["lite_native_indexed"] = _measure(raw, queries, gt, labels, qlabels, ids,
                                                          limit=native_lite_queries)
    log.info("%s: %s", name, out)
    return out


@contextlib.contextmanager
def _milvus_server(work: Path) -> Iterator[str]:
    """Start ``milvus-server`` through the repository's tests/milvus_server.py helper."""
    tests = Path(__file__).resolve().parents[2] / "tests"
    sys.path.insert(0, str(tests))
    try:
        from milvus_server import MilvusServer
    finally:
        sys.path.remove(str(tests))
    server = MilvusServer(work / "milvus-server")
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


def run(n: int = 202_599, dim: int = 512, queries: int = 200, uris: dict[str, str] | None = None, *,
        identities: int = 10_177, with_server: bool = True, batch: int = 2000, thumbnails: bool = True,
        native_lite_queries: int = 16, server_efs: tuple[int, ...] = (48, 64, 80, 96, 128), seed: int = 0,
        work_dir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns JSON-serialisable figures per backend (see the module docstring)."""
    t_all = time.perf_counter()
    identities = max(1, round(identities * n / 202_599)) if n < 202_599 else identities
    vecs, labels, q, qlabels = synthetic_faces(n, dim, identities, seed=seed, queries=queries)
    ids = np.arange(1, n + 1, dtype=np.int64) * 7919  # any unique non-negative ids
    gt = exact_top1(vecs, q)
    gt_identity = (exact_identity_top1(vecs, labels, q), exact_identity_top1(vecs, labels, q, centred=True))
    result: dict[str, Any] = {"n": n, "dim": dim, "identities": identities, "queries": queries,
                              "thumbnails": thumbnails, "backends": {}}
    tmp = Path(tempfile.mkdtemp(prefix="lookalike-bench-search-", dir=work_dir))
    try:
        targets = dict(uris) if uris else {"milvus-lite": str(tmp / "gallery.db")}
        for name, uri in targets.items():
            result["backends"][name] = _bench_backend(name, uri, vecs, labels, q, qlabels, gt, ids, batch,
                                                      thumbnails, native_lite_queries, server_efs, gt_identity)
        if uris is None and with_server:
            try:
                with _milvus_server(tmp) as uri:
                    result["backends"]["milvus-server"] = _bench_backend(
                        "milvus-server", uri, vecs, labels, q, qlabels, gt, ids, batch, thumbnails, 0, server_efs,
                        gt_identity)
            except Exception as exc:  # noqa: BLE001 - report, keep the Lite figures
                log.warning("milvus-server benchmark skipped: %s", exc)
                result["backends"]["milvus-server"] = {"skipped": str(exc)[:500]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    return result


if __name__ == "__main__":  # python -m lookalike_live.bench.search [N]
    import json

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sys.stdout.write(json.dumps(run(n=int(sys.argv[1]) if len(sys.argv) > 1 else 202_599), indent=2) + "\n")
