"""Offline gallery build: dataset photos -> one aligned face each -> embeddings -> Milvus.

Design (for throughput on few cores and on many, and for safety under interruption):

* ``workers`` processes (:mod:`lookalike_live.workers`) read, decode and align each photo
  (:mod:`lookalike_live.prepare`): placed by the dataset's annotated landmarks where it has them
  (CelebA), so no detector runs, else detected (one MediaPipe detector per worker; big JPEGs decoded
  at a reduced scale; the short-range detector's face kept when it is big and sure). Crops come
  back through shared memory; ``workers=0`` prepares in this process (no processes: debugging,
  tiny datasets);
* this process embeds crops in batches of ``batch_size`` and upserts rows in batches of
  ``insert_batch``; each row's primary key is a stable hash of (dataset, relative path, face
  index), so a re-run never duplicates and a killed run resumes: photos whose id is already in
  the collection are skipped before any work, and photos that failed before (no face, unreadable)
  are remembered in a small state file next to the embedded gallery and skipped on resume; a kill
  costs only the photos in flight (at most one insert batch and what the workers hold);
* ``shard=(i, n)`` builds the photos whose id is ``i`` modulo ``n``: n machines (or a scheduler's
  n tasks) fill one Milvus server together, each with its own part; the identity centroids are
  made once at the end (``index centroids``), not by each shard;
* one face per photo: the annotated one (landmarks, else the face that best overlaps the annotated
  box), else the largest (gallery photos are portraits; bystanders are not the labelled identity).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import faults
from .config import data_dir
from .datasets import Dataset, GalleryItem
from .errors import (
    BackendUnavailableError,
    ConfigError,
    LookalikeError,
    ModelFormatError,
    ModelNotInstalledError,
    UnknownModelError,
)
from .prepare import (  # noqa: F401 - the names callers know from here
    ALIGN_MIN_FRACTION,
    QUICK_MIN_SCORE,
    QUICK_MIN_SIZE,
    THUMB_SIZE,
    WORK_SIDE,
    DetectorConfig,
    PrepareConfig,
    PreparedFace,
    Preparer,
    choose_face,
    gallery_detector,
    locate_face,
    prepare_face,
)

log = logging.getLogger(__name__)

#: errors that no other photo would escape: they stop the build (after saving what is embedded)
#: instead of skipping photo after photo
FATAL_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, UnknownModelError, ModelNotInstalledError, ModelFormatError, BackendUnavailableError,
)
#: errors that are a bug or a broken install, never a bad photo: they stop the build (what is embedded
#: is saved) instead of skipping, and remembering as skipped, every photo after them
INTERNAL_ERRORS: tuple[type[BaseException], ...] = (
    ImportError, NameError, AttributeError, TypeError, AssertionError, NotImplementedError,
)


#: Milvus Lite runs inside the build's process and seals the rows written since its last flush in
#: one go: flushing every this many rows keeps that peak bounded (synthetic 512-d rows with
#: thumbnails: peak RSS 1,125 -> 914 MB at 20,000 rows, 1,311 -> 1,037 MB at 40,000)
LITE_FLUSH_EVERY = 4096


@dataclass
class BuildOptions:
    batch_size: int = 32
    insert_batch: int = 256
    workers: int | None = None  # prepare processes; None: the cores left beside the embedder; 0: in this process
    limit: int | None = None
    retry_skipped: bool = False
    progress: bool = True
    shard: tuple[int, int] | None = None  # (i, n): only the photos whose face id is i modulo n


@dataclass
class BuildSummary:
    dataset: str
    images: int = 0  # photos in the dataset (after --limit and --shard)
    already_indexed: int = 0
    processed: int = 0
    faces: int = 0  # rows inserted by this run
    identities: int = 0  # identities in the dataset
    skipped: dict[str, str] = field(default_factory=dict)  # rel_path -> reason
    previously_skipped: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    insert_seconds: float = 0.0
    workers: int = 0
    worker_restarts: int = 0
    workers_peak_rss_mb: float = 0.0  # the largest prepare worker's peak resident memory
    shard: str | None = None
    aligned_by: dict[str, int] = field(default_factory=dict)  # "landmarks" / "detector" -> photos
    #: why photos of a dataset with a landmark file were detected instead -> photos
    landmark_fallbacks: dict[str, int] = field(default_factory=dict)
    gallery: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["images_per_second"] = round(self.processed / self.seconds, 2) if self.seconds > 0 else None
        d["seconds"] = round(self.seconds, 3)
        d["embed_seconds"] = round(self.embed_seconds, 3)
        d["insert_seconds"] = round(self.insert_seconds, 3)
        return d


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; ConfigError otherwise."""
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4: the first of 4 parts), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text}: I must be 0 to N-1 and N at least 1 (e.g. 0/4 .. 3/4)")
    return i, n


