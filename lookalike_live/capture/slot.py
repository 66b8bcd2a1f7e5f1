"""The latest-value slot: one value, a newer one replaces an unread one (counted as dropped);
lossless mode makes the writer wait instead. Between a capture thread and its reader
(:data:`LatestFrameSlot`) and between the engine and whoever shows its results."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from ..types import Frame

T = TypeVar("T")

log = logging.getLogger(__name__)


class LatestSlot(Generic[T]):
    """A mailbox of ``depth`` values (default one) between a writer thread and its reader(s).

    ``put`` adds a value; when ``depth`` are unread, the oldest is dropped (counted in
    ``dropped``); it never blocks, unless asked to wait (lossless offline runs). ``get`` returns
    each value at most once, oldest unread first (with depth 1: the newest), waiting up to
    ``timeout`` seconds; ``poll`` does not wait. ``latest`` and ``wait_latest`` look at the newest
    value put, read or not (a display that redraws it). After ``close()`` pending values can
    still be read, then readers get None at once. ``depth`` 2 lets a sampled camera's reader be
    late by one frame (one slow frame) without losing it. Invariant:
    ``put_count == delivered + dropped + pending values``.
    """

    def __init__(self, depth: int = 1) -> None:
        self._cond = threading.Condition()
        self._queue: deque[T] = deque()  # the unread values, oldest first
        self.depth = depth
        self._last: T | None = None  # the newest value put
        self._closed = False
        self.put_count = 0
        self.dropped = 0
        self.delivered = 0

    def put(self, frame: T, *, wait: bool = False, cancel: threading.Event | None = None) -> bool:
        """Store a value; return True when an unread one was dropped to make room.

        With ``wait=True`` the call waits until the previous value was read (or the slot is
        closed, or ``cancel`` is set) instead of dropping it.
        """
        with self._cond:
            if wait:
                while len(self._queue) >= self.depth and not self._closed and not (cancel and cancel.is_set()):
                    self._cond.wait(0.1)
            dropped = False
            while len(self._queue) >= max(1, self.depth):
                self._queue.popleft()
                self.dropped += 1
                dropped = True
            self._queue.append(frame)
            self._last = frame
            self.put_count += 1
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The newest unread value, waiting up to ``timeout`` s (None: forever) for one.

        Returns None on timeout, or at once when the slot is closed and empty.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._take()

    def poll(self) -> T | None:
        """The newest unread value or None, without waiting."""
        with self._cond:
            return self._take()

    def latest(self) -> T | None:
        """The newest value put, read or not (None before the first); never waits."""
        with self._cond:
            return self._last

    def wait_latest(self, ready: Callable[[T], bool], timeout: float | None = None) -> T | None:
        """Wait until the newest value put satisfies ``ready`` and return it (not consuming
        it); None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._last is None or not ready(self._last):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._last

    def _take(self) -> T | None:
        if not self._queue:
            return None
        frame = self._queue.popleft()
        self.delivered += 1
        self._cond.notify_all()  # a lossless put may be waiting for room
        return frame

    @property
    def pending(self) -> bool:
        with self._cond:
            return bool(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


#: the slot between a capture thread and its reader
LatestFrameSlot = LatestSlot[Frame]
