"""The latest-value slot between a capture thread and its reader: one frame, a newer one
replaces an unread one (counted as dropped); lossless mode makes the writer wait instead."""

from __future__ import annotations

import logging
import threading
import time

from ..types import Frame

log = logging.getLogger(__name__)


class LatestFrameSlot:
    """A one-frame mailbox between a capture thread and its reader(s).

    ``put`` replaces an unread frame (counted in ``dropped``) and never blocks, unless asked to
    wait (lossless offline runs). ``get`` returns each frame at most once: the newest one not yet
    returned, waiting up to ``timeout`` seconds; ``poll`` does not wait. After ``close()`` a
    pending frame can still be read, then readers get None at once.
    Invariant: ``put_count == delivered + dropped + (1 if a frame is pending else 0)``.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.put_count = 0
        self.dropped = 0
        self.delivered = 0

    def put(self, frame: Frame, *, wait: bool = False, cancel: threading.Event | None = None) -> bool:
        """Store ``frame``; return True when an unread frame was dropped to make room.

        With ``wait=True`` the call waits until the previous frame was read (or the slot is
        closed, or ``cancel`` is set) instead of dropping it.
        """
        with self._cond:
            if wait:
                while self._frame is not None and not self._closed and not (cancel and cancel.is_set()):
                    self._cond.wait(0.1)
            dropped = self._frame is not None
            if dropped:
                self.dropped += 1
            self._frame = frame
            self.put_count += 1
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest unread frame, waiting up to ``timeout`` s (None: forever) for one.

        Returns None on timeout, or at once when the slot is closed and empty.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._frame is None:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._take()

    def poll(self) -> Frame | None:
        """The newest unread frame or None, without waiting."""
        with self._cond:
            return self._take()

    def _take(self) -> Frame | None:
        frame, self._frame = self._frame, None
        if frame is not None:
            self.delivered += 1
            self._cond.notify_all()  # a lossless put may be waiting for room
        return frame

    @property
    def pending(self) -> bool:
        with self._cond:
            return self._frame is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
