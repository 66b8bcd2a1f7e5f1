"""Process workers that prepare gallery photos (read, decode, align, detect where needed) for
the index build's embedder, which runs in the parent process.

Why processes: decoding, alignment and MediaPipe hold the GIL for part of their work, and on a
GPU box the embedder needs only a core, so the rest of the cores must prepare photos side by
side. Threads under one GIL do not scale to 16 cores; processes do.

The hand-off is cheap and bounded:

* the crops go through one shared-memory ring of ``slots`` crops (``(slots, S, S, 3)`` uint8): a
  worker writes its crop into the slot the parent gave it, so a crop is never pickled; the parent
  stacks the slots of a batch straight into the embedder's input and frees them;
* the parent hands each worker chunks of ``chunk`` photos (paths, labels, landmarks: a few hundred
  bytes each) over its own pipe, at most ``depth`` chunks ahead, and only when the ring has a free
  slot for every photo of the chunk; a worker answers with one message a chunk (quality, box,
  thumbnail, or why the photo was skipped);
* memory is therefore fixed by ``slots``, whatever the dataset's size.

A worker that dies (a decoder crash, the OOM killer) loses nothing: the parent sees its process
end, starts a new one, and sends the photos of its unanswered chunks again one at a time, each
alone in a worker; a photo that kills a worker then too is skipped with that reason. An error that no photo would escape
(a model missing, a bug) comes back as the exception itself and stops the build.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import pickle
import signal
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from .datasets import GalleryItem
from .errors import LookalikeError
from .prepare import PrepareConfig, PreparedFace, Preparer

log = logging.getLogger(__name__)

#: photos a task carries, the fewest tasks a worker holds ahead (one being prepared, one waiting), and
#: how many embedding batches of photos are handed out ahead of the batch being embedded
CHUNK = 8
DEPTH = 2
AHEAD_BATCHES = 2
#: workers run at this lower priority, so the embedder (and a desktop) come first; on the 2-core
#: machine nice 0, 10 and 19 gave build rates within 3 % of each other (noise)
NICE = 10
#: how long the parent waits for a new worker to start before it gives up on worker processes
START_TIMEOUT_S = 120.0


@dataclass
class _Chunk:
    entries: list[tuple[int, Any, GalleryItem]]  # (slot, the caller's key, item)
    retry: bool = False  # photos sent again, one a chunk, after their worker died


@dataclass
class _Worker:
    process: Any
    conn: Any
    chunks: collections.deque[tuple[int, _Chunk]] = field(default_factory=collections.deque)
    ready: bool = False


def _worker_main(conn: Any, config: PrepareConfig, shm_name: str, slots: int) -> None:
    """A worker's loop: prepare every photo of each chunk it is sent, write crops into the ring."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if NICE:
        with contextlib.suppress(OSError):
            os.nice(NICE)
    import cv2

    cv2.setNumThreads(1)
    size = int(config.spec.input.size)
    shm = SharedMemory(name=shm_name)
    ring = np.ndarray((slots, size, size, 3), np.uint8, buffer=shm.buf)
    preparer = Preparer(config)
    try:
        conn.send(("ready", os.getpid()))
        while True:
            try:
                msg = conn.recv()
            except EOFError:
                return  # the parent is gone
            if msg is None:
                conn.send(("bye", peak_rss_mb()))
                return
            chunk_id, entries = msg
            out: list[tuple[int, Any, BaseException | None]] = []
            for slot, item in entries:
                try:
                    face = preparer.prepare(item)
                except Exception as exc:  # noqa: BLE001 - sent to the parent, which skips or stops
                    out.append((slot, None, _picklable(exc)))
                    continue
                if face is None:
                    out.append((slot, None, None))
                    continue
                ring[slot] = face.crop
                out.append((slot, (face.quality, face.bbox, face.thumbnail, face.how, face.fallback), None))
            conn.send((chunk_id, out))
    finally:
        del ring
        preparer.close()
        shm.close()


