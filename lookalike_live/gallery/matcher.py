"""The gallery's read side for live video: :class:`Matcher`, whose one call is
``submit(source, vectors, k) -> Future``, with a bounded queue per source and fair dispatch."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, GalleryError, GalleryUnavailableError, ShapeError
from ..types import Match
from . import common
from .common import (
    FACE_OUTPUT,
    IDENTITY_OUTPUT,
    attach_thumbnails,
    b64_to_thumb,
    centroid_hits,
    error_reason,
    hits_to_matches,
    is_not_loaded,
    is_unavailable,
    normalise,
    to_gallery_error,
    unavailable_message,
)
from .local_index import LocalIndex, centre_vectors, held_thumbnails, search_local

if TYPE_CHECKING:
    from .store import Gallery

log = logging.getLogger("lookalike_live.gallery")


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


class Matcher:
    """The read side of a gallery for live video: ``submit(source, vectors, k)`` returns at once
    with a :class:`concurrent.futures.Future` of ``list[list[Match]]`` (per query, best first);
    video never waits for Milvus. Made by :meth:`Gallery.matcher`; reads only through the
    gallery's public calls (its snapshot, its description, its URI).

    * With the gallery's local index (the Milvus Lite default) searches run on one worker thread
      (numpy, ~2 ms), and the matched photos come from the snapshot's memory (every identity's
      representative is held; other faces' photos are fetched once with AsyncMilvusClient and
      kept, bounded). While the local index is still loading, and for Milvus servers, they go
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
            raise ConfigError("Matcher: max_pending and max_in_flight must be >= 1")
        self.gallery = gallery
        self.max_pending = int(max_pending)
        self.max_in_flight = int(max_in_flight)
        self.timeout = float(timeout)
        self.reconnect_interval = float(reconnect_interval)
        self._lock = threading.Lock()
        # per source: its waiting requests; _turns: the sources with waiting requests, next first
        self._pending: dict[str, collections.deque[tuple[concurrent.futures.Future, np.ndarray, int, bool]]] = {}
        self._turns: collections.deque[str] = collections.deque()
        self.by_source: dict[str, dict[str, int]] = {}  # per source: submitted, answered, failed, dropped
        self._in_flight = 0
        self._closed = False
        self.counters = {"submitted": 0, "completed": 0, "failed": 0, "dropped": 0, "reconnects": 0,
                         "local": 0, "milvus": 0, "thumbnails_fetched": 0, "thumbnails_failed": 0}
        self._client: Any = None
        self._load_task: asyncio.Future[Any] | None = None
        # what the server can match by (see _ask_centroids), once asked (_centroids_known)
        self._centroids: tuple[str, np.ndarray | None] | None = None
        self._centroids_known = False
        self._centroids_at = -1e9  # when the question was last asked (monotonic)
        self._client_failed_at = 0.0
        self._last_error = ""
        self._connect_error = ""  # the last real connection failure (not a fast-fail)
        info = gallery.info()
        self._dim = int(info["dim"])
        self._local_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gallery-local")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="gallery-async-search", daemon=True)
        self._thread.start()
        self._warm_thread: threading.Thread | None = None
        if warm_local and gallery.local_index_enabled and gallery.local_index() is None:
            self._warm_thread = threading.Thread(target=self._warm, name="gallery-local-warm", daemon=True)
            self._warm_thread.start()

    # -- public
    def submit(self, source: str, vectors: np.ndarray, k: int = 1, *, thumbnails: bool = True
               ) -> concurrent.futures.Future[list[list[Match]]]:
        """Queue a search of ``vectors`` (N, D) for ``source`` (a camera, a window) for the ``k``
        best matches of each; never blocks. The matches carry the matched photo's thumbnail
        unless ``thumbnails`` is False. The future may be cancelled when that source's queue
        overflows (``fut.cancelled()``)."""
        fut: concurrent.futures.Future[list[list[Match]]] = concurrent.futures.Future()
        try:
            q = normalise(vectors, self._dim, "query vectors")
        except (GalleryError, ShapeError) as exc:  # wrong shape or dimension: the future says so
            fut.set_exception(exc)
            return fut
        dropped: list[concurrent.futures.Future] = []
        with self._lock:
            if self._closed:
                fut.set_exception(GalleryError("Matcher is closed"))
                return fut
            self.counters["submitted"] += 1
            mine = self.by_source.setdefault(source, {"submitted": 0, "answered": 0, "failed": 0, "dropped": 0})
            mine["submitted"] += 1
            queue = self._pending.get(source)
            if queue is None:
                queue = self._pending[source] = collections.deque()
            if not queue:
                self._turns.append(source)
            queue.append((fut, q, max(1, int(k)), bool(thumbnails)))
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
                fut.set_exception(GalleryError("Matcher is closed"))
        return fut

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_source = {s: {**c, "pending": len(self._pending.get(s, ()))} for s, c in self.by_source.items()}
            return {**self.counters, "pending": sum(len(q) for q in self._pending.values()),
                    "in_flight": self._in_flight, "local_ready": self.gallery.local_index() is not None,
                    "last_error": self._last_error, "by_source": by_source}

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
            log.debug("matcher shutdown incomplete", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=timeout)
        self._local_pool.shutdown(wait=False, cancel_futures=True)
        if self._warm_thread is not None:  # loading the local index: the gallery must outlive it
            self._warm_thread.join(timeout=max(timeout, 30.0))
            if self._warm_thread.is_alive():
                log.warning("the local index is still loading after %.0f s", max(timeout, 30.0))

    def __enter__(self) -> Matcher:
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
            self._loop.create_task(self._run(source, fut, q, k, thumbs))

    async def _run(self, source: str, fut: concurrent.futures.Future, q: np.ndarray, k: int, thumbs: bool) -> None:
        try:
            local = self.gallery.local_index()
            if local is not None:
                with self._lock:
                    self.counters["local"] += 1
                res = await asyncio.wait_for(self._loop.run_in_executor(
                    self._local_pool, search_local, local, q, k, self.gallery.match_by), self.timeout)
                if thumbs:
                    res = await self._local_thumbnails(local, res)
            else:
                with self._lock:
                    self.counters["milvus"] += 1
                res = await self._search_milvus(q, k, thumbs)
        except Exception as exc:  # noqa: BLE001
            err = self._translate(exc)
            with self._lock:
                self.counters["failed"] += 1
                self.by_source[source]["failed"] += 1
                self._last_error = str(err)
            fut.set_exception(err)
        else:
            with self._lock:
                self.counters["completed"] += 1
                self.by_source[source]["answered"] += 1
            fut.set_result(res)
        finally:
            with self._lock:
                self._in_flight -= 1
            self._dispatch()

    def _translate(self, exc: BaseException) -> GalleryError:
        if isinstance(exc, GalleryError):
            return exc
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            return GalleryUnavailableError(unavailable_message(
                self.gallery.uri, f"no answer within {self.timeout:.1f} s"))
        return to_gallery_error(exc, self.gallery.uri, self.gallery.collection, "search")

    async def _local_thumbnails(self, local: LocalIndex, matches: list[list[Match]]) -> list[list[Match]]:
        """The snapshot's thumbnails for ``matches``; the ones it lacks are fetched (and kept
        there). A failed fetch leaves those matches without a photo: the answer matters more."""
        held, missing = held_thumbnails(local, matches)
        if missing:
            try:
                client = await self._get_client()
                rows = await asyncio.wait_for(client.get(self.gallery.collection, ids=missing, output_fields=["thumbnail"],
                                                         timeout=self.timeout), self.timeout)
                fetched: dict[int, bytes | None] = dict.fromkeys(missing)  # a face gone since: no photo, not asked again
                fetched.update({int(r["id"]): b64_to_thumb(r.get("thumbnail")) for r in rows})
                local.keep_thumbnails(fetched)
                held.update(fetched)
                with self._lock:
                    self.counters["thumbnails_fetched"] += len(fetched)
            except Exception as exc:  # noqa: BLE001 - see above
                log.debug("thumbnails %s not fetched: %s", missing, exc)
                with self._lock:
                    self.counters["thumbnails_failed"] += len(missing)
                if not isinstance(exc, _FastFail) and (isinstance(exc, (asyncio.TimeoutError, TimeoutError))
                                                       or is_unavailable(exc)):
                    self._connect_error = error_reason(exc)
                    await self._drop_client()
        return attach_thumbnails(matches, held)

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        wait = self._client_failed_at + self.reconnect_interval - time.monotonic()
        if wait > 0:
            # fail fast between reconnect attempts; this must not push the next attempt back
            raise _FastFail(unavailable_message(
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

    def _ask_centroids(self) -> tuple[str, np.ndarray | None] | None:
        """What the server can match by for this gallery's ``match_by`` (blocking; off the loop):
        ("centred", mean), ("identity", None), or None (single faces only)."""
        g = self.gallery
        if g.match_by == "centred":
            mean = g.centred_mean(refresh=True)
            if mean is not None:
                return "centred", mean
        return ("identity", None) if g.centroids_ready(True) else None

    async def _use_centroids(self) -> tuple[str, np.ndarray | None] | None:
        """What to match by on the server (see :meth:`_ask_centroids`). Asked off the loop when
        first needed, again every CENTROIDS_RECHECK_S while the answer is not what ``match_by``
        asks for (a build may add them), and no more often than ``reconnect_interval`` while the
        question fails (server down: single faces meanwhile)."""
        want = self.gallery.match_by
        if want == "face":
            return None
        now = time.monotonic()
        best = self._centroids is not None and self._centroids[0] == want
        due = now - self._centroids_at > (common.CENTROIDS_RECHECK_S if self._centroids_known else self.reconnect_interval)
        # ask again now and then: a build may add them meanwhile, or (centred) move the gallery's mean
        if due and (not best or want == "centred"):
            self._centroids_at = now
            try:
                self._centroids = await asyncio.wait_for(
                    self._loop.run_in_executor(None, self._ask_centroids), self.timeout)
                self._centroids_known = True
            except Exception:  # noqa: BLE001 - unknown for now (server down?): asked again later
                log.debug("could not check for identity centroids", exc_info=True)
        return self._centroids

    async def _search_milvus(self, q: np.ndarray, k: int, thumbs: bool) -> list[list[Match]]:
        g = self.gallery
        target = await self._use_centroids()
        by_identity = target is not None
        name = g.collection if target is None else g.centred_collection if target[0] == "centred" else g.identities_collection
        if target is not None and target[1] is not None:
            q = centre_vectors(q, target[1])
        try:
            client = await self._get_client()
            fields = IDENTITY_OUTPUT if by_identity else FACE_OUTPUT + (["thumbnail"] if thumbs else [])
            res = await asyncio.wait_for(client.search(
                name, data=q, limit=k, output_fields=fields,
                search_params={"metric_type": "COSINE", "params": {"ef": max(g.ef, k)}},
                consistency_level="Session", timeout=self.timeout), self.timeout)
            if by_identity:
                out = centroid_hits(res)
                if thumbs and any(out):
                    rows = await asyncio.wait_for(client.get(
                        g.collection, ids=sorted({m.face_id for ms in out for m in ms if m.face_id is not None}), output_fields=["thumbnail"],
                        timeout=self.timeout), self.timeout)
                    out = attach_thumbnails(out, {int(r["id"]): b64_to_thumb(r.get("thumbnail")) for r in rows})
                return out
        except _FastFail:
            raise
        except Exception as exc:
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or is_unavailable(exc):
                self._connect_error = error_reason(exc)
                await self._drop_client()
            elif is_not_loaded(exc):
                # a restarted server reloads its collections by itself; ask for it anyway
                if self._client is not None and (self._load_task is None or self._load_task.done()):
                    self._load_task = asyncio.ensure_future(self._client.load_collection(name, timeout=300))
                    self._load_task.add_done_callback(_consume)
                raise GalleryUnavailableError(
                    f"collection {name!r} on {g.shown_uri} is not loaded yet (the server is starting, or "
                    "the collection was released); it is being loaded: search again shortly"
                ) from exc
            raise
        return hits_to_matches(res)

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
