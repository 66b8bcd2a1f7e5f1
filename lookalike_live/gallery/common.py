"""What the gallery's write side and read side share: schema constants, stable ids, URIs, match
and record types, thumbnails, vector checks, the mapping of pymilvus errors to typed ones, and
the conversion of Milvus hits to matches."""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    ConfigError,
    DimensionMismatchError,
    GalleryError,
    GalleryUnavailableError,
    ShapeError,
)
from ..redact import redact_text, redact_url
from ..types import Match

log = logging.getLogger("lookalike_live.gallery")

SCHEMA_VERSION = "1"
PROP_MODEL = "lookalike.model"
PROP_DIM = "lookalike.dim"
PROP_SCHEMA = "lookalike.schema"
PROP_GENERATION = "lookalike.generation"
#: on the faces collection: how the faces were cropped for the embedder (the model spec's
#: AlignmentSpec.describe()); vectors of two crops of one model do not mix well
PROP_CROP = "lookalike.crop"
#: on the identities collection: the faces generation its centroids were made from
PROP_CENTROIDS_OF = "lookalike.centroids_of"
#: on the centred collection: the gallery's mean vector its centroids were centred on (base64 of
#: little-endian float32; queries are centred on it too)
PROP_MEAN = "lookalike.mean"

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
#: seconds after which a live matcher asks a server again whether identity centroids exist
CENTROIDS_RECHECK_S = 60.0

#: Milvus's default indexCoord.segment.minSegmentNumRowsToEnableIndex
MIN_INDEXED_SEGMENT_ROWS = 1024

THUMBNAIL_MAX_BYTES = 12 * 1024  # base64 of this is exactly the VARCHAR limit below
THUMB_B64_MAX = 4 * THUMBNAIL_MAX_BYTES // 3
MAX_IDENTITY = 256
MAX_NAME = 512
MAX_DATASET = 128
MAX_PATH = 1024

FACE_OUTPUT = ["identity", "name", "dataset", "image_path"]
IDENTITY_OUTPUT = ["identity", "name", "face_id", "dataset", "image_path"]
_MASK63 = (1 << 63) - 1


class ModelMismatchError(GalleryError):
    """The collection was built with a different embedding model than the one in use."""


class CropMismatchError(ModelMismatchError):
    """The collection's faces were cropped for the embedder differently from the model's spec now."""


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


def check_collection_name(name: str) -> None:
    """Milvus's rule for collection names; the name is also a folder of the local index cache."""
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$", name):
        raise ConfigError(f"collection name {name!r} is not valid: start with a letter or '_', then "
                          "letters, digits and '_' only (--collection)")


def validate_uri(uri: str) -> str:
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


def skip_pymilvus_string_check() -> None:
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


def thumb_to_b64(data: bytes | None) -> str:
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