class _StateFile:
    """Append-only JSON lines of photos that could not be indexed, so a resumed build skips them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    def load(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    out[rec["path"]] = rec["reason"]
                except (ValueError, KeyError):
                    continue  # a line cut by a kill: ignore it
        return out

    def add(self, records: dict[str, str]) -> None:
        if not records:
            return
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                for path, reason in records.items():
                    fh.write(json.dumps({"path": path, "reason": reason}) + "\n")


def state_file_for(uri: str, collection: str, dataset: str) -> Path:
    key = hashlib.sha1(f"{uri}|{collection}|{dataset}".encode()).hexdigest()[:16]
    return data_dir() / "builds" / f"{dataset}-{collection}-{key}.skipped.jsonl"


def build_index(
    dataset: Dataset,
    detector: DetectorConfig,
    embedder: Any,
    gallery: Any,
    options: BuildOptions | None = None,
) -> BuildSummary:
    """Index ``dataset`` into ``gallery`` (see the module doc). ``detector``: how photos without
    usable landmarks are detected. Returns the summary; never raises for a bad photo (skipped and
    listed), raises for what would fail every photo (FATAL_ERRORS: a model missing or broken,
    INTERNAL_ERRORS: a bug) after saving what is embedded."""
    from .gallery import face_id
    from .workers import WorkerPool, default_workers

    t_start = time.perf_counter()
    opts = options or BuildOptions()
    spec = embedder.spec
    items = list(dataset.items[: opts.limit] if opts.limit else dataset.items)
    ids = [face_id(dataset.name, it.rel_path, 0) for it in items]
    if opts.shard is not None:
        i, n = opts.shard
        kept = [(it, fid) for it, fid in zip(items, ids, strict=True) if fid % n == i]
        items, ids = [it for it, _ in kept], [fid for _, fid in kept]
    workers = default_workers(embedder) if opts.workers is None else opts.workers
    summary = BuildSummary(dataset=dataset.name, images=len(items), identities=len({i.identity for i in items}),
                           workers=workers, shard=None if opts.shard is None else f"{opts.shard[0]}/{opts.shard[1]}")
    config = PrepareConfig(spec, detector, landmark_file=dataset.landmarks_file is not None,
                           landmarks_malformed=dataset.landmarks_malformed)
    # worker processes start (imports: ~1 s) while the embedder and the gallery get ready
    pool = WorkerPool(config, workers, batch=opts.batch_size) if workers > 0 else None
    if pool is not None:
        pool.__enter__()
    try:
        embedder.prepare()
        gallery.ensure(dim=embedder.dim, model=spec.name, crop=spec.alignment.describe())
        existing = gallery.existing_ids(ids)
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    state = _StateFile(state_file_for(gallery.uri, gallery.collection, dataset.name))
    old_skips = {} if opts.retry_skipped else state.load()
    todo: dict[int, GalleryItem] = {}  # never one id twice in a build (the readers drop a photo listed twice)
    for it, fid in zip(items, ids, strict=True):
        if fid not in existing and it.rel_path not in old_skips:
            todo.setdefault(fid, it)
    summary.already_indexed = len(existing)
    summary.previously_skipped = sum(
        1 for it, i in zip(items, ids, strict=True) if i not in existing and it.rel_path in old_skips)
    if summary.already_indexed:
        log.info("resuming: %d of %d photos already indexed", summary.already_indexed, len(items))

    batch: list[tuple[PreparedFace, int]] = []
    rows: list[dict[str, Any]] = []
    since_flush = [0]
    new_skips: dict[str, str] = {}
    aligned_by: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()

    def embed_batch() -> None:
        if not batch:
            return
        t0 = time.perf_counter()
        pixels = np.stack([p.crop for p, _ in batch])  # from the workers' ring straight into the batch
        if pool is not None:
            for p, _ in batch:
                pool.release(p)
        vecs = embedder.embed_array(pixels)
        summary.embed_seconds += time.perf_counter() - t0
        for (p, fid), v in zip(batch, vecs, strict=True):
            rows.append({
                "id": fid, "vector": v, "identity": p.item.identity, "name": p.item.name,
                "dataset": dataset.name, "image_path": p.item.rel_path, "bbox": p.bbox,
                "quality": p.quality, "thumbnail": p.thumbnail,
            })
        batch.clear()

    def insert_rows() -> None:
        if rows:
            faults.point("build:before-upsert", f"{summary.processed} photos read")
            t0 = time.perf_counter()
            gallery.upsert_rows(rows)
            summary.insert_seconds += time.perf_counter() - t0
            faults.point("build:after-upsert")
            since_flush[0] += len(rows)
            if getattr(gallery, "is_lite", False) and since_flush[0] >= LITE_FLUSH_EVERY:  # see LITE_FLUSH_EVERY
                gallery.flush(save_local=False)
                since_flush[0] = 0
            summary.faces += len(rows)
            log.info("saved %d faces (%d this run; %d photos read)", len(rows), summary.faces, summary.processed)
            rows.clear()
        state.add(new_skips)  # after the rows: a skip is remembered only once what came before is saved
        new_skips.clear()

    def results() -> Iterator[tuple[int, GalleryItem, PreparedFace | None, BaseException | None]]:
        if pool is not None:
            yield from pool.imap(todo.items())
            return
        preparer = Preparer(config)
        try:
            for fid, item in todo.items():
                try:
                    yield fid, item, preparer.prepare(item), None
                except Exception as exc:  # noqa: BLE001 - judged below: skipped, or the build stops
                    yield fid, item, None, exc
        finally:
            preparer.close()

    bar = tqdm(total=len(todo), unit="img", desc=f"index {dataset.name}", disable=not opts.progress,
               dynamic_ncols=True, smoothing=0.1)
    try:
        for fid, item, prepared, err in results():
            bar.update(1)
            summary.processed += 1
            if isinstance(err, FATAL_ERRORS + INTERNAL_ERRORS):
                raise err
            if err is not None:
                reason = str(err) if isinstance(err, LookalikeError) else f"{type(err).__name__}: {err}"
                new_skips[item.rel_path] = summary.skipped[item.rel_path] = reason
                log.warning("skipped %s: %s", item.rel_path, reason)
            elif prepared is None:
                new_skips[item.rel_path] = summary.skipped[item.rel_path] = "no face found"
                log.debug("no face in %s", item.rel_path)
            else:
                aligned_by[prepared.how] += 1
                if prepared.fallback:
                    fallbacks[prepared.fallback] += 1
                    log.debug("%s: %s; detected instead", item.rel_path, prepared.fallback)
                batch.append((prepared, fid))
                if len(batch) >= opts.batch_size:
                    embed_batch()
                if len(rows) >= opts.insert_batch:
                    insert_rows()
        embed_batch()
        insert_rows()
    except BaseException:
        # interrupted (Ctrl-C) or a fatal error: keep what is already embedded
        try:
            embed_batch()
            insert_rows()
            gallery.flush()
        except Exception:  # noqa: BLE001 - the original error matters more
            log.warning("could not save the last %d embedded faces", len(rows) + len(batch), exc_info=True)
        raise
    finally:
        bar.close()
        summary.aligned_by, summary.landmark_fallbacks = dict(aligned_by), dict(fallbacks)
        if pool is not None:
            summary.worker_restarts = pool.restarts
            pool.close()
            summary.workers_peak_rss_mb = round(pool.peak_rss_mb, 1)
    faults.point("build:after-last-upsert")
    gallery.flush()
    if fallbacks:
        log.warning("%d photos with a landmark file were detected instead: %s", sum(fallbacks.values()),
                    ", ".join(f"{k} {v}" for k, v in fallbacks.most_common()))
    if opts.shard is not None:
        log.info("shard %s done; when every shard is, run `lookalike-live index centroids` once "
                 "(with the same --milvus-uri and --collection)", summary.shard)
    else:
        finish_gallery(gallery, changed=summary.faces > 0)
    summary.seconds = time.perf_counter() - t_start
    summary.gallery = gallery.stats()
    return summary


def finish_gallery(gallery: Any, changed: bool = True) -> None:
    """What follows the last upsert (``index build``; ``index centroids`` after a sharded build):
    the in-process copy made and saved, the identity centroids made again when faces changed or
    they are not current (a build killed before its centroids left them missing or stale)."""
    gallery.warm_local_index()
    if changed or (gallery.count() and not gallery.centroids_current()):
        gallery.rebuild_centroids()
