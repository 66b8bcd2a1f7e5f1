"""Event records and the JSON-lines writer, shared by ``run --events`` and the monitor.

Events (one JSON object per line, flushed line by line; ``time`` is Unix seconds)::

    {"event": "camera_status", "camera": "door", "time": ..., "status": "reconnecting", "message": ..., "attempt": 2, "retry_in": 1.1}
    {"event": "track_started", "camera": "door", "time": ..., "track": 3, "bbox": [x1, y1, x2, y2], "state": "tentative", "decision": "pending", "nearest": null, "match": null, "score": null}
    {"event": "identity_decided", ..., "state": "decided", "decision": "match", "nearest": {"identity": "2880", "name": "...", "score": 0.52, "image": "000123.jpg"}, "match": {...the same...}, "score": 0.52, "snapshot": "snapshots/door/..jpg"}
    {"event": "identity_decided", ..., "state": "unknown", "decision": "unknown", "nearest": {..., "score": 0.31}, "match": null, "score": 0.31}
    {"event": "identity_changed", ..., "previous": {...}}
    {"event": "track_ended", ...}
    {"event": "search_status", "camera": "door", "time": ..., "available": false, "message": ...}

Every track event carries both answers: ``nearest`` (the nearest celebrity, whatever its score;
null until the gallery answers) and the open-set ``decision`` (``match`` at or above the threshold,
``unknown`` below, ``pending``, ``search_unavailable``); ``match`` is the nearest when the decision is
``match``, else null. Snapshots show the face with the open-set overlay (overlay.py).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import OutputError
from .tracking import TrackEvent
from .types import Match, Track

log = logging.getLogger(__name__)

__all__ = ["EventWriter", "OutputQueue", "track_event_record", "status_record", "search_record", "match_record"]


def match_record(m: Match | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"identity": m.identity, "name": m.name, "score": round(float(m.score), 4), "image": m.image_ref}


def track_event_record(camera: str, event: TrackEvent, wall_time: float | None = None,
                       open_set: bool = True) -> dict[str, Any]:
    """The JSON-ready dict of a track event. ``nearest``: the nearest celebrity so far (null until
    the gallery answers); ``decision``: ``match`` (at or above the threshold), ``unknown`` (below),
    ``pending`` or ``search_unavailable``; ``match``: the nearest when the decision is ``match``,
    else null; ``resemblance`` (lookalike runs, not open set): ``strong`` / ``faint``."""
    t: Track = event.track
    decided = t.best is not None and t.state.value == "decided"
    decision = {"decided": "match", "unknown": "unknown", "search_unavailable": "search_unavailable"}.get(
        t.state.value, "pending")
    if t.best is None and decision != "search_unavailable":
        decision = "pending"
    rec: dict[str, Any] = {
        "event": event.kind,
        "camera": camera,
        "time": round(time.time() if wall_time is None else wall_time, 3),
        "ts_ms": round(event.ts_ms, 1),
        "track": t.track_id,
        "bbox": [round(v, 1) for v in t.xyxy],
        "state": t.state.value,
        "decision": decision,
        "nearest": match_record(t.best),
        "match": match_record(t.best) if decided else None,
        "score": round(float(t.best.score), 4) if t.best is not None else None,
    }
    if not open_set and t.best is not None and decision in ("match", "unknown"):
        rec["resemblance"] = "strong" if decided else "faint"
    if event.previous is not None:
        rec["previous"] = match_record(event.previous)
    if t.top_k:
        rec["top_k"] = [match_record(m) for m in t.top_k]
    return rec


def status_record(camera: str, ev: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"event": "camera_status", "camera": camera, "time": round(ev.time, 3),
                           "status": ev.status.value, "message": ev.message}
    if ev.attempt:
        rec["attempt"] = ev.attempt
    if ev.retry_in is not None:
        rec["retry_in"] = round(ev.retry_in, 3)
    return rec


def search_record(camera: str, available: bool, message: str, wall_time: float | None = None) -> dict[str, Any]:
    """The gallery became reachable (``available``) or not, with why."""
    return {"event": "search_status", "camera": camera,
            "time": round(time.time() if wall_time is None else wall_time, 3), "available": available,
            "message": message}


class EventWriter:
    """Thread-safe JSON-lines writer: one object per line, flushed after each line, fsynced on close.
    ``path`` None writes to stdout."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self.count = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: Any = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        else:
            import sys

            self._fh = sys.stdout
        self._closed = False
        self._failed: OutputError | None = None

    def write(self, record: dict[str, Any]) -> None:
        """Append one line. Raises OutputError when the file cannot be written (a full disk...):
        then and after, nothing more is written."""
        line = json.dumps(record, default=str, ensure_ascii=False)
        with self._lock:
            if self._closed:
                return
            if self._failed is not None:
                raise self._failed
            try:
                self._fh.write(line + "\n")
                self._fh.flush()
            except OSError as exc:
                self._failed = OutputError(f"cannot write the events file {self.path or 'stdout'}: "
                                           f"{exc.strerror or exc}")
                raise self._failed from exc
            self.count += 1

    def close(self) -> None:
        """Flush, fsync and close (idempotent). After a failed write it closes without raising
        again (the write already reported it); a close that fails first raises OutputError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._fh.flush()
                if self.path is not None:
                    with contextlib.suppress(OSError):
                        os.fsync(self._fh.fileno())
                    self._fh.close()
            except OSError as exc:
                if self.path is not None:
                    with contextlib.suppress(OSError):
                        self._fh.close()
                if self._failed is None:
                    raise OutputError(f"cannot write the events file {self.path}: {exc.strerror or exc}") from exc

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OutputQueue:
    """Runs output jobs (an event line, a snapshot) on one writer thread, off the inference
    threads that produce them. The queue is bounded (``maxsize``): when it is full the oldest job
    is dropped and counted (``dropped``), never the producer blocked. The first job that fails
    stops the queue; :meth:`submit` then raises its error (an OutputError, or the error wrapped
    in one) to the producer, whose engine stops with it."""

    def __init__(self, maxsize: int = 1024, name: str = "output-writer") -> None:
        self.maxsize = int(maxsize)
        self.dropped = 0
        self.done = 0
        self.failure: OutputError | None = None
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job``; raises the queue's failure instead once a job failed."""
        with self._cond:
            if self.failure is not None:
                raise self.failure
            if self._closed:
                return
            self._jobs.append(job)
            if len(self._jobs) > self.maxsize:
                self._jobs.popleft()
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("outputs fall behind (more than %d queued): the oldest are dropped and counted",
                                self.maxsize)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - kept, raised to the producers
                err = exc if isinstance(exc, OutputError) else OutputError(f"{type(exc).__name__}: {exc}")
                if err is not exc:
                    err.__cause__ = exc
                with self._cond:
                    self.failure = err
                    self._jobs.clear()
                    self._closed = True
                return
            with self._cond:
                self.done += 1
                self._cond.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        """Run what is queued (bounded by ``timeout``), then stop the thread (idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("outputs still being written after %.0f s: %d left", timeout, len(self._jobs))