@contextlib.contextmanager
def _main_without_missing_file() -> Iterator[None]:
    """A spawned process imports the parent's ``__main__`` from its file; a program read from
    standard input has the file name ``<stdin>``, which the child cannot open. Hide such a name
    while the worker starts (the worker needs nothing from ``__main__``)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or os.path.exists(path):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class WorkerPool:
    """``workers`` prepare processes over one crop ring of ``batch`` (the embedder's batch) + the
    photos handed out ahead (see the module doc). Use as a context
    manager; :meth:`imap` yields ``(key, item, PreparedFace | None, error | None)`` as photos are
    done (not in input order); a yielded face's ``crop`` is a view of the ring, valid until
    :meth:`release` is called with its slot (``face_slot``)."""

    def __init__(self, config: PrepareConfig, workers: int, batch: int, chunk: int = CHUNK) -> None:
        if workers < 1:
            raise ValueError("WorkerPool needs at least one worker")
        self.config = config
        self.workers_wanted = workers
        self.chunk = chunk
        # while the parent embeds one batch the workers must be able to prepare the next one and more
        # (else it waits for them after every batch): AHEAD_BATCHES batches in flight, spread over the workers
        self.depth = max(DEPTH, math.ceil(AHEAD_BATCHES * batch / (workers * chunk)))
        self.slots = batch + workers * self.depth * chunk + chunk
        size = int(config.spec.input.size)
        self._shm = SharedMemory(create=True, size=self.slots * size * size * 3)
        self.ring = np.ndarray((self.slots, size, size, 3), np.uint8, buffer=self._shm.buf)
        self._free = list(range(self.slots))
        self._ctx = mp.get_context("spawn")  # never fork a process that runs ONNX Runtime and Milvus threads
        self._workers: list[_Worker] = []
        self._next_chunk = 0
        self.restarts = 0
        self.peak_rss_mb = 0.0  # the largest worker's peak resident memory, as they report it on close
        self.face_slot: dict[int, int] = {}  # id(PreparedFace) -> its ring slot

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> WorkerPool:
        for _ in range(self.workers_wanted):
            self._workers.append(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child, self.config, self._shm.name, self.slots),
                                 name="prepare-worker", daemon=True)
        with _main_without_missing_file():
            proc.start()
        child.close()
        return _Worker(proc, parent)

    def close(self) -> None:
        for w in self._workers:
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(None)
        for w in self._workers:
            with contextlib.suppress(OSError, EOFError, ValueError):
                while w.conn.poll(5):  # what it still sends, then its peak memory
                    msg = w.conn.recv()
                    if msg and msg[0] == "bye":
                        self.peak_rss_mb = max(self.peak_rss_mb, float(msg[1]))
                        break
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
            w.conn.close()
        self._workers.clear()
        self.face_slot.clear()
        with contextlib.suppress(AttributeError):
            del self.ring
        self._shm.close()
        with contextlib.suppress(FileNotFoundError):
            self._shm.unlink()

    def release(self, face: PreparedFace) -> None:
        """Give a yielded face's ring slot back (after its crop was copied into a batch)."""
        slot = self.face_slot.pop(id(face), None)
        if slot is not None:
            self._free.append(slot)

    # -- the map -----------------------------------------------------------------------------
    def imap(self, entries: Iterable[tuple[Any, GalleryItem]]
             ) -> Iterator[tuple[Any, GalleryItem, PreparedFace | None, BaseException | None]]:
        it = iter(entries)
        retry: collections.deque[tuple[Any, GalleryItem]] = collections.deque()
        exhausted = False
        while True:
            # hand out work: retries first (one a chunk), then new chunks while slots last
            for w in self._workers:
                while w.ready and len(w.chunks) < self.depth and not any(c.retry for _, c in w.chunks):
                    if retry:
                        # a photo sent again goes alone to a worker that holds nothing else, so that if
                        # the worker dies again the photo is known to be the cause; the others drain
                        if w.chunks or not self._free:
                            break
                        batch = [retry.popleft()]
                        is_retry = True
                    elif not exhausted and len(self._free) >= self.chunk:
                        batch = []
                        for key, item in it:
                            batch.append((key, item))
                            if len(batch) == self.chunk:
                                break
                        exhausted = len(batch) < self.chunk
                        is_retry = False
                        if not batch:
                            break
                    else:
                        break
                    chunk = _Chunk([(self._free.pop(), key, item) for key, item in batch], retry=is_retry)
                    self._next_chunk += 1
                    w.chunks.append((self._next_chunk, chunk))
                    try:
                        w.conn.send((self._next_chunk, [(slot, item) for slot, _, item in chunk.entries]))
                    except OSError:  # the worker died: its sentinel says so below, and its chunks go again
                        break
            if exhausted and not retry and not any(w.chunks for w in self._workers):
                return
            if not self._workers:
                raise RuntimeError("every prepare worker is gone")
            ready = mpc.wait([w.conn for w in self._workers] + [w.process.sentinel for w in self._workers],
                             timeout=START_TIMEOUT_S)
            if not ready:
                if not any(w.ready for w in self._workers):
                    raise RuntimeError(f"no prepare worker started within {START_TIMEOUT_S:.0f} s")
                continue
            for w in list(self._workers):
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                    if msg is not None:
                        if msg[0] == "ready":
                            w.ready = True
                            continue
                        chunk_id, results = msg
                        done_id, chunk = w.chunks.popleft()
                        assert done_id == chunk_id, (done_id, chunk_id)
                        by_slot = {slot: (key, item) for slot, key, item in chunk.entries}
                        for slot, meta, err in results:
                            key, item = by_slot[slot]
                            if meta is None:
                                self._free.append(slot)
                                yield key, item, None, err
                                continue
                            quality, bbox, thumb, how, fallback = meta
                            face = PreparedFace(item, self.ring[slot], quality, bbox, thumb, how, fallback)
                            self.face_slot[id(face)] = slot
                            yield key, item, face, None
                        continue
                if not w.process.is_alive() or (w.conn in ready and msg is None):
                    if w.process.is_alive():  # its pipe broke: it cannot be talked to any more
                        w.process.kill()
                    w.process.join(timeout=5)
                    code = w.process.exitcode
                    if not w.ready:
                        raise RuntimeError(f"a prepare worker process failed to start (exit code {code}); "
                                           "run again with -v for its error, or with --workers 0 to prepare in this process")
                    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    log.warning("a prepare worker died (%s) with %d photos in hand; starting another",
                                how, sum(len(c.entries) for _, c in w.chunks))
                    for _, chunk in w.chunks:
                        for slot, key, item in chunk.entries:
                            self._free.append(slot)
                            if chunk.retry:
                                yield key, item, None, WorkerCrashed(
                                    f"the photo crashed the worker that read it, twice ({how}); skipped")
                            else:
                                retry.append((key, item))
                    w.chunks.clear()
                    w.conn.close()
                    self._workers.remove(w)
                    self.restarts += 1
                    self._workers.append(self._start())


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: its own, unlike ru_maxrss, which a process
    started by fork and exec inherits from its parent)."""
    try:
        for line in open("/proc/self/status"):  # noqa: SIM115 - a few lines, read once
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class WorkerCrashed(LookalikeError):
    """A photo whose worker process died while preparing it, twice (the second time alone in it)."""


def default_workers(embedder: Any, cpus: int | None = None) -> int:
    """The cores left beside the embedder, and at least 2: all but one when it runs on a GPU, the
    cores its CPU threads do not take otherwise (ONNX Runtime's default: one a physical core). Two
    even where the embedder takes every core: a worker also waits (reading files, its pipe), and on
    the 2-core machine 2 workers beat 1 when photos are detected (FaceNet, CelebA sample, two paired
    runs: 0.67 / 0.65x the bare embedder against 0.62 / 0.58x) and for MobileFaceNet by landmarks
    (0.67 against 0.64x), and matched it for FaceNet by landmarks (0.79 against 0.81x)."""
    from .embed.base import physical_cores, usable_cpus

    if not cpus:
        cpus = usable_cpus()
    backend = str(getattr(embedder, "backend", "cpu")).lower()
    on_gpu = any(k in backend for k in ("cuda", "tensorrt", "gpu"))
    taken = 1 if on_gpu else int(getattr(embedder, "threads", None) or min(physical_cores(), cpus))
    return max(min(2, int(cpus)), int(cpus) - taken)