def b64_to_thumb(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text else None


def normalise(vectors: Any, dim: int | None, what: str) -> np.ndarray:
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
def is_unavailable(exc: BaseException) -> bool:
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


def is_not_loaded(exc: BaseException) -> bool:
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


def error_reason(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return redact_text(" ".join(str(msg).split())[:300])


def unavailable_message(uri: str, reason: str) -> str:
    uri, reason = redact_url(uri), redact_text(reason)
    if is_lite_uri(uri):
        return (
            f"Milvus Lite could not open {uri} ({reason}). Milvus Lite allows one process per file: "
            "close the other lookalike-live process using it, or point --milvus-uri at a Milvus server; "
            "also check that the folder exists and is writable."
        )
    return (
        f"Milvus at {uri} is unreachable ({reason}). Start one with `docker compose up -d` in the "
        "lookalike-live repository (standalone on http://localhost:19530), check the host, port and "
        "--token, or use the embedded default (omit --milvus-uri for a Milvus Lite file)."
    )




def to_gallery_error(exc: BaseException, uri: str, collection: str, action: str) -> GalleryError:
    """``exc`` (from pymilvus, grpc or asyncio) as a typed error: GalleryUnavailableError when
    Milvus cannot be reached, else GalleryError naming the action."""
    if isinstance(exc, GalleryError):
        return exc
    if is_unavailable(exc):
        return GalleryUnavailableError(unavailable_message(uri, error_reason(exc)))
    return GalleryError(f"Milvus {action} failed on {redact_url(uri)} (collection {collection!r}): {error_reason(exc)}")


def collection_schema(dim: int, identities: bool) -> Any:
    """The faces collection's schema, or with ``identities`` the identity centroids'."""
    from pymilvus import DataType, MilvusClient

    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    s.add_field("identity", DataType.VARCHAR, max_length=MAX_IDENTITY)
    s.add_field("name", DataType.VARCHAR, max_length=MAX_NAME)
    if identities:  # the centroid, and its representative face (the most typical photo)
        s.add_field("count", DataType.INT64)
        s.add_field("face_id", DataType.INT64)
        s.add_field("dataset", DataType.VARCHAR, max_length=MAX_DATASET)
        s.add_field("image_path", DataType.VARCHAR, max_length=MAX_PATH)
        return s
    s.add_field("dataset", DataType.VARCHAR, max_length=MAX_DATASET)
    s.add_field("image_path", DataType.VARCHAR, max_length=MAX_PATH)
    s.add_field("face_index", DataType.INT32)
    s.add_field("bbox", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=4)
    s.add_field("quality", DataType.FLOAT)
    s.add_field("thumbnail", DataType.VARCHAR, max_length=THUMB_B64_MAX)
    return s


def encode_vector(v: np.ndarray) -> str:
    """A vector as a collection property: base64 of its little-endian float32 bytes."""
    return base64.b64encode(np.asarray(v, "<f4").tobytes()).decode("ascii")


def decode_vector(text: str, dim: int) -> np.ndarray:
    """The vector :func:`encode_vector` wrote; ValueError unless it has ``dim`` finite values."""
    v = np.frombuffer(base64.b64decode(text, validate=True), "<f4").astype(np.float32)
    if v.shape != (dim,) or not np.isfinite(v).all():
        raise ValueError(f"expected {dim} finite float32 values, got {v.shape[0]}")
    return v


# --------------------------------------------------------------------------- hits -> matches
def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_") or "model"


def with_thumb(m: Match, thumb: bytes | None) -> Match:
    if isinstance(m, GalleryMatch):
        return GalleryMatch(m.identity, m.name, m.score, m.image_ref, m.face_id, m.dataset, thumb)
    return m


def hits_to_matches(res: Iterable[Iterable[Mapping[str, Any]]]) -> list[list[Match]]:
    out: list[list[Match]] = []
    for hits in res:
        row: list[Match] = []
        for h in hits:
            e = h["entity"]
            row.append(GalleryMatch(str(e.get("identity", "")), str(e.get("name", "")), float(h["distance"]),
                                    str(e.get("image_path", "")), int(h["id"]), str(e.get("dataset", "")),
                                    b64_to_thumb(e.get("thumbnail"))))
        out.append(row)
    return out


def centroid_hits(res: Iterable[Iterable[Mapping[str, Any]]]) -> list[list[Match]]:
    return [[GalleryMatch(str(h["entity"]["identity"]), str(h["entity"]["name"]), float(h["distance"]),
                          str(h["entity"]["image_path"]), int(h["entity"]["face_id"]), str(h["entity"]["dataset"]))
             for h in hits] for hits in res]


def attach_thumbnails(matches: list[list[Match]], thumbs: Mapping[int, bytes | None]) -> list[list[Match]]:
    return [[with_thumb(m, thumbs.get(m.face_id) if m.face_id is not None else None) for m in ms] for ms in matches]



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


def lite_connect(path: str, connect: Any) -> Any:
    """``connect()`` (a MilvusClient for the Lite file ``path``) and count it, as one step."""
    with _lite_path_lock(path):
        client = connect()
        with _lite_lock:
            _lite_refs[path] += 1
        return client


def lite_release(path: str) -> None:
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


