"""The gallery's write side: the collections' schema, upserts, identity centroids, index waits,
stats, and the sync reads that tools use (``eval``, ``index``, benchmarks). Live video reads
through :class:`~lookalike_live.gallery.matcher.Matcher` (:meth:`Gallery.matcher`)."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import MATCH_BY
from ..errors import DimensionMismatchError, GalleryError, GalleryMissingError, ShapeError
from ..redact import redact_url
from ..types import Match
from .common import (
    FACE_OUTPUT,
    HNSW_EF,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    MAX_DATASET,
    MAX_IDENTITY,
    MAX_NAME,
    MAX_PATH,
    MIN_INDEXED_SEGMENT_ROWS,
    PROP_CROP,
    PROP_DIM,
    PROP_GENERATION,
    PROP_MODEL,
    PROP_SCHEMA,
    SCHEMA_VERSION,
    CropMismatchError,
    FaceRecord,
    ModelMismatchError,
    attach_thumbnails,
    b64_to_thumb,
    check_collection_name,
    collection_schema,
    default_uri,
    hits_to_matches,
    is_lite_uri,
    is_not_loaded,
    lite_connect,
    lite_release,
    normalise,
    skip_pymilvus_string_check,
    slug,
    thumb_to_b64,
    to_gallery_error,
    validate_uri,
)
from .identities import IdentityCentroids
from .local_index import LocalIndex, held_thumbnails, search_local
from .snapshot import Snapshots

if TYPE_CHECKING:
    from .matcher import Matcher

log = logging.getLogger("lookalike_live.gallery")
#: a collection another build (a shard started at the same moment) is creating: how often and how long
#: to wait for it to be complete (its index and properties) before giving up
CREATE_WAIT_TRIES = 40
CREATE_WAIT_S = 0.5


class Gallery(IdentityCentroids):
    """A face gallery in Milvus (Milvus Lite file by default, or any Milvus URI).

    Sync methods are for builds and tools; live video uses :meth:`matcher` (a
    :class:`~lookalike_live.gallery.matcher.Matcher`). All Milvus failures surface as :class:`GalleryError`;
    "cannot reach Milvus" as :class:`GalleryUnavailableError`, within ``timeout`` seconds.

    ``match_by`` (what :meth:`search` ranks): "face" (default here) = single photos; "identity" =
    identity centroids, each answered with its most typical photo; "centred" = the same centroids
    made, and the query compared, with the gallery's mean vector taken out. The live commands match
    as ``Settings.match_by`` says (see :meth:`from_settings`), "centred" by default: ``eval identify
    --study`` measured it the best at telling strangers from the gallery's people (README, "How
    faces are matched, and why").

    ``create=False`` (commands that only read) refuses a Milvus Lite file that does not exist
    (:class:`GalleryMissingError`) instead of creating it empty.

    ``local_index``: keep an in-process copy of the vectors for search (:class:`LocalIndex`).
    None (default) turns it on for Milvus Lite URIs, where Lite's own search costs ~90 ms at
    200k faces; a Milvus server answers in a few ms and needs none.
    """

    def __init__(self, uri: str | None = None, collection: str = "faces", token: str | None = None, *,
                 timeout: float = 10.0, local_index: bool | None = None, nprobe: int = 16,
                 ef: int = HNSW_EF, match_by: str = "face", create: bool = True) -> None:
        if match_by not in MATCH_BY:
            raise ValueError(f"match_by must be one of {', '.join(MATCH_BY)}, got {match_by!r}")
        self.match_by = match_by
        self._warned_no_centroids = False
        self._centroids_ok: tuple[str, bool] | None = None  # (faces generation, centroids usable)
        self._warned_no_centred = False
        self._warned_crop = False
        self._centred_mean: tuple[str, np.ndarray | None] | None = None  # (faces generation, mean)
        check_collection_name(collection)
        self.uri = validate_uri(uri or default_uri())
        self.collection = collection
        self.identities_collection = f"{collection}_identities"
        self.centred_collection = f"{collection}_centred"
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
        self.snapshots = Snapshots(self, self._cache_dir, self.nprobe)
        self._info: dict[str, Any] | None = None  # dim, model, generation of the faces collection
        self._closed = False
        if self.is_lite and not create and not Path(self.uri).exists():  # Milvus Lite 3 keeps a folder there
            raise GalleryMissingError(
                f"there is no gallery at {self.shown_uri}: build one with `lookalike-live index build --dataset DIR "
                "--format celeba|folders|vggface2` (same --milvus-uri), or point --milvus-uri at an existing one")
        if self.is_lite:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        from pymilvus import MilvusClient

        t0 = time.perf_counter()
        def connect() -> Any:
            return MilvusClient(uri=self.uri, token=self.token, timeout=self.timeout)

        try:
            self._client = lite_connect(self.uri, connect) if self.is_lite else connect()
        except Exception as exc:  # noqa: BLE001 - pymilvus raises bare MilvusException
            raise self._error(exc, "connect") from exc
        log.debug("connected to %s in %.2f s", self.shown_uri, time.perf_counter() - t0)

    @property
    def shown_uri(self) -> str:
        """The URI as logs, errors and stats show it: without a password or a token in it."""
        return redact_url(self.uri)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> Gallery:
        """The gallery ``settings`` name (URI, collection, token), matching as ``settings.match_by`` says."""
        return cls(settings.milvus_uri, collection=settings.collection, token=settings.token,
                   match_by=settings.match_by, **kwargs)

    # -- plumbing
    def _error(self, exc: BaseException, action: str) -> GalleryError:
        return to_gallery_error(exc, self.uri, self.collection, action)

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise GalleryError(f"gallery {self.shown_uri} ({self.collection}) is closed")
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
            if not is_not_loaded(err):
                raise
        log.info("collection %s not loaded on %s: loading it", name, self.shown_uri)
        self._load(name)
        return self._call(action, fn, name, *args, **kwargs)

    @property
    def _cache_dir(self) -> Path | None:
        return Path(self.uri + ".lookalike-index") / self.collection if self.is_lite else None

    def describe(self, refresh: bool = False) -> dict[str, Any] | None:
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
                f"collection {self.collection!r} on {self.shown_uri} has no 'vector' field: it was not created by "
                "lookalike-live; use another --collection"
            )
        self._info = {"dim": dim, "model": props.get(PROP_MODEL, ""), "generation": props.get(PROP_GENERATION, ""),
                      "crop": props.get(PROP_CROP, "")}
        self._load(self.collection)
        return self._info

    def info(self) -> dict[str, Any]:
        info = self.describe()
        if info is None:
            raise GalleryError(
                f"collection {self.collection!r} does not exist on {self.shown_uri}: build the gallery first "
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
                raise GalleryError(f"collections {todo} on {self.shown_uri} still loading after {max(self.timeout, 300.0):.0f} s")
            if todo:
                time.sleep(0.1)
        log.info("loaded %s in %.1f s", ", ".join(names), time.perf_counter() - t0)

    def _create(self, name: str, dim: int, model: str, identities: bool, load: bool = True, crop: str = "") -> None:
        ip = self._client.prepare_index_params()
        if self.index_type == "HNSW":
            ip.add_index("vector", index_type="HNSW", metric_type="COSINE",
                         params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION})
        else:
            ip.add_index("vector", index_type=self.index_type, metric_type="COSINE")
        self._call("create_collection", self._client.create_collection, name,
                   schema=collection_schema(dim, identities), consistency_level="Session")
        # sync=False: the collection is empty, and Milvus Lite lacks the AllocTimestamp call that
        # pymilvus's wait-for-index loop makes (it logs a server-side traceback otherwise)
        self._call("create_index", self._client.create_index, name, ip, sync=False)
        self._call("alter_collection_properties", self._client.alter_collection_properties, name,
                   properties={PROP_MODEL: model, PROP_DIM: str(dim), PROP_SCHEMA: SCHEMA_VERSION,
                               PROP_GENERATION: uuid.uuid4().hex, **({PROP_CROP: crop} if crop else {})})
        if load:
            self._load(name)
        log.info("created collection %s (%d-d, model %s, %s index, COSINE) on %s", name, dim, model,
                 f"HNSW M={HNSW_M} efConstruction={HNSW_EF_CONSTRUCTION}" if self.index_type == "HNSW"
                 else self.index_type, self.shown_uri)

    def _bump_generation(self) -> str:
        gen = uuid.uuid4().hex
        self._call("alter_collection_properties", self._client.alter_collection_properties, self.collection,
                   properties={PROP_GENERATION: gen})
        if self._info is not None:
            self._info["generation"] = gen
        return gen

    # -- schema
    def ensure(self, dim: int, model: str, crop: str = "") -> None:
        """Create the faces and identities collections if absent (and load them), recording ``crop``
        (the spec's ``alignment.describe()``); refuse a dimension mismatch
        (:class:`DimensionMismatchError`), a different model (:class:`ModelMismatchError`) or faces
        cropped otherwise (:class:`CropMismatchError`)."""
        created = False
        for attempt in range(CREATE_WAIT_TRIES + 1):
            last = attempt >= CREATE_WAIT_TRIES
            try:
                info = self.describe(refresh=True)
                if info is None:
                    self._create(self.collection, int(dim), model, identities=False, load=False, crop=crop)
                    created = True
                    break
            except GalleryError:
                # another build created it a moment before us (its index or properties not there yet)
                if last or not self._call("has_collection", self._client.has_collection, self.collection):
                    raise
                time.sleep(CREATE_WAIT_S)
                continue
            if not info["model"] and not last:
                time.sleep(CREATE_WAIT_S)  # another build (a shard) is creating it right now
                continue
            self.check_model(model, dim, crop, building=True)  # a mismatch is refused at once, never waited on
            break
        if not self._call("has_collection", self._client.has_collection, self.identities_collection):
            try:
                self._create(self.identities_collection, int(dim), model, identities=True, load=False)
            except GalleryError:
                if not self._call("has_collection", self._client.has_collection, self.identities_collection):
                    raise
                time.sleep(CREATE_WAIT_S)  # made by another build at the same time: let it finish
        self._load(self.collection, self.identities_collection)
        info = self.info()
        if created and self.local_index_enabled:
            local = LocalIndex(int(dim), nprobe=self.nprobe)
            local.generation, local.model = info["generation"], model
            self.snapshots.set(local)

    def check_model(self, model: str, dim: int, crop: str = "", *, building: bool = False) -> None:
        """Raise unless the faces collection exists and was built for ``model`` with ``dim``-d vectors.
        ``crop`` (the spec's ``alignment.describe()``) against the one the faces were cropped with: a
        difference is refused when ``building`` (the two crops would mix in one gallery), else
        warned once (matches still come, less accurate until a rebuild)."""
        info = self.info()
        if int(info["dim"]) != int(dim):
            raise DimensionMismatchError(
                f"collection {self.collection!r} on {self.shown_uri} holds {info['dim']}-d vectors"
                f"{' from model ' + repr(info['model']) if info['model'] else ''}, but model {model!r} makes "
                f"{dim}-d vectors: use another collection (--collection {self.collection}_{slug(model)}) "
                f"or delete this one (`lookalike-live index drop --collection {self.collection} --yes`) and rebuild it"
            )
        if info["model"] and model and info["model"] != model:
            raise ModelMismatchError(
                f"collection {self.collection!r} on {self.shown_uri} was built with model {info['model']!r}, not "
                f"{model!r}: similarities between the two models mean nothing. Use --model {info['model']}, "
                f"another collection (--collection {self.collection}_{slug(model)}), or delete this one "
                f"(`lookalike-live index drop --collection {self.collection} --yes`) and rebuild it"
            )
        self._check_crop(model, crop, str(info.get("crop") or ""), building)

    def _check_crop(self, model: str, crop: str, built: str, building: bool) -> None:
        rebuild = (f"`lookalike-live index drop --collection {self.collection} --yes`, then `lookalike-live index "
                   "build` again")
        if crop and built and crop != built:
            message = (f"collection {self.collection!r} on {self.shown_uri} holds faces cropped as '{built}', but "
                       f"model {model!r} now crops them as '{crop}' (its spec changed)")
            if building:
                raise CropMismatchError(f"{message}: the two crops' vectors do not mix well. Rebuild it ({rebuild}) "
                                        f"or build another collection (--collection {self.collection}_new)")
            if not self._warned_crop:
                self._warned_crop = True
                log.warning("%s: matches are less accurate until it is rebuilt (%s)", message, rebuild)
        elif crop and not built and building and not self._warned_crop:
            self._warned_crop = True
            log.warning("collection %r on %s does not say how its faces were cropped (built by an older version): "
                        "photos added now are cropped as '%s'; if that differs, rebuild it (%s)",
                        self.collection, self.shown_uri, crop, rebuild)

    @property
    def collections(self) -> tuple[str, str, str]:
        """The gallery's collections: faces, identity centroids, gallery-centred centroids."""
        return self.collection, self.identities_collection, self.centred_collection

    def drop(self) -> None:
        """Delete the gallery's collections and the local index cache."""
        for name in self.collections:
            if self._call("has_collection", self._client.has_collection, name):
                self._call("drop_collection", self._client.drop_collection, name)
        self.snapshots.set(None)
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
        info = self.info()
        vecs = normalise(vectors, int(info["dim"]), "vectors")
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
        thumbs = [thumb_to_b64(t) for t in th]
        identity, name, image_path = [str(s) for s in identity], [str(s) for s in name], [str(s) for s in image_path]
        for label, values, limit in (("identity", identity, MAX_IDENTITY), ("name", name, MAX_NAME),
                                     ("dataset", ds, MAX_DATASET), ("image_path", image_path, MAX_PATH)):
            longest = max(len(v.encode("utf-8")) for v in values)
            if longest > limit:
                raise ShapeError(f"upsert_faces: a {label} is {longest} bytes long, the limit is {limit}")

        skip_pymilvus_string_check()  # every string's length is checked above
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
            self.snapshots.set(None)  # unknown how much was written: reload from Milvus when needed
            raise
        local = self.snapshots.replace_if(prev_gen)  # one already out of date is reloaded when needed
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
        self.info()
        wanted = [int(i) for i in ids]
        found: set[int] = set()
        for s in range(0, len(wanted), chunk):
            part = wanted[s : s + chunk]
            res = self._read("query", self.collection, self._client.query, filter=f"id in {part}",
                             output_fields=["id"], consistency_level="Strong")
            found.update(int(r["id"]) for r in res)
        return found

    def flush(self, save_local: bool = True) -> None:
        """Seal written rows into persistent segments (indexes build on sealed segments) and (with
        ``save_local``) save the local index if it changed."""
        for name in self.collections:
            if self._call("has_collection", self._client.has_collection, name):
                self._call("flush", self._client.flush, name, timeout=max(self.timeout, 120.0))
        if save_local:
            self._save_local()

    def wait_for_index(self, timeout: float = 600.0, collection: str | None = None) -> dict[str, Any]:
        """Flush, then wait until every sealed row of the faces collection (or ``collection``, e.g.
        :attr:`identities_collection`) is indexed (bounded); returns describe_index's answer.
        Raises GalleryError on timeout."""
        self.info()
        self.flush()
        name = collection or self.collection
        deadline = time.monotonic() + timeout
        while True:
            di = self._call("describe_index", self._client.describe_index, name, "vector")
            pending = int(di.get("pending_index_rows", 0) or 0)
            if pending == 0 and str(di.get("state", "Finished")) in ("Finished", "3", "IndexState.Finished"):
                break
            if time.monotonic() > deadline:
                raise GalleryError(f"index of {name!r} on {self.shown_uri} still building after "
                                   f"{timeout:.0f} s ({pending} rows pending); try again later")
            time.sleep(0.5)
        if not self.is_lite:
            self._wait_for_indexed_segments(deadline, name)
        local = self.local_index()
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
                raise GalleryError(f"{name!r} on {self.shown_uri}: {served} of {total} rows served from "
                                   "indexed segments so far; try again later")
            time.sleep(0.5)

    # -- reads
    def count(self) -> int:
        """Number of faces (strongly consistent)."""
        self.info()
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
        photo, "centred" the gallery-centred centroids (scores: the centred query's cosine to
        them); "face" ranks single photos (an identity may then appear more than once)."""
        info = self.info()
        q = normalise(vectors, int(info["dim"]), "query vectors")
        if len(q) == 0:
            return []
        k = max(1, int(k))
        by = match_by or self.match_by
        if by not in MATCH_BY:
            raise ValueError(f"match_by must be one of {', '.join(MATCH_BY)}, got {by!r}")
        local = self.local_index(build=True)
        if local is not None:
            out = search_local(local, q, k, by)
            if not with_thumbnails:
                return out
            held, missing = held_thumbnails(local, out)
            fetched: dict[int, bytes | None] = dict.fromkeys(missing)  # a face gone since: no photo, not asked again
            fetched.update(self.thumbnails(missing))
            local.keep_thumbnails(fetched)
            return attach_thumbnails(out, {**held, **fetched})
        hits = self._search_centred(q, k, with_thumbnails) if by == "centred" else None
        if hits is None and by != "face":
            hits = self._search_centroids(q, k, with_thumbnails)
        if hits is not None:
            return hits
        res = self._read("search", self.collection, self._client.search, data=q, limit=k,
                         output_fields=FACE_OUTPUT + (["thumbnail"] if with_thumbnails else []),
                         search_params={"metric_type": "COSINE", "params": {"ef": max(self.ef, k)}},
                         consistency_level="Session")
        return hits_to_matches(res)

    def iterate(self, fields: list[str], batch_size: int, collection: str | None = None) -> Iterable[list[dict]]:
        name = collection or self.collection
        self.info()
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
        return [int(r["id"]) for batch in self.iterate(["id"], 2000) for r in batch]

    def thumbnail(self, face_id: int) -> bytes | None:
        """JPEG bytes of a face's thumbnail, or None (unknown id or no thumbnail)."""
        return self.thumbnails([face_id]).get(int(face_id))

    def thumbnails(self, face_ids: Iterable[int]) -> dict[int, bytes | None]:
        """JPEG thumbnails of several faces, 1,000 ids a call: {face id: bytes or None}."""
        ids = sorted({int(i) for i in face_ids})
        if not ids:
            return {}
        self.info()
        out: dict[int, bytes | None] = {}
        for s in range(0, len(ids), 1000):
            res = self._read("get", self.collection, self._client.get, ids=ids[s : s + 1000], output_fields=["thumbnail"])
            out.update({int(r["id"]): b64_to_thumb(r.get("thumbnail")) for r in res})
        return out

    def stats(self) -> dict[str, Any]:
        """faces, identities, model, dim, index (type, params, state), load state, uri, collection."""
        out: dict[str, Any] = {"uri": self.shown_uri, "collection": self.collection,
                               "backend": "milvus-lite" if self.is_lite else "milvus"}
        try:
            out["server_version"] = self._call("get_server_version", self._client.get_server_version)
        except GalleryError:
            out["server_version"] = None
        info = self.describe(refresh=True)
        if info is None:
            out.update(exists=False, faces=0, identities=0, model=None, dim=None)
            return out
        out.update(exists=True, faces=self.count(), model=info["model"] or None, dim=info["dim"],
                   crop=info.get("crop") or None)
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
        local = self.snapshots.current
        out["local_index"] = {"enabled": self.local_index_enabled, "ready": local is not None,
                              "rows": len(local) if local else 0, "mode": local.mode if local else None,
                              "cache": str(self._cache_dir) if self._cache_dir else None}
        return out

    # -- local index
    def local_index(self, build: bool = False) -> LocalIndex | None:
        """The in-process snapshot of the faces collection (None when disabled). With ``build`` a
        missing or outdated one is opened now (the persisted copy when its generation matches,
        else pulled from Milvus); without, whatever is held is returned (readers never wait)."""
        if not self.local_index_enabled:
            return None
        return self.snapshots.get(self._info, build)

    def warm_local_index(self) -> LocalIndex | None:
        """Open the local index now (None when disabled or the collection is absent)."""
        local = self.local_index(build=True)
        if local is not None:
            local.prepare()
            self._save_local()
        return local

    def _save_local(self) -> None:
        self.snapshots.save(None if self._info is None else str(self._info.get("generation")))

    # -- live reads
    def matcher(self, **kwargs: Any) -> Matcher:
        """The read side for live video: a :class:`~lookalike_live.gallery.matcher.Matcher` on
        this gallery (see its arguments)."""
        from .matcher import Matcher

        return Matcher(self, **kwargs)

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
                lite_release(self.uri)

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Gallery(uri={self.shown_uri!r}, collection={self.collection!r})"

