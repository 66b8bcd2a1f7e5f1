"""The face gallery in Milvus: schema, build-time writes, sync search for tools, async search for live video.

Two collections per gallery (``collection`` defaults to ``faces``):

``<collection>``
    one row per gallery face. Primary key ``id`` = :func:`face_id` (a stable 63-bit hash of
    dataset, image path and face index, so re-running a build is idempotent); ``vector``
    (FLOAT_VECTOR, L2-normalised, COSINE metric; HNSW index on a Milvus server, FLAT on Milvus Lite
    when the local index serves searches, see ``Gallery.index_type``); ``identity``, ``name``, ``dataset``,
    ``image_path``, ``face_index``; ``bbox`` (ARRAY of 4 FLOAT: xyxy pixels in the source photo);
    ``quality`` (FLOAT in [0, 1]); ``thumbnail`` (base64 of a small JPEG of the face, "" when none).
    The model name and vector dimension are recorded in the collection properties
    (``lookalike.model``, ``lookalike.dim``); ``lookalike.generation`` changes on every write so a
    cached copy of the vectors can tell whether it is still current.
``<collection>_identities``
    one row per identity: the mean of its faces' L2-normalised vectors, re-normalised, with
    ``identity``, ``name``, ``count`` and its representative face (``face_id``, ``dataset``,
    ``image_path`` of the face nearest the centroid); rebuilt by :meth:`Gallery.rebuild_centroids`.

Thumbnails are base64 in a VARCHAR because Milvus 2.3 (the server this project tests against) has
no binary scalar type; a 96x96 JPEG at quality 80 is 2-4 KB (3-5.5 KB as base64). They live in the
faces collection so a remote gallery is self-contained (the live overlay can show the matched photo
without access to the dataset), and they are never in search output unless asked for.

Speed on the embedded default (Milvus Lite 3.2): every Lite search walks all rows in Python (a
primary-key dedup map over every segment plus a per-row validity mask) before its FAISS HNSW call,
so a search over 202,599 faces costs ~90 ms even when fully indexed (the HNSW part is ~2 ms), holds
the GIL, and ~0.7-1.8 s right after an insert, while rows still sit in the memtable (brute force) and
Lite builds its segment indexes in a background thread. :class:`LocalIndex` is therefore an
in-process copy of the vectors (Milvus stays the source of truth): an IVF whose coarse centroids
are the identity centroids, exact re-ranking inside the probed lists, ~2 ms per batch of 8 queries
at 202,599 x 512. It is on by default for Milvus Lite URIs and persisted next to the Lite file, keyed
by the collection's generation, so it loads in about a second instead of being pulled again.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import MATCH_BY
from .errors import (
    ConfigError,
    DimensionMismatchError,
    GalleryError,
    GalleryUnavailableError,
    ShapeError,
)
from .types import Match

log = logging.getLogger(__name__)

__all__ = [
    "AsyncSearcher",
    "FaceRecord",
    "Gallery",
    "GalleryMatch",
    "LocalIndex",
    "ModelMismatchError",
    "ThumbnailError",
    "default_uri",
    "encode_thumbnail",
    "face_id",
    "identity_id",
    "is_lite_uri",
]

# --------------------------------------------------------------------------- constants
SCHEMA_VERSION = "1"
PROP_MODEL = "lookalike.model"
PROP_DIM = "lookalike.dim"
PROP_SCHEMA = "lookalike.schema"
PROP_GENERATION = "lookalike.generation"

#: HNSW parameters. lookalike_live.bench.search on a Milvus 2.3 server, 202,599 clustered 512-d
#: vectors, 200 queries, 2-core CPU shared by server and client: M=32 / efConstruction=200 index
#: in ~700 s. Two quiet runs (2026-11-26), nq=8 p50 and recall@1 against exact search per ef:
#: ef 64: 12.0 / 16.7 ms, 0.99 / 0.995; ef 80: 13.0 / 15.8 ms, 0.99 / 1.0; ef 96: 16.2 / 19.3 ms,
#: 0.995 / 1.0; ef 128: 17.6 / 22.9 ms, 1.0 / 1.0 (a loaded run saw 20.6-29.8 ms at every ef).
#: Faces of one identity are near-ties, which makes "the exact nearest face" hard for a graph
#: index; the nearest *identity* was right for every query at ef >= 64. ef 80 is the smallest
#: setting with recall@1 >= 0.99 in both quiet runs, and under 20 ms in both. A standalone check
#: at ef 80 gave 13.0-19.8 ms and recall@1 0.995 over 11 minutes; a slow run inside `make
#: results` gave 24.3 ms and 0.98 (its whole ef sweep 25-56 ms, cause not found).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF = 80
#: seconds after which a live searcher asks a server again whether identity centroids exist
CENTROIDS_RECHECK_S = 60.0

#: Milvus's default indexCoord.segment.minSegmentNumRowsToEnableIndex
MIN_INDEXED_SEGMENT_ROWS = 1024

THUMBNAIL_MAX_BYTES = 12 * 1024  # base64 of this is exactly the VARCHAR limit below
_THUMB_B64_MAX = 4 * THUMBNAIL_MAX_BYTES // 3
_MAX_IDENTITY = 256
_MAX_NAME = 512
_MAX_DATASET = 128
_MAX_PATH = 1024

_FACE_OUTPUT = ["identity", "name", "dataset", "image_path"]
_IDENTITY_OUTPUT = ["identity", "name", "face_id", "dataset", "image_path"]
_MASK63 = (1 << 63) - 1


class ModelMismatchError(GalleryError):
    """The collection was built with a different embedding model than the one in use."""


class ThumbnailError(GalleryError, ValueError):
    """A thumbnail is not a JPEG or is larger than THUMBNAIL_MAX_BYTES."""


# --------------------------------------------------------------------------- ids and uris
def _hash63(*parts: str) -> int:
    h = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") & _MASK63


def face_id(dataset: str, image_path: str, face_index: int) -> int:
    """Stable 63-bit primary key of one face: the same in every process, on every OS.

    ``image_path`` should be relative to the dataset root; backslashes are treated as ``/`` so a
    gallery built on Windows and re-run on Linux keeps its ids.
    """
    if face_index < 0:
        raise ValueError(f"face_index must be >= 0, got {face_index}")
    return _hash63("face", dataset, image_path.replace("\\", "/"), str(int(face_index)))


def identity_id(identity: str) -> int:
    """Stable 63-bit primary key of an identity's centroid row."""
    return _hash63("identity", identity)


def default_uri() -> str:
    """The embedded default: a Milvus Lite file ``gallery.db`` in ``$LOOKALIKE_DATA_DIR`` if set,
    else in platformdirs' user data dir for ``lookalike-live``."""
    env = os.environ.get("LOOKALIKE_DATA_DIR")
    if env:
        base = Path(env).expanduser()
    else:
        import platformdirs

        base = Path(platformdirs.user_data_dir("lookalike-live"))
    return str(base / "gallery.db")


def is_lite_uri(uri: str) -> bool:
    """True for a Milvus Lite URI (a local path ending in ``.db``, as pymilvus decides)."""
    return uri.endswith(".db") and "://" not in uri


def _validate_uri(uri: str) -> str:
    if is_lite_uri(uri):
        return str(Path(uri).expanduser().resolve())
    if uri.startswith(("http://", "https://", "tcp://", "unix:")):
        return uri
    raise ConfigError(
        f"Milvus URI {uri!r} is not valid: use a local file ending in .db (Milvus Lite, the embedded "
        "default) or http://HOST:19530 for a Milvus server (e.g. `docker compose up -d` from the repository)"
    )


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class GalleryMatch(Match):
    """A :class:`~lookalike_live.types.Match` with the matched face's dataset and, when asked for,
    its JPEG thumbnail. ``image_ref`` is the photo's path inside its dataset."""

    dataset: str = ""
    thumbnail: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class FaceRecord:
    """One gallery face, as :meth:`Gallery.upsert_records` takes it. ``vector`` need not be
    normalised (it is L2-normalised on write); ``thumbnail`` is JPEG bytes or None."""

    id: int
    vector: np.ndarray
    identity: str
    name: str
    dataset: str
    image_path: str
    bbox: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    quality: float = 0.0
    thumbnail: bytes | None = None
    face_index: int = 0


