"""One embedder shared by many threads (the monitor's cameras): calls that arrive while the model
is busy are merged into one batch.

Group batching, no added wait: the first caller runs the model at once on what is queued; callers
that arrive meanwhile queue their crops and wait; when the model call ends, one of them runs the
next call on *all* that queued. Alone, a caller pays nothing extra; under load, the faces of many
cameras share one call (FaceNet on 2 CPU cores: batch 1 costs 23 ms, batch 8 costs 82 ms, 3.5x
less a face; ``bench embed``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from ..types import Embeddings, FaceCrops

__all__ = ["SharedEmbedder"]


class _Request:
    __slots__ = ("crops", "result", "error", "done")

    def __init__(self, crops: FaceCrops) -> None:
        self.crops = crops
        self.result: Embeddings | None = None
        self.error: BaseException | None = None
        self.done = False


class SharedEmbedder:
    """Wraps an embedder (anything with ``embed(FaceCrops)``, ``spec`` and ``dim``); see the module doc.

    ``max_batch``: faces in one merged call at most (a caller's own crops are never split).
    :meth:`close` does nothing: the owner closes the wrapped embedder. Other attributes are
    the wrapped embedder's. ``stats()``: calls, model calls and faces, for the batch size.
    """

    def __init__(self, embedder: Any, max_batch: int = 32) -> None:
        self.embedder = embedder
        self.max_batch = max(1, int(max_batch))
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._busy = False
        self._calls = 0
        self._model_calls = 0
        self._faces = 0
        self._model_s = 0.0

    def __getattr__(self, name: str) -> Any:  # spec, dim, backend, embed_array, ...
        if name == "embedder":  # not set yet (a half-built object): no recursion
            raise AttributeError(name)
        return getattr(self.embedder, name)

    @property
    def busy(self) -> bool:
        """A model call is running or waiting: a call now would wait (callers put off work that can wait)."""
        return self._busy or bool(self._queue)

    def embed(self, crops: FaceCrops) -> Embeddings:
        """Embed ``crops`` (as the wrapped embedder would), in a batch with other threads' crops."""
        req = _Request(crops)
        with self._cond:
            self._queue.append(req)
            self._calls += 1
            while not req.done:
                if self._busy:
                    self._cond.wait()
                    continue
                batch = self._take()
                self._busy = True
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def _take(self) -> list[_Request]:
        """The queued requests, oldest first, up to ``max_batch`` faces (at least one request)."""
        batch: list[_Request] = []
        faces = 0
        while self._queue and (not batch or faces + len(self._queue[0].crops) <= self.max_batch):
            req = self._queue.pop(0)
            batch.append(req)
            faces += len(req.crops)
        return batch

    def _run(self, batch: list[_Request]) -> None:
        """One model call for every request of ``batch``; each gets its rows (or the error)."""
        t0 = time.perf_counter()
        try:
            if len(batch) == 1:
                batch[0].result = self.embedder.embed(batch[0].crops)
            else:
                first = batch[0].crops
                merged = FaceCrops(np.concatenate([r.crops.pixels for r in batch]),
                                   np.arange(sum(len(r.crops) for r in batch), dtype=np.int64),
                                   np.concatenate([r.crops.quality for r in batch]), first.color)
                vectors = self.embedder.embed(merged).vectors
                start = 0
                for r in batch:
                    n = len(r.crops)
                    r.result = Embeddings(np.ascontiguousarray(vectors[start:start + n]), r.crops.det_index.copy())
                    start += n
        except BaseException as exc:  # every waiter gets the failure, not only the one that ran it
            for r in batch:
                r.error = exc
        finally:
            for r in batch:
                r.done = True
            self._model_calls += 1
            self._faces += sum(len(r.crops) for r in batch)
            self._model_s += time.perf_counter() - t0

    def stats(self) -> dict[str, float]:
        """calls (embed() calls), model_calls, faces, mean_batch (faces per model call), model_s."""
        with self._cond:
            return {"calls": self._calls, "model_calls": self._model_calls, "faces": self._faces,
                    "mean_batch": round(self._faces / self._model_calls, 2) if self._model_calls else 0.0,
                    "model_s": round(self._model_s, 3)}

    def close(self) -> None:
        """Nothing: the wrapped embedder belongs to whoever made it."""
