"""The in-process snapshot of a faces collection: vectors, display fields and thumbnails in
memory, searched exactly or as an IVF over the identity centroids (see :class:`LocalIndex`)."""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import faults
from ..types import Match
from .common import GalleryMatch, identity_id

log = logging.getLogger("lookalike_live.gallery")

#: thumbnails kept besides the identities' representatives (face matching, new representatives):
#: ~4 KB each, so ~16 MB at most
THUMBNAIL_CACHE = 4096


class LocalIndex:
    """In-process copy of a faces collection's vectors and display fields, for fast search.

    Below ``exact_max`` rows it searches exactly (one matrix product). Above, it is an IVF whose
    coarse centroids are the identity centroids (mean of each identity's vectors): each face sits
    in the list of its nearest centroid, a query scans the ``nprobe`` nearest lists and re-ranks
    their faces exactly. Faces of an identity are tight around its centroid, so a handful of lists
    holds the true nearest face (recall@1 1.0 at nprobe 16 on 202,599 x 512 clustered vectors).
    Galleries with nearly one face per identity fall back to exact search.

    It also holds thumbnails (JPEG bytes), so a search answers with the matched photo without
    asking Milvus: every identity's representative (the photo identity matching answers with;
    :meth:`pin_representatives`, persisted with the index) and up to ``THUMBNAIL_CACHE`` others,
    least recently used first out (:meth:`keep_thumbnails`).

    Thread-safe: writes and reads take one lock; searches take ~1-3 ms (numpy, releases the GIL).
    """

    FORMAT = 1

    def __init__(self, dim: int, nprobe: int = 16, exact_max: int = 32768) -> None:
        self.dim = int(dim)
        self.nprobe = int(nprobe)
        self.exact_max = int(exact_max)
        self.generation = ""
        self.model = ""
        self.dirty = False
        self._lock = threading.RLock()
        self._n = 0
        self._vecs = np.empty((0, self.dim), np.float32)
        self._ids = np.empty((0,), np.int64)
        self._identity: list[str] = []
        self._name: list[str] = []
        self._dataset: list[str] = []
        self._path: list[str] = []
        self._pos: dict[int, int] = {}
        # IVF state (None: exact search)
        self._centroids: np.ndarray | None = None
        self._assign = np.empty((0,), np.int32)
        self._order: np.ndarray | None = None
        self._offsets: np.ndarray | None = None
        self._built_n = 0
        # per identity (first-seen order): key, centroid, representative row, face count
        self._ident: tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None = None
        # the gallery's mean vector and each identity's gallery-centred centroid (same order)
        self._centred: tuple[np.ndarray, np.ndarray] | None = None
        # thumbnails by face id (None: the face has none): pinned (representatives) and recent
        self._thumbs: dict[int, bytes | None] = {}
        self._recent: collections.OrderedDict[int, bytes | None] = collections.OrderedDict()
        self.thumbnail_cache = THUMBNAIL_CACHE

    # -- sizes
    def __len__(self) -> int:
        return self._n

    @property
    def mode(self) -> str:
        return "exact" if self._centroids is None else f"ivf({len(self._centroids)} lists, nprobe {self.nprobe})"

    def _reserve(self, n: int) -> None:
        cap = len(self._vecs)
        if n <= cap:
            return
        new_cap = max(n, int(cap * 1.5), 1024)
        vecs = np.empty((new_cap, self.dim), np.float32)
        vecs[: self._n] = self._vecs[: self._n]
        ids = np.empty((new_cap,), np.int64)
        ids[: self._n] = self._ids[: self._n]
        assign = np.full((new_cap,), -1, np.int32)
        assign[: self._n] = self._assign[: self._n]
        self._vecs, self._ids, self._assign = vecs, ids, assign

    # -- writes
    def upsert(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray, identity: Sequence[str],
               name: Sequence[str], dataset: Sequence[str], image_path: Sequence[str]) -> None:
        """Add or replace rows; ``vectors`` must already be L2-normalised (N, dim) float32."""
        ids = np.asarray(ids, np.int64)
        with self._lock:
            new_rows = [i for i, fid in enumerate(ids.tolist()) if fid not in self._pos]
            self._reserve(self._n + len(new_rows))
            rows = np.empty(len(ids), np.int64)
            for i, fid in enumerate(ids.tolist()):
                pos = self._pos.get(fid)
                if pos is None:
                    pos = self._n
                    self._n += 1
                    self._pos[fid] = pos
                    self._identity.append(identity[i])
                    self._name.append(name[i])
                    self._dataset.append(dataset[i])
                    self._path.append(image_path[i])
                else:
                    self._identity[pos], self._name[pos] = identity[i], name[i]
                    self._dataset[pos], self._path[pos] = dataset[i], image_path[i]
                    self._thumbs.pop(fid, None)  # its photo may have changed too
                    self._recent.pop(fid, None)
                rows[i] = pos
            self._vecs[rows] = vectors
            self._ids[rows] = ids
            if self._centroids is not None:
                self._assign[rows] = np.argmax(vectors @ self._centroids.T, axis=1).astype(np.int32)
                self._order = None  # lists rebuilt lazily
            self._ident = None
            self._centred = None
            self.dirty = True

    # -- IVF maintenance
    def _needs_rebuild(self) -> bool:
        if self._n <= self.exact_max:
            return self._centroids is not None
        # (re)build when first over exact_max and after 50% growth, not on every search when the
        # identities did not allow an IVF (exact search then)
        return self._built_n == 0 or self._n > 1.5 * self._built_n

    def _rebuild(self) -> None:
        t0 = time.perf_counter()
        n = self._n
        self._built_n = n
        if n <= self.exact_max:
            self._centroids, self._order, self._offsets = None, None, None
            return
        keys, cent, _, _ = self._identity_table()  # the lists' centres are the identity centroids
        n_lists = len(keys)
        if n_lists < 2 or n_lists > n // 4:
            log.info("local index: %d identities for %d faces: too few or too many lists, exact search",
                     n_lists, n)
            self._centroids, self._order, self._offsets = None, None, None
            return
        self._centroids = np.ascontiguousarray(cent, np.float32)
        step = max(1, (64 << 20) // (4 * n_lists))  # ~64 MB of similarities per chunk
        for s in range(0, n, step):
            e = min(n, s + step)
            self._assign[s:e] = np.argmax(self._vecs[s:e] @ self._centroids.T, axis=1)
        self._order = None
        self.dirty = True
        log.info("local index: IVF over %d identity centroids for %d faces built in %.1f s",
                 n_lists, n, time.perf_counter() - t0)

    def _lists(self) -> tuple[np.ndarray, np.ndarray]:
        if self._order is None or self._offsets is None:
            n_lists = 0 if self._centroids is None else len(self._centroids)
            assign = self._assign[: self._n]
            self._order = np.argsort(assign, kind="stable").astype(np.int64)
            self._offsets = np.searchsorted(assign[self._order], np.arange(n_lists + 1))
        return self._order, self._offsets

    def prepare(self) -> None:
        """Build the IVF and the identity table now if needed (otherwise the next search does)."""
        with self._lock:
            if self._needs_rebuild():
                self._rebuild()
            if self._centroids is not None:
                self._lists()
            self._identity_table()

    def _identity_table(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Per identity: (keys, centroids (I, dim), row of the representative face (I,), face
        counts (I,)); rebuilt after writes. Call with the lock held."""
        if self._ident is None:
            t0 = time.perf_counter()
            n = self._n
            codes: dict[str, int] = {}
            labels = np.fromiter((codes.setdefault(s, len(codes)) for s in self._identity[:n]), np.int64, n)
            cent, rep = identity_centroids(self._vecs[:n], labels, len(codes), tiebreak=self._ids[:n])
            self._ident = (list(codes), cent, rep, np.bincount(labels, minlength=len(codes)))
            self._centred = centred_centroids(self._vecs[:n], labels, len(codes))
            log.debug("local index: %d identity centroids in %.2f s", len(codes), time.perf_counter() - t0)
        return self._ident

    def centred_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(the gallery's mean vector (dim,), each identity's gallery-centred centroid (I, dim), in
        the order of the identity table): see :func:`centred_centroids`."""
        with self._lock:
            self._identity_table()
            assert self._centred is not None
            return self._centred

    def search_identities(self, queries: np.ndarray, k: int = 1, centred: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k identities for each L2-normalised query by centroid similarity: (scores (nq, k),
        row of each identity's representative face (nq, k), -1 where fewer than k identities exist).
        ``centred``: the query and the centroids with the gallery's mean taken out (match_by "centred")."""
        nq = len(queries)
        with self._lock:
            scores = np.full((nq, k), -np.inf, np.float32)
            rows = np.full((nq, k), -1, np.int64)
            if self._n == 0 or nq == 0:
                return scores, rows
            _, cent, rep, _ = self._identity_table()
            if centred:
                assert self._centred is not None
                mean, cent = self._centred
                queries = centre_vectors(queries, mean)
            sims = queries @ cent.T
            for i in range(nq):
                _topk(sims[i], rep, k, scores[i], rows[i])
            return scores, rows

    # -- reads
    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows for each L2-normalised query: (scores (nq, k) float32, row positions (nq, k),
        -1 where fewer than k rows exist)."""
        nq = len(queries)
        with self._lock:
            if self._needs_rebuild():
                self._rebuild()
            n = self._n
            scores = np.full((nq, k), -np.inf, np.float32)
            rows = np.full((nq, k), -1, np.int64)
            if n == 0 or nq == 0:
                return scores, rows
            if self._centroids is None:
                sims = queries @ self._vecs[:n].T
                for i in range(nq):
                    _topk(sims[i], np.arange(n), k, scores[i], rows[i])
                return scores, rows
            order, offsets = self._lists()
            csims = queries @ self._centroids.T
            nprobe = min(self.nprobe, len(self._centroids))
            probe = np.argpartition(-csims, nprobe - 1, axis=1)[:, :nprobe]
            for i in range(nq):
                cand = np.concatenate([order[offsets[c] : offsets[c + 1]] for c in probe[i]])
                if len(cand) == 0:
                    continue
                _topk(self._vecs[cand] @ queries[i], cand, k, scores[i], rows[i])
            return scores, rows

    def row(self, pos: int) -> tuple[int, str, str, str, str]:
        """(face id, identity, name, dataset, image path) of a row position."""
        return int(self._ids[pos]), self._identity[pos], self._name[pos], self._dataset[pos], self._path[pos]

    def has(self, fid: int) -> bool:
        return fid in self._pos

    def arrays(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """(ids, vectors, identity, name) of all rows (views; copy before changing)."""
        n = self._n
        return self._ids[:n], self._vecs[:n], self._identity[:n], self._name[:n]

    def identity_rows(self) -> list[dict[str, Any]]:
        """One row per identity for the identities collection: centroid, display name, face count
        and representative face (id, dataset, image path); ``"centred"``: its gallery-centred
        centroid, for the centred collection (the mean taken out is ``centred_table()[0]``)."""
        with self._lock:
            keys, cent, rep, counts = self._identity_table()
            _, centred = self.centred_table()
            rows = []
            for c, key in enumerate(keys):
                fid, _, name, ds, path = self.row(int(rep[c]))
                rows.append({"id": identity_id(key), "vector": cent[c], "identity": key, "name": name,
                             "count": int(counts[c]), "face_id": fid, "dataset": ds, "image_path": path,
                             "centred": centred[c]})
            return rows

    # -- thumbnails
    def thumbnails(self, face_ids: Iterable[int]) -> tuple[dict[int, bytes | None], list[int]]:
        """The thumbnails held for ``face_ids`` ({id: JPEG bytes or None}) and the ids not held."""
        held: dict[int, bytes | None] = {}
        missing: list[int] = []
        with self._lock:
            for fid in {int(f) for f in face_ids}:
                if fid in self._thumbs:
                    held[fid] = self._thumbs[fid]
                elif fid in self._recent:
                    held[fid] = self._recent[fid]
                    self._recent.move_to_end(fid)
                else:
                    missing.append(fid)
        return held, sorted(missing)

    def keep_thumbnails(self, thumbs: Mapping[int, bytes | None], pin: bool = False) -> None:
        """Hold fetched thumbnails: ``pin`` keeps them for good (and persists them), else they
        join the bounded cache."""
        with self._lock:
            for fid, data in thumbs.items():
                if pin:
                    self._thumbs[int(fid)] = data
                    self._recent.pop(int(fid), None)
                elif int(fid) not in self._thumbs:
                    self._recent[int(fid)] = data
                    self._recent.move_to_end(int(fid))
            while len(self._recent) > self.thumbnail_cache:
                self._recent.popitem(last=False)
            if pin and thumbs:
                self.dirty = True

    def pin_representatives(self, fetch: Callable[[list[int]], Mapping[int, bytes | None]]) -> int:
        """Hold every identity's representative thumbnail: the ones not held yet come from
        ``fetch(ids)`` (called without the lock: searches go on meanwhile). Former representatives
        move to the bounded cache. Returns how many were fetched."""
        with self._lock:
            _, _, rep, _ = self._identity_table()
            reps = {int(self._ids[r]) for r in rep.tolist()}
            for fid in [f for f in self._thumbs if f not in reps]:
                self._recent[fid] = self._thumbs.pop(fid)
            for fid in reps & self._recent.keys():
                self._thumbs[fid] = self._recent.pop(fid)
            missing = sorted(reps - self._thumbs.keys())
        if missing:
            got = fetch(missing)
            self.keep_thumbnails({f: got.get(f) for f in missing}, pin=True)
        return len(missing)

    # -- persistence
    def save(self, directory: Path) -> None:
        """Write atomically to ``directory`` (replacing it)."""
        with self._lock:
            directory = Path(directory)
            tmp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
            for stale in directory.parent.glob(f"{directory.name}.*-*"):  # left by a save that was killed
                if stale.name.rsplit("-", 1)[0] in (f"{directory.name}.tmp", f"{directory.name}.old"):
                    shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir(parents=True)
            n = self._n
            np.save(tmp / "vectors.npy", self._vecs[:n])
            np.save(tmp / "ids.npy", self._ids[:n])
            if self._centroids is not None:
                np.save(tmp / "centroids.npy", self._centroids)
                np.save(tmp / "assign.npy", self._assign[:n])
            _save_thumbnails(tmp, self._thumbs, self._recent)
            (tmp / "labels.json").write_text(json.dumps(
                {"identity": self._identity, "name": self._name, "dataset": self._dataset, "image_path": self._path}
            ))
            (tmp / "meta.json").write_text(json.dumps({
                "format": self.FORMAT, "dim": self.dim, "rows": n, "generation": self.generation,
                "model": self.model, "built_rows": self._built_n,
            }))
            faults.point("local-index:save")
            old = directory.with_name(f"{directory.name}.old-{os.getpid()}")
            if directory.exists():
                directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
            self.dirty = False

    @staticmethod
    def read_meta(directory: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads((Path(directory) / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("format") == LocalIndex.FORMAT else None

    @classmethod
    def load(cls, directory: Path, nprobe: int = 16, exact_max: int = 32768) -> LocalIndex:
        directory = Path(directory)
        meta = cls.read_meta(directory)
        if meta is None:
            raise FileNotFoundError(f"no local index in {directory}")
        idx = cls(int(meta["dim"]), nprobe=nprobe, exact_max=exact_max)
        vecs = np.load(directory / "vectors.npy")
        ids = np.load(directory / "ids.npy")
        labels = json.loads((directory / "labels.json").read_text())
        n = len(ids)
        if vecs.shape != (n, idx.dim) or len(labels["identity"]) != n:
            raise ValueError(f"local index in {directory} is inconsistent")
        idx._vecs, idx._ids, idx._n = np.ascontiguousarray(vecs, np.float32), ids.astype(np.int64), n
        idx._assign = np.full((n,), -1, np.int32)
        idx._identity, idx._name = list(labels["identity"]), list(labels["name"])
        idx._dataset, idx._path = list(labels["dataset"]), list(labels["image_path"])
        idx._pos = {int(f): i for i, f in enumerate(ids.tolist())}
        if (directory / "centroids.npy").exists():
            idx._centroids = np.load(directory / "centroids.npy")
            idx._assign = np.load(directory / "assign.npy").astype(np.int32)
            idx._built_n = int(meta.get("built_rows", n))
        idx.generation, idx.model = str(meta.get("generation", "")), str(meta.get("model", ""))
        idx._thumbs, recent = _load_thumbnails(directory)
        idx.keep_thumbnails(recent)
        return idx


def mean_directions(vectors: np.ndarray, labels: np.ndarray, n_identities: int,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """The centroid of each identity: the normalised (``weights``-weighted) mean of the rows of
    ``vectors`` (N, D) labelled ``labels`` (N,) in 0..n_identities-1, each label present at least
    once. float32 (n_identities, D)."""
    if len(labels) == 0:
        return np.zeros((0, vectors.shape[1]), np.float32)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(n_identities))
    rows = vectors[order] if weights is None else vectors[order] * np.asarray(weights, np.float32)[order, None]
    sums = np.add.reduceat(rows, starts, axis=0)
    return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def centre_vectors(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``vectors`` (N, D) minus the gallery's ``mean`` vector, L2-normalised again (float32). A
    model's embeddings of one kind of photo share a common component (FaceNet's of CelebA more than
    MobileFaceNet's); without it strangers' similarities spread around 0, so one threshold tells
    them from the people in the gallery better (match_by "centred")."""
    v = np.asarray(vectors, np.float32) - np.asarray(mean, np.float32)[None, :]
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def centred_centroids(vectors: np.ndarray, labels: np.ndarray, n_identities: int,
                      chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """The gallery's mean vector (the mean of all rows of ``vectors``) and each identity's
    gallery-centred centroid: the normalised mean of its rows after :func:`centre_vectors`.
    Works ``chunk`` rows at a time (no copy of all vectors). float32 ((D,), (I, D))."""
    dim = vectors.shape[1]
    if len(labels) == 0:
        return np.zeros(dim, np.float32), np.zeros((0, dim), np.float32)
    mean = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)  # accumulated in float64, no copy
    sums = np.zeros((n_identities, dim), np.float64)
    for s in range(0, len(labels), chunk):
        np.add.at(sums, labels[s : s + chunk], centre_vectors(vectors[s : s + chunk], mean))
    cent = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return mean, cent.astype(np.float32)


#: similarities this close are a tie for the representative photo, broken by the smaller face id,
#: so that every way of computing the centroids (here, or from Milvus in Gallery._centroid_rows, in
#: any row order) picks the same photo: an identity's two photos are exactly as near their mean
REP_TIE = 1e-6


def rep_key(sim: float | np.ndarray) -> np.ndarray:
    """The similarity to a centroid as compared when choosing the representative (see REP_TIE)."""
    return np.round(np.asarray(sim, np.float64) / REP_TIE)


def identity_centroids(vectors: np.ndarray, labels: np.ndarray, n_identities: int,
                       tiebreak: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per identity (``labels`` 0..n_identities-1 of each row of L2-normalised ``vectors``): its
    centroid (:func:`mean_directions`) and its representative row (the face nearest the
    centroid, int64 (I,)): the identity's most typical photo, shown as the matched photo. Ties
    (REP_TIE) go to the smallest ``tiebreak`` (face ids; default: the row)."""
    cent = mean_directions(vectors, labels, n_identities)
    sims = np.einsum("ij,ij->i", vectors, cent[labels]) if len(labels) else np.zeros(0)
    order = np.arange(len(labels)) if tiebreak is None else np.asarray(tiebreak)
    best = np.lexsort((order, -rep_key(sims), labels))  # by identity, most typical first
    first = np.searchsorted(labels[best], np.arange(n_identities))
    return cent, best[first].astype(np.int64)


def _save_thumbnails(directory: Path, pinned: Mapping[int, bytes | None], recent: Mapping[int, bytes | None]) -> None:
    """thumbs.bin (the JPEGs back to back) and thumbs.npy (per thumbnail: face id, offset, length
    or -1 for none, pinned)."""
    table = np.zeros((len(pinned) + len(recent), 4), np.int64)
    with open(directory / "thumbs.bin", "wb") as fh:
        offset = 0
        for i, (fid, data, pin) in enumerate([(f, d, 1) for f, d in pinned.items()]
                                             + [(f, d, 0) for f, d in recent.items()]):
            table[i] = (fid, offset, -1 if data is None else len(data), pin)
            if data:
                fh.write(data)
                offset += len(data)
    np.save(directory / "thumbs.npy", table)


def _load_thumbnails(directory: Path) -> tuple[dict[int, bytes | None], dict[int, bytes | None]]:
    """(pinned, recent) thumbnails saved by _save_thumbnails; none when the files are absent (an
    index saved before thumbnails were kept: the representatives are fetched again)."""
    if not (directory / "thumbs.npy").exists():
        return {}, {}
    table = np.load(directory / "thumbs.npy")
    blob = (directory / "thumbs.bin").read_bytes()
    pinned: dict[int, bytes | None] = {}
    recent: dict[int, bytes | None] = {}
    for fid, off, length, pin in table.tolist():
        data = None if length < 0 else blob[off : off + length]
        if data is not None and len(data) != length:
            raise ValueError(f"thumbnails in {directory} are truncated")
        (pinned if pin else recent)[int(fid)] = data
    return pinned, recent


def search_local(local: LocalIndex, q: np.ndarray, k: int, by: str = "face") -> list[list[Match]]:
    """The top-``k`` :class:`GalleryMatch` of each L2-normalised query in ``local``, without
    thumbnails: by "face" (single photos), "identity" (centroids, each answered with its
    representative photo) or "centred" (gallery-centred centroids, answered the same way)."""
    scores, rows = (local.search(q, k) if by == "face" else local.search_identities(q, k, centred=by == "centred"))
    out: list[list[Match]] = []
    for i in range(len(q)):
        matches: list[Match] = []
        for s, r in zip(scores[i].tolist(), rows[i].tolist(), strict=True):
            if r < 0:
                break
            fid, ident, name, ds, path = local.row(r)
            matches.append(GalleryMatch(ident, name, float(s), path, fid, ds))
        out.append(matches)
    return out


def held_thumbnails(local: LocalIndex, matches: list[list[Match]]) -> tuple[dict[int, bytes | None], list[int]]:
    """The thumbnails ``local`` holds for the faces in ``matches``, and the ids it does not hold."""
    return local.thumbnails(m.face_id for ms in matches for m in ms if m.face_id is not None)


def _topk(sims: np.ndarray, cand: np.ndarray, k: int, out_s: np.ndarray, out_r: np.ndarray) -> None:
    kk = min(k, len(sims))
    top = np.argpartition(-sims, kk - 1)[:kk] if kk < len(sims) else np.arange(len(sims))
    top = top[np.argsort(-sims[top], kind="stable")]
    out_s[:kk] = sims[top]
    out_r[:kk] = cand[top]