def encode_thumbnail(image_bgr: np.ndarray, xyxy: Sequence[float] | None = None, size: int = 96,
                     quality: int = 80, margin: float = 0.25) -> bytes:
    """A square JPEG (``size`` px) of ``image_bgr`` around the box ``xyxy`` (whole image if None),
    re-encoded at lower quality until it fits THUMBNAIL_MAX_BYTES."""
    import cv2

    h, w = image_bgr.shape[:2]
    x1, y1, x2, y2 = (0.0, 0.0, float(w), float(h)) if xyxy is None else (float(v) for v in xyxy)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1, 1.0) * (1 + margin) / 2
    scale = size / (2 * half)
    m = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]], np.float32)
    thumb = cv2.warpAffine(image_bgr, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    for q in (quality, 60, 40, 20):
        ok, buf = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok and len(buf) <= THUMBNAIL_MAX_BYTES:
            return buf.tobytes()
    raise ThumbnailError(f"cannot encode a {size}x{size} thumbnail under {THUMBNAIL_MAX_BYTES} bytes")


def _skip_pymilvus_string_check() -> None:
    """Turn off pymilvus's client-side VARCHAR check, which on rows (MilvusClient.upsert) iterates
    over each string's *characters* (isinstance and len per character): ~1 ms of Python per face
    row with a 4 kB base64 thumbnail, on the writer's thread with the GIL held, and it never sees a
    too-long string anyway. upsert_faces checks every string's length itself, and the server
    enforces max_length."""
    try:
        from pymilvus.client import entity_helper
    except ImportError:  # pragma: no cover - a pymilvus without the module: nothing to turn off
        return
    if getattr(entity_helper, "CHECK_STR_ARRAY", None) is True:
        entity_helper.CHECK_STR_ARRAY = False


def _thumb_to_b64(data: bytes | None) -> str:
    if not data:
        return ""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ThumbnailError(f"thumbnail must be JPEG bytes or None, got {type(data).__name__}")
    data = bytes(data)
    if data[:2] != b"\xff\xd8":
        raise ThumbnailError("thumbnail is not a JPEG (no FF D8 start marker); encode it with encode_thumbnail()")
    if len(data) > THUMBNAIL_MAX_BYTES:
        raise ThumbnailError(
            f"thumbnail is {len(data)} bytes, the limit is {THUMBNAIL_MAX_BYTES}: use a smaller size "
            "or JPEG quality (encode_thumbnail() does)"
        )
    return base64.b64encode(data).decode("ascii")


def _b64_to_thumb(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text else None


def _normalise(vectors: Any, dim: int | None, what: str) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ShapeError(f"{what} must have shape (N, D), got {tuple(arr.shape)}")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(
            f"{what} are {arr.shape[1]}-d but the gallery holds {dim}-d vectors: the embedding model "
            "differs from the one the gallery was built with (use its model, or another --collection)"
        )
    if not np.isfinite(arr).all():
        raise ShapeError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if len(arr) and float(norms.min()) == 0.0:
        raise ShapeError(f"{what} contain an all-zero vector (cannot be L2-normalised)")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


# --------------------------------------------------------------------------- error mapping
def _is_unavailable(exc: BaseException) -> bool:
    """Whether an exception from pymilvus/grpc means "cannot reach Milvus" (vs a bad request)."""
    import grpc
    from pymilvus.exceptions import ConnectError, ConnectionConfigException, MilvusUnavailableException

    unavailable_codes = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
    words = ("unavailable", "fail connecting", "failed to connect", "connection refused", "deadline",
             "timed out", "timeout", "open local milvus failed", "channel closed", "socket closed",
             "connection reset", "not connected", "connect failed")
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (MilvusUnavailableException, ConnectError, ConnectionConfigException,
                          TimeoutError, asyncio.TimeoutError, ConnectionError)):
            return True
        if isinstance(e, grpc.RpcError) and callable(getattr(e, "code", None)):
            try:
                if e.code() in unavailable_codes:
                    return True
            except Exception:  # noqa: BLE001 - a half-built RpcError
                pass
        text = (getattr(e, "message", "") or str(e)).lower()
        if any(w in text for w in words):
            return True
        e = e.__cause__ or e.__context__
    return False


def _is_not_loaded(exc: BaseException) -> bool:
    """A search/query refused because the collection is not loaded (e.g. a server restarting)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = (getattr(e, "message", "") or str(e)).lower()
        if getattr(e, "code", None) == 101 or "not loaded" in text or "call load()" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def _reason(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(msg).split())[:300]


def _unavailable_message(uri: str, reason: str) -> str:
    if is_lite_uri(uri):
        return (
            f"Milvus Lite could not open {uri} ({reason}). Milvus Lite allows one process per file: "
            "close the other lookalike-live process using it, or point --milvus-uri at a Milvus server; "
            "also check that the folder exists and is writable."
        )
    return (
        f"Milvus at {uri} is unreachable ({reason}). Start one with `docker compose up -d` in the "
        "lookalike-live repository (standalone on http://localhost:19530), check the host, port and "
        "--milvus-token, or use the embedded default (omit --milvus-uri for a Milvus Lite file)."
    )


# --------------------------------------------------------------------------- local index
class LocalIndex:
    """In-process copy of a faces collection's vectors and display fields, for fast search.

    Below ``exact_max`` rows it searches exactly (one matrix product). Above, it is an IVF whose
    coarse centroids are the identity centroids (mean of each identity's vectors): each face sits
    in the list of its nearest centroid, a query scans the ``nprobe`` nearest lists and re-ranks
    their faces exactly. Faces of an identity are tight around its centroid, so a handful of lists
    holds the true nearest face (recall@1 1.0 at nprobe 16 on 202,599 x 512 clustered vectors).
    Galleries with nearly one face per identity fall back to exact search.

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
                rows[i] = pos
            self._vecs[rows] = vectors
            self._ids[rows] = ids
            if self._centroids is not None:
                self._assign[rows] = np.argmax(vectors @ self._centroids.T, axis=1).astype(np.int32)
                self._order = None  # lists rebuilt lazily
            self._ident = None
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
            cent, rep = identity_centroids(self._vecs[:n], labels, len(codes))
            self._ident = (list(codes), cent, rep, np.bincount(labels, minlength=len(codes)))
            log.debug("local index: %d identity centroids in %.2f s", len(codes), time.perf_counter() - t0)
        return self._ident

    def search_identities(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k identities for each L2-normalised query by centroid similarity: (scores (nq, k),
        row of each identity's representative face (nq, k), -1 where fewer than k identities exist)."""
        nq = len(queries)
        with self._lock:
            scores = np.full((nq, k), -np.inf, np.float32)
            rows = np.full((nq, k), -1, np.int64)
            if self._n == 0 or nq == 0:
                return scores, rows
            _, cent, rep, _ = self._identity_table()
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

    # -- persistence
    def save(self, directory: Path) -> None:
        """Write atomically to ``directory`` (replacing it)."""
        with self._lock:
            directory = Path(directory)
            tmp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            n = self._n
            np.save(tmp / "vectors.npy", self._vecs[:n])
            np.save(tmp / "ids.npy", self._ids[:n])
            if self._centroids is not None:
                np.save(tmp / "centroids.npy", self._centroids)
                np.save(tmp / "assign.npy", self._assign[:n])
            (tmp / "labels.json").write_text(json.dumps(
                {"identity": self._identity, "name": self._name, "dataset": self._dataset, "image_path": self._path}
            ))
            (tmp / "meta.json").write_text(json.dumps({
                "format": self.FORMAT, "dim": self.dim, "rows": n, "generation": self.generation,
                "model": self.model, "built_rows": self._built_n,
            }))
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


def identity_centroids(vectors: np.ndarray, labels: np.ndarray, n_identities: int) -> tuple[np.ndarray, np.ndarray]:
    """Per identity (``labels`` 0..n_identities-1 of each row of L2-normalised ``vectors``): its
    centroid (:func:`mean_directions`) and its representative row (the face nearest the
    centroid, int64 (I,)): the identity's most typical photo, shown as the matched photo."""
    cent = mean_directions(vectors, labels, n_identities)
    sims = np.einsum("ij,ij->i", vectors, cent[labels]) if len(labels) else np.zeros(0)
    best = np.lexsort((-sims, labels))  # by identity, most typical first
    first = np.searchsorted(labels[best], np.arange(n_identities))
    return cent, best[first].astype(np.int64)


def _topk(sims: np.ndarray, cand: np.ndarray, k: int, out_s: np.ndarray, out_r: np.ndarray) -> None:
    kk = min(k, len(sims))
    top = np.argpartition(-sims, kk - 1)[:kk] if kk < len(sims) else np.arange(len(sims))
    top = top[np.argsort(-sims[top], kind="stable")]
    out_s[:kk] = sims[top]
    out_r[:kk] = cand[top]


# --------------------------------------------------------------------------- Lite server sharing
# One lock per Lite file, held while a Gallery connects (and counts itself) and while the last one
# stops the server: a Gallery that connects while the last one closes waits for the server to stop,
# then starts its own, instead of connecting to a server that is stopped under it.
_lite_lock = threading.Lock()  # guards the two dicts
_lite_refs: dict[str, int] = collections.defaultdict(int)
_lite_path_locks: dict[str, threading.Lock] = {}


def _lite_path_lock(path: str) -> threading.Lock:
    with _lite_lock:
        return _lite_path_locks.setdefault(path, threading.Lock())


def _lite_connect(path: str, connect: Any) -> Any:
    """``connect()`` (a MilvusClient for the Lite file ``path``) and count it, as one step."""
    with _lite_path_lock(path):
        client = connect()
        with _lite_lock:
            _lite_refs[path] += 1
        return client


def _lite_release(path: str) -> None:
    """Stop the in-process Milvus Lite server of ``path`` when its last Gallery closes, so the
    file's lock is released (another process can open it) and its data is flushed."""
    with _lite_path_lock(path):
        with _lite_lock:
            _lite_refs[path] -= 1
            if _lite_refs[path] > 0:
                return
            del _lite_refs[path]
        try:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(path)
        except Exception:  # noqa: BLE001 - best effort at close
            log.debug("could not release the Milvus Lite server of %s", path, exc_info=True)


# --------------------------------------------------------------------------- Gallery
class Gallery:
    """A face gallery in Milvus (Milvus Lite file by default, or any Milvus URI).

    Sync methods are for builds and tools; live video uses :meth:`searcher` (an
    :class:`AsyncSearcher`). All Milvus failures surface as :class:`GalleryError`;
    "cannot reach Milvus" as :class:`GalleryUnavailableError`, within ``timeout`` seconds.

    ``match_by`` (what :meth:`search` ranks): "face" (default here) = single photos; "identity" =
    identity centroids, each answered with its most typical photo. The live app matches by
    identity (``Settings.match_by``, see :meth:`from_settings`): ``eval identify --study``
    measured it more accurate (MobileFaceNet, CelebA sample: top-1 0.966 vs 0.950).

    ``local_index``: keep an in-process copy of the vectors for search (:class:`LocalIndex`).
    None (default) turns it on for Milvus Lite URIs, where Lite's own search costs ~90 ms at
    200k faces; a Milvus server answers in a few ms and needs none.
    """

    def __init__(self, uri: str | None = None, collection: str = "faces", token: str | None = None, *,
                 timeout: float = 10.0, local_index: bool | None = None, nprobe: int = 16,
                 ef: int = HNSW_EF, match_by: str = "face") -> None:
        if match_by not in MATCH_BY:
            raise ValueError(f"match_by must be one of {', '.join(MATCH_BY)}, got {match_by!r}")
        self.match_by = match_by
        self._warned_no_centroids = False
        self._centroids_ok: tuple[str, bool] | None = None  # (faces generation, centroids usable)
        self.uri = _validate_uri(uri or default_uri())
        self.collection = collection
        self.identities_collection = f"{collection}_identities"
        self.token = token or ""
        self.timeout = float(timeout)
        self.is_lite = is_lite_uri(self.uri)
        self.ef = int(ef)
        self.nprobe = int(nprobe)
        self.local_index_enabled = self.is_lite if local_index is None else bool(local_index)
        # Milvus's own index for collections this object creates. HNSW, except on Milvus Lite with
        # the local index: there Lite's index only serves as a fallback, and Lite builds HNSW in a
        # background thread after every flush (and synchronously in load() if the process exited
        # first): ~10 CPU-minutes at 200k x 512 that the local index makes useless. FLAT costs none.
        self.index_type = "FLAT" if (self.is_lite and self.local_index_enabled) else "HNSW"
        self._local: LocalIndex | None = None
        self._local_lock = threading.Lock()
        self._local_build_lock = threading.Lock()
        self._info: dict[str, Any] | None = None  # dim, model, generation of the faces collection
        self._closed = False
        if self.is_lite:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        from pymilvus import MilvusClient

        t0 = time.perf_counter()
        def connect() -> Any:
            return MilvusClient(uri=self.uri, token=self.token, timeout=self.timeout)

        try:
            self._client = _lite_connect(self.uri, connect) if self.is_lite else connect()
        except Exception as exc:  # noqa: BLE001 - pymilvus raises bare MilvusException
            raise self._error(exc, "connect") from exc
        log.debug("connected to %s in %.2f s", self.uri, time.perf_counter() - t0)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> Gallery:
        """The gallery ``settings`` name (URI, collection, token), matching as ``settings.match_by`` says."""
        return cls(settings.milvus_uri, collection=settings.collection, token=settings.token,
                   match_by=settings.match_by, **kwargs)

    # -- plumbing
    def _error(self, exc: BaseException, action: str) -> GalleryError:
        if isinstance(exc, GalleryError):
            return exc
        if _is_unavailable(exc):
            return GalleryUnavailableError(_unavailable_message(self.uri, _reason(exc)))
        return GalleryError(f"Milvus {action} failed on {self.uri} (collection {self.collection!r}): {_reason(exc)}")

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise GalleryError(f"gallery {self.uri} ({self.collection}) is closed")
        kwargs.setdefault("timeout", self.timeout)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, action) from exc

    def _read(self, action: str, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A search/query/get on collection ``name``; if Milvus says it is not loaded (a server
        that restarted, a Lite file reopened), load it and try once more."""
        try:
            return self._call(action, fn, name, *args, **kwargs)
        except GalleryError as err:
            if not _is_not_loaded(err):
                raise
        log.info("collection %s not loaded on %s: loading it", name, self.uri)
        self._load(name)
        return self._call(action, fn, name, *args, **kwargs)

    @property
    def _cache_dir(self) -> Path | None:
        return Path(self.uri + ".lookalike-index") / self.collection if self.is_lite else None

    def _describe(self, refresh: bool = False) -> dict[str, Any] | None:
        """dim/model/generation of the faces collection, or None if it does not exist."""
        if self._info is not None and not refresh:
            return self._info
        if not self._call("has_collection", self._client.has_collection, self.collection):
            self._info = None
            return None
        desc = self._call("describe_collection", self._client.describe_collection, self.collection)
        dim = None
        for f in desc.get("fields", []):
            if f.get("name") == "vector":
                dim = int(f.get("params", {}).get("dim", 0))
        props = desc.get("properties") or {}
        if dim is None:
            raise GalleryError(
                f"collection {self.collection!r} on {self.uri} has no 'vector' field: it was not created by "
                "lookalike-live; use another --collection"
            )
        self._info = {"dim": dim, "model": props.get(PROP_MODEL, ""), "generation": props.get(PROP_GENERATION, "")}
        self._load(self.collection)
        return self._info

    def _require(self) -> dict[str, Any]:
        info = self._describe()
        if info is None:
            raise GalleryError(
                f"collection {self.collection!r} does not exist on {self.uri}: build the gallery first "
                "(`lookalike-live index build`), or pick the right --collection / --milvus-uri"
            )
        return info

    def _load(self, *names: str) -> None:
        """Load collections (all requests first, then one wait: a server takes ~3 s per load)."""
        from pymilvus.client.types import LoadState

        todo = [n for n in names
                if self._call("get_load_state", self._client.get_load_state, n).get("state") != LoadState.Loaded]
        if not todo:
            return
        t0 = time.perf_counter()
        for n in todo:
            self._call("load_collection", self._client.load_collection, n, _async=True)
        deadline = time.monotonic() + max(self.timeout, 300.0)
        while todo:
            todo = [n for n in todo
                    if self._call("get_load_state", self._client.get_load_state, n).get("state") != LoadState.Loaded]
            if todo and time.monotonic() > deadline:
                raise GalleryError(f"collections {todo} on {self.uri} still loading after {max(self.timeout, 300.0):.0f} s")
            if todo:
                time.sleep(0.1)
        log.info("loaded %s in %.1f s", ", ".join(names), time.perf_counter() - t0)

    def _schema(self, dim: int, identities: bool) -> Any:
        from pymilvus import DataType, MilvusClient

        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("id", DataType.INT64, is_primary=True)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        s.add_field("identity", DataType.VARCHAR, max_length=_MAX_IDENTITY)
        s.add_field("name", DataType.VARCHAR, max_length=_MAX_NAME)
        if identities:  # the centroid, and its representative face (the most typical photo)
            s.add_field("count", DataType.INT64)
            s.add_field("face_id", DataType.INT64)
            s.add_field("dataset", DataType.VARCHAR, max_length=_MAX_DATASET)
            s.add_field("image_path", DataType.VARCHAR, max_length=_MAX_PATH)
            return s
        s.add_field("dataset", DataType.VARCHAR, max_length=_MAX_DATASET)
        s.add_field("image_path", DataType.VARCHAR, max_length=_MAX_PATH)
        s.add_field("face_index", DataType.INT32)
        s.add_field("bbox", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=4)
        s.add_field("quality", DataType.FLOAT)
        s.add_field("thumbnail", DataType.VARCHAR, max_length=_THUMB_B64_MAX)
        return s

    def _create(self, name: str, dim: int, model: str, identities: bool, load: bool = True) -> None:
        ip = self._client.prepare_index_params()
        if self.index_type == "HNSW":
            ip.add_index("vector", index_type="HNSW", metric_type="COSINE",
                         params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION})
        else:
            ip.add_index("vector", index_type=self.index_type, metric_type="COSINE")
        self._call("create_collection", self._client.create_collection, name,
                   schema=self._schema(dim, identities), consistency_level="Session")
        # sync=False: the collection is empty, and Milvus Lite lacks the AllocTimestamp call that
        # pymilvus's wait-for-index loop makes (it logs a server-side traceback otherwise)
        self._call("create_index", self._client.create_index, name, ip, sync=False)
        self._call("alter_collection_properties", self._client.alter_collection_properties, name,
                   properties={PROP_MODEL: model, PROP_DIM: str(dim), PROP_SCHEMA: SCHEMA_VERSION,
                               PROP_GENERATION: uuid.uuid4().hex})
        if load:
            self._load(name)
        log.info("created collection %s (%d-d, model %s, %s index, COSINE) on %s", name, dim, model,
                 f"HNSW M={HNSW_M} efConstruction={HNSW_EF_CONSTRUCTION}" if self.index_type == "HNSW"
                 else self.index_type, self.uri)

    def _bump_generation(self) -> str:
        gen = uuid.uuid4().hex
        self._call("alter_collection_properties", self._client.alter_collection_properties, self.collection,
                   properties={PROP_GENERATION: gen})
        if self._info is not None:
            self._info["generation"] = gen
        return gen

    # -- schema
    def ensure(self, dim: int, model: str) -> None:
        """Create the faces and identities collections if absent (and load them); refuse a dimension
        mismatch (:class:`DimensionMismatchError`) or a different model (:class:`ModelMismatchError`)."""
        created = False
        if self._describe(refresh=True) is not None:
            self.check_model(model, dim)
        else:
            self._create(self.collection, int(dim), model, identities=False, load=False)
            created = True
        if not self._call("has_collection", self._client.has_collection, self.identities_collection):
            self._create(self.identities_collection, int(dim), model, identities=True, load=False)
        self._load(self.collection, self.identities_collection)
        info = self._require()
        if created and self.local_index_enabled:
            local = LocalIndex(int(dim), nprobe=self.nprobe)
            local.generation, local.model = info["generation"], model
            with self._local_lock:
                self._local = local

    def check_model(self, model: str, dim: int) -> None:
        """Raise unless the faces collection exists and was built for ``model`` with ``dim``-d vectors."""
        info = self._require()
        if int(info["dim"]) != int(dim):
            raise DimensionMismatchError(
                f"collection {self.collection!r} on {self.uri} holds {info['dim']}-d vectors"
                f"{' from model ' + repr(info['model']) if info['model'] else ''}, but model {model!r} makes "
                f"{dim}-d vectors: use another collection (--collection {self.collection}_{_slug(model)}) "
                f"or drop this one (Gallery.drop()) and rebuild it"
            )
        if info["model"] and model and info["model"] != model:
            raise ModelMismatchError(
                f"collection {self.collection!r} on {self.uri} was built with model {info['model']!r}, not "
                f"{model!r}: similarities between the two models mean nothing. Use --model {info['model']}, "
                f"another collection (--collection {self.collection}_{_slug(model)}), or drop and rebuild it"
            )

    def drop(self) -> None:
        """Delete both collections and the local index cache."""
        for name in (self.collection, self.identities_collection):
            if self._call("has_collection", self._client.has_collection, name):
                self._call("drop_collection", self._client.drop_collection, name)
        with self._local_lock:
            self._local = None
        if self._cache_dir is not None:
            shutil.rmtree(self._cache_dir, ignore_errors=True)
        self._info = None

    # -- writes
    def upsert_faces(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray, identity: Sequence[str],
                     name: Sequence[str], dataset: Sequence[str] | str, image_path: Sequence[str],
                     bbox: np.ndarray | Sequence[Sequence[float]] | None = None,
                     quality: Sequence[float] | np.ndarray | None = None,
                     thumbnail: Sequence[bytes | None] | None = None,
                     face_index: Sequence[int] | np.ndarray | None = None, batch_size: int = 512) -> int:
        """Insert or replace faces given as parallel arrays (N first). ``vectors`` (N, D) are
        L2-normalised on write. Returns N. Re-upserting an id replaces its row."""
        info = self._require()
        vecs = _normalise(vectors, int(info["dim"]), "vectors")
        n = len(vecs)
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        ds = [dataset] * n if isinstance(dataset, str) else list(dataset)
        bb = np.zeros((n, 4), np.float32) if bbox is None else np.asarray(bbox, np.float32).reshape(-1, 4)
        qa = np.zeros((n,), np.float32) if quality is None else np.asarray(quality, np.float32).reshape(-1)
        fi = np.zeros((n,), np.int64) if face_index is None else np.asarray(face_index, np.int64).reshape(-1)
        th = [None] * n if thumbnail is None else list(thumbnail)
        lengths = {"ids": len(ids_arr), "vectors": n, "identity": len(identity), "name": len(name),
                   "dataset": len(ds), "image_path": len(image_path), "bbox": len(bb), "quality": len(qa),
                   "thumbnail": len(th), "face_index": len(fi)}
        if len(set(lengths.values())) != 1:
            raise ShapeError(f"upsert_faces: all arguments must have the same length N, got {lengths}")
        if n == 0:
            return 0
        if len(set(ids_arr.tolist())) != n:
            raise ShapeError("upsert_faces: ids must be unique within one call")
        if ids_arr.min() < 0:
            raise ShapeError("upsert_faces: ids must be >= 0 (use face_id())")
        thumbs = [_thumb_to_b64(t) for t in th]
        identity, name, image_path = [str(s) for s in identity], [str(s) for s in name], [str(s) for s in image_path]
        for label, values, limit in (("identity", identity, _MAX_IDENTITY), ("name", name, _MAX_NAME),
                                     ("dataset", ds, _MAX_DATASET), ("image_path", image_path, _MAX_PATH)):
            longest = max(len(v.encode("utf-8")) for v in values)
            if longest > limit:
                raise ShapeError(f"upsert_faces: a {label} is {longest} bytes long, the limit is {limit}")

        _skip_pymilvus_string_check()  # every string's length is checked above
        # a new generation first: a crash mid-write leaves the persisted local index out of date
        prev_gen = info["generation"]
        gen = self._bump_generation()
        try:
            for s in range(0, n, batch_size):
                e = min(n, s + batch_size)
                rows = [{
                    "id": int(ids_arr[i]), "vector": vecs[i], "identity": identity[i], "name": name[i],
                    "dataset": ds[i], "image_path": image_path[i], "face_index": int(fi[i]),
                    "bbox": [float(v) for v in bb[i]], "quality": float(qa[i]), "thumbnail": thumbs[i],
                } for i in range(s, e)]
                self._call("upsert", self._client.upsert, self.collection, rows)
        except GalleryError:
            with self._local_lock:
                self._local = None  # unknown how much was written: reload from Milvus when needed
            raise
        with self._local_lock:
            local = self._local
            if local is not None and local.generation != prev_gen:
                self._local = local = None  # it was already out of date: reload when needed
        if local is not None:
            local.upsert(ids_arr, vecs, identity, name, ds, image_path)
            local.generation = gen
        return n

    def upsert_rows(self, rows: Iterable[Mapping[str, Any]], batch_size: int = 512) -> int:
        """Insert or replace faces given as dicts with keys id, vector, identity, name, dataset,
        image_path and optionally bbox, quality, thumbnail (JPEG bytes), face_index."""
        rows = list(rows)
        if not rows:
            return 0
        try:
            return self.upsert_faces(
                ids=[int(r["id"]) for r in rows], vectors=np.stack([np.asarray(r["vector"], np.float32) for r in rows]),
                identity=[r["identity"] for r in rows], name=[r["name"] for r in rows],
                dataset=[r["dataset"] for r in rows], image_path=[r["image_path"] for r in rows],
                bbox=[r.get("bbox", (0.0, 0.0, 0.0, 0.0)) for r in rows],
                quality=[float(r.get("quality", 0.0)) for r in rows],
                thumbnail=[r.get("thumbnail") for r in rows],
                face_index=[int(r.get("face_index", 0)) for r in rows], batch_size=batch_size,
            )
        except KeyError as exc:
            raise ShapeError(f"upsert_rows: every row needs the key {exc.args[0]!r}") from exc

    def upsert_records(self, records: Iterable[FaceRecord], batch_size: int = 512) -> int:
        """Insert or replace :class:`FaceRecord` objects."""
        return self.upsert_rows(({**r.__dict__} for r in records), batch_size=batch_size)

    def existing_ids(self, ids: Iterable[int], chunk: int = 1000) -> set[int]:
        """The subset of ``ids`` already in the faces collection (strongly consistent)."""
        self._require()
        wanted = [int(i) for i in ids]
        found: set[int] = set()
        for s in range(0, len(wanted), chunk):
            part = wanted[s : s + chunk]
            res = self._read("query", self.collection, self._client.query, filter=f"id in {part}",
                             output_fields=["id"], consistency_level="Strong")
            found.update(int(r["id"]) for r in res)
        return found

    def flush(self) -> None:
        """Seal written rows into persistent segments (indexes build on sealed segments) and save
        the local index if it changed."""
        for name in (self.collection, self.identities_collection):
            if self._call("has_collection", self._client.has_collection, name):
                self._call("flush", self._client.flush, name, timeout=max(self.timeout, 120.0))
        self._save_local()

    def wait_for_index(self, timeout: float = 600.0, collection: str | None = None) -> dict[str, Any]:
        """Flush, then wait until every sealed row of the faces collection (or ``collection``, e.g.
        :attr:`identities_collection`) is indexed (bounded); returns describe_index's answer.
        Raises GalleryError on timeout."""
        self._require()
        self.flush()
        name = collection or self.collection
        deadline = time.monotonic() + timeout
        while True:
            di = self._call("describe_index", self._client.describe_index, name, "vector")
            pending = int(di.get("pending_index_rows", 0) or 0)
            if pending == 0 and str(di.get("state", "Finished")) in ("Finished", "3", "IndexState.Finished"):
                break
            if time.monotonic() > deadline:
                raise GalleryError(f"index of {name!r} on {self.uri} still building after "
                                   f"{timeout:.0f} s ({pending} rows pending); try again later")
            time.sleep(0.5)
        if not self.is_lite:
            self._wait_for_indexed_segments(deadline, name)
        local = self._local_index(build=False)
        if local is not None:
            local.prepare()
        return dict(di)

    def _wait_for_indexed_segments(self, deadline: float, name: str) -> None:
        """A server builds the index, then its query node swaps the indexed sealed segments in;
        until then searches run on growing data with a temporary index (recall@1 0.85 instead of
        1.0 in lookalike_live.bench.search at 20k). Wait until all rows are served indexed."""
        total = self._count(name)
        while True:
            segs = self._call("list_loaded_segments", self._client.list_loaded_segments, name)
            # Milvus never indexes a segment below indexCoord.segment.minSegmentNumRowsToEnableIndex
            # (1024 by default): it is searched brute force, which is exact
            done = [sg for sg in segs if sg.index_name or int(sg.num_rows) < MIN_INDEXED_SEGMENT_ROWS]
            served = sum(int(sg.num_rows) for sg in done)
            if served >= total and len(done) == len(segs):
                return
            if time.monotonic() > deadline:
                raise GalleryError(f"{name!r} on {self.uri}: {served} of {total} rows served from "
                                   "indexed segments so far; try again later")
            time.sleep(0.5)

    # -- reads
    def count(self) -> int:
        """Number of faces (strongly consistent)."""
        self._require()
        return self._count(self.collection)

    def _count(self, name: str) -> int:
        res = self._read("count", name, self._client.query, filter="", output_fields=["count(*)"],
                         consistency_level="Strong")
        return int(res[0]["count(*)"]) if res else 0

    def search(self, vectors: np.ndarray, k: int = 1, with_thumbnails: bool = False,
               match_by: str | None = None) -> list[list[Match]]:
        """The ``k`` best matches for each vector (N, D): N lists of :class:`GalleryMatch` (score =
        cosine similarity, best first; ``thumbnail`` set when asked). ``match_by`` (default: the
        gallery's): "identity" ranks identity centroids and answers each with its most typical
        photo; "face" ranks single photos (an identity may then appear more than once)."""
        info = self._require()
        q = _normalise(vectors, int(info["dim"]), "query vectors")
        if len(q) == 0:
            return []
        k = max(1, int(k))
        by = match_by or self.match_by
        if by not in MATCH_BY:
            raise ValueError(f"match_by must be one of {', '.join(MATCH_BY)}, got {by!r}")
        local = self._local_index(build=True) if self.local_index_enabled else None
        if local is not None:
            return self._search_local(local, q, k, with_thumbnails, by)
        if by == "identity":
            hits = self._search_centroids(q, k, with_thumbnails)
            if hits is not None:
                return hits
        res = self._read("search", self.collection, self._client.search, data=q, limit=k,
                         output_fields=_FACE_OUTPUT + (["thumbnail"] if with_thumbnails else []),
                         search_params={"metric_type": "COSINE", "params": {"ef": max(self.ef, k)}},
                         consistency_level="Session")
        return _hits_to_matches(res)

    def _centroids_ready(self) -> bool:
        """Whether the identities collection holds centroids with representative faces (an index
        build of this version made them); remembered per faces-collection generation. Warns once,
        and identity matching then searches single faces, when not."""
        gen = str(self._require().get("generation", ""))
        if self._centroids_ok is not None and self._centroids_ok[0] == gen:
            return self._centroids_ok[1]
        ok = self._identities_state() == "current" and self._count(self.identities_collection) > 0
        self._centroids_ok = (gen, ok)
        if not ok and not self._warned_no_centroids:
            self._warned_no_centroids = True
            log.warning("%s on %s has no identity centroids (an interrupted or older index build): matching "
                        "single faces; `lookalike-live index build` again (it resumes) adds them",
                        self.collection, self.uri)
        return ok

    def _identities_state(self) -> str:
        """The identities collection: "absent", "old" (no representative faces: an older version
        made it) or "current"."""
        if not self._call("has_collection", self._client.has_collection, self.identities_collection):
            return "absent"
        fields = {f["name"] for f in self._call("describe_collection", self._client.describe_collection,
                                                self.identities_collection).get("fields", [])}
        return "current" if "face_id" in fields else "old"

    def _search_centroids(self, q: np.ndarray, k: int, with_thumbnails: bool) -> list[list[Match]] | None:
        if not self._centroids_ready():
            return None
        res = self._read("search", self.identities_collection, self._client.search, data=q, limit=k,
                         output_fields=_IDENTITY_OUTPUT,
                         search_params={"metric_type": "COSINE", "params": {"ef": max(self.ef, k)}},
                         consistency_level="Session")
        out = _centroid_hits(res)
        if with_thumbnails:
            out = _attach_thumbnails(out, self.thumbnails({m.face_id for ms in out for m in ms if m.face_id is not None}))
        return out

    def _search_local(self, local: LocalIndex, q: np.ndarray, k: int, with_thumbnails: bool,
                      by: str = "face") -> list[list[Match]]:
        scores, rows = local.search_identities(q, k) if by == "identity" else local.search(q, k)
        out: list[list[Match]] = []
        for i in range(len(q)):
            matches: list[Match] = []
            for s, r in zip(scores[i].tolist(), rows[i].tolist(), strict=True):
                if r < 0:
                    break
                fid, ident, name, ds, path = local.row(r)
                matches.append(GalleryMatch(ident, name, float(s), path, fid, ds))
            out.append(matches)
        if with_thumbnails:
            out = _attach_thumbnails(out, self.thumbnails({m.face_id for ms in out for m in ms if m.face_id is not None}))
        return out

    def rebuild_centroids(self, batch_size: int = 4096) -> int:
        """Recompute the identities collection from the faces collection: per identity the mean of
        its faces' normalised vectors (re-normalised), its face count, and its representative face
        (the one nearest the centroid). Returns the number of identities."""
        info = self._require()
        dim = int(info["dim"])
        t0 = time.perf_counter()
        local = self._local_index(build=False)
        if local is not None and local.generation == info["generation"]:
            with local._lock:
                keys, cent, rep, counts = local._identity_table()
                rows = []
                for c, key in enumerate(keys):
                    fid, _, name, ds, path = local.row(int(rep[c]))
                    rows.append({"id": identity_id(key), "vector": cent[c], "identity": key, "name": name,
                                 "count": int(counts[c]), "face_id": fid, "dataset": ds, "image_path": path})
        else:
            rows = self._centroid_rows(dim, batch_size)
        state = self._identities_state()
        if state == "old":  # made by an older version: derived data, so recreate it
            self._call("drop_collection", self._client.drop_collection, self.identities_collection)
        if state != "current":
            self._create(self.identities_collection, dim, str(info["model"]), identities=True)
        for s in range(0, len(rows), 1000):
            self._call("upsert", self._client.upsert, self.identities_collection, rows[s : s + 1000])
        keep = {r["id"] for r in rows}
        stale = [int(r["id"]) for b in self._iterate(["id"], 10000, self.identities_collection)
                 for r in b if int(r["id"]) not in keep]
        for s in range(0, len(stale), 1000):
            self._call("delete", self._client.delete, self.identities_collection, ids=stale[s : s + 1000])
        self._warned_no_centroids = False
        self._centroids_ok = None
        log.info("identity centroids: %d identities (%d removed) in %.1f s", len(rows), len(stale),
                 time.perf_counter() - t0)
        return len(rows)

    def _centroid_rows(self, dim: int, batch_size: int) -> list[dict[str, Any]]:
        """Identity rows from two passes over the faces collection: sums, then representatives."""
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        display: dict[str, str] = {}
        for batch in self._iterate(["vector", "identity", "name"], batch_size):
            v = np.asarray([r["vector"] for r in batch], np.float32)
            s, c, d = _accumulate(v, [r["identity"] for r in batch], [r["name"] for r in batch], dim)
            for key, val in s.items():
                if key in sums:
                    sums[key] += val
                    counts[key] += c[key]
                else:
                    sums[key], counts[key], display[key] = val, c[key], d[key]
        cent = {k: (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32) for k, v in sums.items()}
        best: dict[str, tuple[float, int, str, str]] = {}
        for batch in self._iterate(["vector", "identity", "dataset", "image_path"], batch_size):
            for r in batch:
                if r["identity"] not in cent:  # written between the two passes: in the next rebuild
                    continue
                sim = float(np.dot(np.asarray(r["vector"], np.float32), cent[r["identity"]]))
                if r["identity"] not in best or sim > best[r["identity"]][0]:
                    best[r["identity"]] = (sim, int(r["id"]), str(r["dataset"]), str(r["image_path"]))
        return [{"id": identity_id(k), "vector": cent[k], "identity": k, "name": display[k], "count": counts[k],
                 "face_id": best[k][1], "dataset": best[k][2], "image_path": best[k][3]} for k in cent if k in best]

    def _iterate(self, fields: list[str], batch_size: int, collection: str | None = None) -> Iterable[list[dict]]:
        name = collection or self.collection
        self._require()
        self._load(name)
        try:
            it = self._client.query_iterator(name, batch_size=batch_size, filter="", output_fields=fields,
                                             timeout=max(self.timeout, 60.0))
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "query_iterator") from exc
        try:
            while True:
                try:
                    batch = it.next()
                except Exception as exc:  # noqa: BLE001
                    raise self._error(exc, "query_iterator") from exc
                if not batch:
                    return
                yield list(batch)
        finally:
            it.close()

    def face_ids(self) -> list[int]:
        """Every face's primary key (for audits: re-runs must never duplicate)."""
        return [int(r["id"]) for batch in self._iterate(["id"], 2000) for r in batch]

    def thumbnail(self, face_id: int) -> bytes | None:
        """JPEG bytes of a face's thumbnail, or None (unknown id or no thumbnail)."""
        return self.thumbnails([face_id]).get(int(face_id))

    def thumbnails(self, face_ids: Iterable[int]) -> dict[int, bytes | None]:
        """JPEG thumbnails of several faces in one call: {face id: bytes or None}."""
        ids = sorted({int(i) for i in face_ids})
        if not ids:
            return {}
        self._require()
        res = self._read("get", self.collection, self._client.get, ids=ids, output_fields=["thumbnail"])
        return {int(r["id"]): _b64_to_thumb(r.get("thumbnail")) for r in res}

    def stats(self) -> dict[str, Any]:
        """faces, identities, model, dim, index (type, params, state), load state, uri, collection."""
        out: dict[str, Any] = {"uri": self.uri, "collection": self.collection,
                               "backend": "milvus-lite" if self.is_lite else "milvus"}
        try:
            out["server_version"] = self._call("get_server_version", self._client.get_server_version)
        except GalleryError:
            out["server_version"] = None
        info = self._describe(refresh=True)
        if info is None:
            out.update(exists=False, faces=0, identities=0, model=None, dim=None)
            return out
        out.update(exists=True, faces=self.count(), model=info["model"] or None, dim=info["dim"])
        has_ids = self._call("has_collection", self._client.has_collection, self.identities_collection)
        out["identities"] = self._count(self.identities_collection) if has_ids else 0
        di = self._call("describe_index", self._client.describe_index, self.collection, "vector") or {}
        out["index"] = {
            "type": di.get("index_type"), "metric": di.get("metric_type"),
            "params": ({"M": int(di.get("M", HNSW_M)), "efConstruction": int(di.get("efConstruction", HNSW_EF_CONSTRUCTION)),
                        "ef": self.ef} if di.get("index_type") == "HNSW" else {}),
            "state": str(di.get("state")), "indexed_rows": di.get("indexed_rows"),
            "pending_rows": di.get("pending_index_rows"),
        }
        out["load_state"] = str(self._call("get_load_state", self._client.get_load_state, self.collection).get("state"))
        local = self._local
        out["local_index"] = {"enabled": self.local_index_enabled, "ready": local is not None,
                              "rows": len(local) if local else 0, "mode": local.mode if local else None,
                              "cache": str(self._cache_dir) if self._cache_dir else None}
        return out

    # -- local index
    def _local_index(self, build: bool) -> LocalIndex | None:
        """The in-process index if enabled; with ``build`` it is loaded (from the persisted cache
        when its generation matches, else pulled from Milvus) on first use."""
        if not self.local_index_enabled:
            return None
        local, info = self._local, self._info  # no lock: readers never wait for a loading index
        if local is not None and info is not None and local.generation == info.get("generation"):
            return local
        if not build:
            return local
        with self._local_build_lock:  # one loader at a time; the others wait for its result
            local, info = self._local, self._info
            if local is not None and info is not None and local.generation == info.get("generation"):
                return local
            info = self._describe(refresh=True)
            if info is None:
                return None
            local = self._open_local(info)
            with self._local_lock:
                self._local = local
            return local

    def warm_local_index(self) -> LocalIndex | None:
        """Load or build the local index now (returns None when disabled or the collection is absent)."""
        local = self._local_index(build=True)
        if local is not None:
            local.prepare()
            self._save_local()
        return local

    def _open_local(self, info: dict[str, Any]) -> LocalIndex:
        cache = self._cache_dir
        t0 = time.perf_counter()
        if cache is not None:
            meta = LocalIndex.read_meta(cache)
            if meta and meta.get("generation") == info["generation"] and int(meta.get("dim", 0)) == info["dim"]:
                try:
                    local = LocalIndex.load(cache, nprobe=self.nprobe)
                    log.info("local index: %d faces loaded from %s in %.1f s", len(local), cache,
                             time.perf_counter() - t0)
                    return local
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("local index cache %s unreadable (%s): rebuilding from Milvus", cache, exc)
        local = LocalIndex(int(info["dim"]), nprobe=self.nprobe)
        local.generation, local.model = info["generation"], info["model"]
        fields = ["id", "vector", "identity", "name", "dataset", "image_path"]
        for batch in self._iterate(fields, 5000):
            local.upsert([int(r["id"]) for r in batch], _normalise([r["vector"] for r in batch], info["dim"], "vectors"),
                         [r["identity"] for r in batch], [r["name"] for r in batch],
                         [r["dataset"] for r in batch], [r["image_path"] for r in batch])
        log.info("local index: %d faces pulled from %s in %.1f s", len(local), self.uri, time.perf_counter() - t0)
        local.prepare()
        local.dirty = True
        return local

    def _save_local(self) -> None:
        local, cache = self._local, self._cache_dir
        if local is None or cache is None or not local.dirty:
            return
        if self._info is not None and local.generation != self._info.get("generation"):
            return
        t0 = time.perf_counter()
        try:
            local.save(cache)
            log.info("local index: %d faces saved to %s in %.1f s", len(local), cache, time.perf_counter() - t0)
        except OSError as exc:
            log.warning("could not save the local index to %s: %s", cache, exc)

    # -- async
    def searcher(self, **kwargs: Any) -> AsyncSearcher:
        """An :class:`AsyncSearcher` on this gallery (see its arguments)."""
        return AsyncSearcher(self, **kwargs)

    # -- lifecycle
    def close(self) -> None:
        """Save the local index if it changed and close the connection (idempotent)."""
        if self._closed:
            return
        try:
            self._save_local()
        finally:
            self._closed = True
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                log.debug("closing the Milvus client failed", exc_info=True)
            if self.is_lite:
                _lite_release(self.uri)

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Gallery(uri={self.uri!r}, collection={self.collection!r})"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_") or "model"


def _with_thumb(m: Match, thumb: bytes | None) -> Match:
    if isinstance(m, GalleryMatch):
        return GalleryMatch(m.identity, m.name, m.score, m.image_ref, m.face_id, m.dataset, thumb)
    return m


def _hits_to_matches(res: Iterable[Iterable[Mapping[str, Any]]]) -> list[list[Match]]:
    out: list[list[Match]] = []
    for hits in res:
        row: list[Match] = []
        for h in hits:
            e = h["entity"]
            row.append(GalleryMatch(str(e.get("identity", "")), str(e.get("name", "")), float(h["distance"]),
                                    str(e.get("image_path", "")), int(h["id"]), str(e.get("dataset", "")),
                                    _b64_to_thumb(e.get("thumbnail"))))
        out.append(row)
    return out


def _centroid_hits(res: Iterable[Iterable[Mapping[str, Any]]]) -> list[list[Match]]:
    return [[GalleryMatch(str(h["entity"]["identity"]), str(h["entity"]["name"]), float(h["distance"]),
                          str(h["entity"]["image_path"]), int(h["entity"]["face_id"]), str(h["entity"]["dataset"]))
             for h in hits] for hits in res]


def _attach_thumbnails(matches: list[list[Match]], thumbs: Mapping[int, bytes | None]) -> list[list[Match]]:
    return [[_with_thumb(m, thumbs.get(m.face_id) if m.face_id is not None else None) for m in ms] for ms in matches]


def _accumulate(vecs: np.ndarray, idents: Sequence[str], names: Sequence[str], dim: int
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


# --------------------------------------------------------------------------- async search
def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a background task's exception so asyncio does not log it as never retrieved."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("background load_collection failed: %s", task.exception())


def _cancel(fut: concurrent.futures.Future) -> None:
    """Cancel a pending future so that ``concurrent.futures.wait``/``as_completed`` see it as done."""
    if fut.cancel():
        fut.set_running_or_notify_cancel()


class _FastFail(GalleryUnavailableError):
    """Raised between reconnect attempts without contacting Milvus."""


class AsyncSearcher:
    """Runs gallery searches off the caller's thread: ``submit()`` returns at once with a
    :class:`concurrent.futures.Future` of ``list[list[Match]]``; video never waits for Milvus.

    * With the gallery's local index (the Milvus Lite default) searches run on one worker thread
      (numpy, ~2 ms). While the local index is still loading, and for Milvus servers, they go
      through pymilvus's ``AsyncMilvusClient`` on this object's own event-loop thread
      (Milvus Lite 3.2 serves AsyncMilvusClient too: it is a gRPC server in this process).
    * At most ``max_in_flight`` searches run at once. Waiting requests queue per ``source`` (a
      camera, a window), up to ``max_pending`` each: when a source's queue is full its own oldest
      request is dropped (its future is cancelled) and counted for that source, so one busy camera
      never evicts another's queries. Sources take turns (round robin) for the free slots.
    * Each search is bounded by ``timeout`` seconds. Failures arrive through the future as
      :class:`GalleryUnavailableError` (cannot reach Milvus) or :class:`GalleryError`.
    * After a connection failure the client is closed and re-created on the next request (at most
      once per ``reconnect_interval`` seconds; requests in between fail fast), so it recovers
      by itself when Milvus comes back, without waiting out gRPC's reconnect backoff.
    """

    def __init__(self, gallery: Gallery, *, max_pending: int = 8, max_in_flight: int = 2, timeout: float = 2.0,
                 reconnect_interval: float = 1.0, warm_local: bool = True) -> None:
        if max_pending < 1 or max_in_flight < 1:
            raise ConfigError("AsyncSearcher: max_pending and max_in_flight must be >= 1")
        self.gallery = gallery
        self.max_pending = int(max_pending)
        self.max_in_flight = int(max_in_flight)
        self.timeout = float(timeout)
        self.reconnect_interval = float(reconnect_interval)
        self._lock = threading.Lock()
        # per source: its waiting requests; _turns: the sources with waiting requests, next first
        self._pending: dict[str, collections.deque[tuple[concurrent.futures.Future, np.ndarray, int, bool]]] = {}
        self._turns: collections.deque[str] = collections.deque()
        self.by_source: dict[str, dict[str, int]] = {}  # per source: submitted, dropped
        self._in_flight = 0
        self._closed = False
        self.counters = {"submitted": 0, "completed": 0, "failed": 0, "dropped": 0, "reconnects": 0,
                         "local": 0, "milvus": 0}
        self._client: Any = None
        self._load_task: asyncio.Future[Any] | None = None
        self._centroids: bool | None = None  # the server has identity centroids (None: not asked yet)
        self._centroids_at = -1e9  # when the question was last asked (monotonic)
        self._client_failed_at = 0.0
        self._last_error = ""
        self._connect_error = ""  # the last real connection failure (not a fast-fail)
        info = gallery._require()
        self._dim = int(info["dim"])
        self._local_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gallery-local")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="gallery-async-search", daemon=True)
        self._thread.start()
        self._warm_thread: threading.Thread | None = None
        if warm_local and gallery.local_index_enabled and gallery._local_index(build=False) is None:
            self._warm_thread = threading.Thread(target=self._warm, name="gallery-local-warm", daemon=True)
            self._warm_thread.start()

    # -- public
    def submit(self, vectors: np.ndarray, k: int = 1, with_thumbnails: bool = False, source: str = ""
               ) -> concurrent.futures.Future[list[list[Match]]]:
        """Queue a search of ``vectors`` (N, D) for ``source``; never blocks. The future may be
        cancelled when that source's queue overflows (``fut.cancelled()``)."""
        fut: concurrent.futures.Future[list[list[Match]]] = concurrent.futures.Future()
        try:
            q = _normalise(vectors, self._dim, "query vectors")
        except GalleryError as exc:
            fut.set_exception(exc)
            return fut
        except ShapeError as exc:
            fut.set_exception(exc)
            return fut
        dropped: list[concurrent.futures.Future] = []
        with self._lock:
            if self._closed:
                fut.set_exception(GalleryError("AsyncSearcher is closed"))
                return fut
            self.counters["submitted"] += 1
            mine = self.by_source.setdefault(source, {"submitted": 0, "dropped": 0})
            mine["submitted"] += 1
            queue = self._pending.get(source)
            if queue is None:
                queue = self._pending[source] = collections.deque()
            if not queue:
                self._turns.append(source)
            queue.append((fut, q, max(1, int(k)), bool(with_thumbnails)))
            while len(queue) > self.max_pending:
                dropped.append(queue.popleft()[0])
                self.counters["dropped"] += 1
                mine["dropped"] += 1
        for d in dropped:
            _cancel(d)
        try:
            self._loop.call_soon_threadsafe(self._dispatch)
        except RuntimeError:  # closed between the check above and now: close() cancelled it
            if not fut.done():
                fut.set_exception(GalleryError("AsyncSearcher is closed"))
        return fut

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counters, "pending": sum(len(q) for q in self._pending.values()),
                    "in_flight": self._in_flight, "local_ready": self.gallery._local is not None,
                    "last_error": self._last_error, "by_source": {s: dict(c) for s, c in self.by_source.items()}}

    def close(self, timeout: float = 5.0) -> None:
        """Cancel pending requests, finish running ones (bounded), stop the threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = [p[0] for q in self._pending.values() for p in q]
            self._pending.clear()
            self._turns.clear()
        for f in pending:
            _cancel(f)
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            fut.result(timeout=timeout)
        except Exception:  # noqa: BLE001
            log.debug("async searcher shutdown incomplete", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=timeout)
        self._local_pool.shutdown(wait=False, cancel_futures=True)
        if self._warm_thread is not None:  # loading the local index: the gallery must outlive it
            self._warm_thread.join(timeout=max(timeout, 30.0))
            if self._warm_thread.is_alive():
                log.warning("the local index is still loading after %.0f s", max(timeout, 30.0))

    def __enter__(self) -> AsyncSearcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- loop thread
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.close()

    def _warm(self) -> None:
        try:
            self.gallery.warm_local_index()
        except Exception as exc:  # noqa: BLE001 - searches keep using Milvus
            log.warning("local index not loaded, searching Milvus instead: %s", exc)

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if self._closed or self._in_flight >= self.max_in_flight or not self._turns:
                    return
                source = self._turns.popleft()  # round robin over the sources that wait
                queue = self._pending[source]
                fut, q, k, thumbs = queue.popleft()
                if queue:
                    self._turns.append(source)
                if not fut.set_running_or_notify_cancel():
                    continue
                self._in_flight += 1
            self._loop.create_task(self._run(fut, q, k, thumbs))

    async def _run(self, fut: concurrent.futures.Future, q: np.ndarray, k: int, thumbs: bool) -> None:
        try:
            local = self.gallery._local_index(build=False)
            if local is not None:
                with self._lock:
                    self.counters["local"] += 1
                res = await asyncio.wait_for(self._loop.run_in_executor(
                    self._local_pool, self.gallery._search_local, local, q, k, thumbs, self.gallery.match_by),
                    self.timeout)
            else:
                with self._lock:
                    self.counters["milvus"] += 1
                res = await self._search_milvus(q, k, thumbs)
        except Exception as exc:  # noqa: BLE001
            err = self._translate(exc)
            with self._lock:
                self.counters["failed"] += 1
                self._last_error = str(err)
            fut.set_exception(err)
        else:
            with self._lock:
                self.counters["completed"] += 1
            fut.set_result(res)
        finally:
            with self._lock:
                self._in_flight -= 1
            self._dispatch()

    def _translate(self, exc: BaseException) -> GalleryError:
        if isinstance(exc, GalleryError):
            return exc
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            return GalleryUnavailableError(_unavailable_message(
                self.gallery.uri, f"no answer within {self.timeout:.1f} s"))
        return self.gallery._error(exc, "search")

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        wait = self._client_failed_at + self.reconnect_interval - time.monotonic()
        if wait > 0:
            # fail fast between reconnect attempts; this must not push the next attempt back
            raise _FastFail(_unavailable_message(
                self.gallery.uri, f"reconnecting, next try in {wait:.1f} s; last error: {self._connect_error}"))
        from pymilvus import AsyncMilvusClient

        if self._client_failed_at:
            with self._lock:
                self.counters["reconnects"] += 1
        self._client = AsyncMilvusClient(uri=self.gallery.uri, token=self.gallery.token, timeout=self.timeout)
        return self._client

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        self._client_failed_at = time.monotonic()
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), 1.0)
            except Exception:  # noqa: BLE001
                log.debug("closing the async Milvus client failed", exc_info=True)

    async def _use_centroids(self) -> bool:
        """Match by identity centroids on the server? Asked off the loop when first needed, again
        every CENTROIDS_RECHECK_S while the answer is no (a build may add them), and no more often
        than ``reconnect_interval`` while the question fails (server down: single faces meanwhile)."""
        if self.gallery.match_by != "identity":
            return False
        now = time.monotonic()
        due = now - self._centroids_at > (self.reconnect_interval if self._centroids is None else CENTROIDS_RECHECK_S)
        if due and self._centroids is not True:  # ask again now and then: a build may add them meanwhile
            self._centroids_at = now
            self.gallery._centroids_ok = None
            try:
                self._centroids = await asyncio.wait_for(
                    self._loop.run_in_executor(None, self.gallery._centroids_ready), self.timeout)
            except Exception:  # noqa: BLE001 - unknown for now (server down?): asked again later
                log.debug("could not check for identity centroids", exc_info=True)
        return bool(self._centroids)

    async def _search_milvus(self, q: np.ndarray, k: int, thumbs: bool) -> list[list[Match]]:
        g = self.gallery
        by_identity = await self._use_centroids()
        name = g.identities_collection if by_identity else g.collection
        try:
            client = await self._get_client()
            fields = _IDENTITY_OUTPUT if by_identity else _FACE_OUTPUT + (["thumbnail"] if thumbs else [])
            res = await asyncio.wait_for(client.search(
                name, data=q, limit=k, output_fields=fields,
                search_params={"metric_type": "COSINE", "params": {"ef": max(g.ef, k)}},
                consistency_level="Session", timeout=self.timeout), self.timeout)
            if by_identity:
                out = _centroid_hits(res)
                if thumbs and any(out):
                    rows = await asyncio.wait_for(client.get(
                        g.collection, ids=sorted({m.face_id for ms in out for m in ms if m.face_id is not None}), output_fields=["thumbnail"],
                        timeout=self.timeout), self.timeout)
                    out = _attach_thumbnails(out, {int(r["id"]): _b64_to_thumb(r.get("thumbnail")) for r in rows})
                return out
        except _FastFail:
            raise
        except Exception as exc:
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or _is_unavailable(exc):
                self._connect_error = _reason(exc)
                await self._drop_client()
            elif _is_not_loaded(exc):
                # a restarted server reloads its collections by itself; ask for it anyway
                if self._client is not None and (self._load_task is None or self._load_task.done()):
                    self._load_task = asyncio.ensure_future(self._client.load_collection(name, timeout=300))
                    self._load_task.add_done_callback(_consume)
                raise GalleryUnavailableError(
                    f"collection {name!r} on {g.uri} is not loaded yet (the server is starting, or "
                    "the collection was released); it is being loaded: search again shortly"
                ) from exc
            raise
        return _hits_to_matches(res)

    async def _shutdown(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self._loop) if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout)
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await asyncio.wait_for(client.close(), 1.0)
            except Exception:  # noqa: BLE001
                log.debug("closing the async Milvus client failed", exc_info=True)
