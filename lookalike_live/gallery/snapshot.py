"""Which in-process snapshot (:class:`LocalIndex`) of a gallery is current, and getting one: the
copy persisted next to a Milvus Lite file when its generation matches, else pulled from Milvus."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from .common import normalise
from .local_index import LocalIndex

log = logging.getLogger("lookalike_live.gallery")

_PULLED_FIELDS = ["id", "vector", "identity", "name", "dataset", "image_path"]


class SnapshotSource(Protocol):
    """What a snapshot is pulled from (a :class:`~lookalike_live.gallery.store.Gallery`)."""

    @property
    def shown_uri(self) -> str: ...

    def describe(self, refresh: bool = False) -> dict[str, Any] | None: ...

    def iterate(self, fields: list[str], batch_size: int, collection: str | None = None
                ) -> Iterable[list[dict[str, Any]]]: ...

    def thumbnails(self, face_ids: Iterable[int]) -> dict[int, bytes | None]: ...


class Snapshots:
    """Holds a gallery's current :class:`LocalIndex`. Readers never wait for a loading one
    (:meth:`get` with ``build=False``); one loader at a time opens it, the others wait for its
    result. ``cache_dir`` (Milvus Lite only) is where it is persisted, keyed by the collection's
    generation."""

    def __init__(self, source: SnapshotSource, cache_dir: Path | None, nprobe: int) -> None:
        self.source = source
        self.cache_dir = cache_dir
        self.nprobe = int(nprobe)
        self._local: LocalIndex | None = None
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()

    @property
    def current(self) -> LocalIndex | None:
        """The snapshot held now, current or not (None before the first open)."""
        return self._local

    def set(self, local: LocalIndex | None) -> None:
        """Replace the snapshot (None: open it again when next needed)."""
        with self._lock:
            self._local = local

    def replace_if(self, generation: str) -> LocalIndex | None:
        """The snapshot if it is at ``generation``; else forget it (it was out of date) and None."""
        with self._lock:
            if self._local is not None and self._local.generation != generation:
                self._local = None
            return self._local

    def get(self, info: Mapping[str, Any] | None, build: bool) -> LocalIndex | None:
        """The snapshot matching ``info`` (the collection's generation). With ``build`` a missing or
        outdated one is opened now; without, whatever is held is returned."""
        local = self._local
        if local is not None and info is not None and local.generation == info.get("generation"):
            return local
        if not build:
            return local
        with self._build_lock:
            local = self._local
            fresh = self.source.describe(refresh=True)
            if fresh is None:
                return None
            if local is not None and local.generation == fresh.get("generation"):
                return local  # another thread opened it meanwhile
            local = self._open(fresh)
            self.set(local)
            return local

    def _open(self, info: Mapping[str, Any]) -> LocalIndex:
        local = self._load(info)
        if local is None:
            t0 = time.perf_counter()
            local = LocalIndex(int(info["dim"]), nprobe=self.nprobe)
            local.generation, local.model = info["generation"], info["model"]
            for batch in self.source.iterate(_PULLED_FIELDS, 5000):
                local.upsert([int(r["id"]) for r in batch],
                             normalise([r["vector"] for r in batch], info["dim"], "vectors"),
                             [r["identity"] for r in batch], [r["name"] for r in batch],
                             [r["dataset"] for r in batch], [r["image_path"] for r in batch])
            log.info("local index: %d faces pulled from %s in %.1f s", len(local), self.source.shown_uri,
                     time.perf_counter() - t0)
            local.prepare()
            local.dirty = True
        t0 = time.perf_counter()
        fetched = local.pin_representatives(self.source.thumbnails)
        if fetched:
            log.info("local index: %d representative thumbnails fetched in %.1f s", fetched,
                     time.perf_counter() - t0)
        return local

    def _load(self, info: Mapping[str, Any]) -> LocalIndex | None:
        cache = self.cache_dir
        if cache is None:
            return None
        meta = LocalIndex.read_meta(cache)
        if not meta or meta.get("generation") != info["generation"] or int(meta.get("dim", 0)) != info["dim"]:
            return None
        t0 = time.perf_counter()
        try:
            local = LocalIndex.load(cache, nprobe=self.nprobe)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("local index cache %s unreadable (%s): rebuilding from Milvus", cache, exc)
            return None
        log.info("local index: %d faces loaded from %s in %.1f s", len(local), cache, time.perf_counter() - t0)
        return local

    def save(self, generation: str | None) -> None:
        """Persist the snapshot if it changed and is at ``generation`` (None: any)."""
        local, cache = self._local, self.cache_dir
        if local is None or cache is None or not local.dirty:
            return
        if generation is not None and local.generation != generation:
            return
        t0 = time.perf_counter()
        try:
            local.save(cache)
            log.info("local index: %d faces saved to %s in %.1f s", len(local), cache, time.perf_counter() - t0)
        except OSError as exc:
            log.warning("could not save the local index to %s: %s", cache, exc)
