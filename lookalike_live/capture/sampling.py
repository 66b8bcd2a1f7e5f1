"""Which frames of a stream to analyse (:class:`RateSampler`, a capture's ``sample_fps``), and
whether a source must be read through its own ``read()`` (:func:`read_overridden`)."""

from __future__ import annotations

import math

from ..errors import ConfigError
from .sources import FrameSource

__all__ = ["RateSampler", "read_overridden"]


def read_overridden(source: FrameSource) -> bool:
    """Whether ``source``'s class overrides ``read()`` below the class that gives it ``grab()``
    (a subclass of FileSource that edits frames in read(): its grab/retrieve would bypass it)."""
    mro = type(source).__mro__
    read_owner = next(c for c in mro if "read" in c.__dict__)
    grab_owner = next((c for c in mro if "grab" in c.__dict__), FrameSource)
    return read_owner is not grab_owner and issubclass(read_owner, grab_owner) and grab_owner is not FrameSource


class RateSampler:
    """Which frames of a stream to analyse for ``fps`` frames a second (None or 0: every one).

    ``due(ts_ms)`` is asked for every frame in order. Due times step by ``1000 / fps`` ms; a
    frame counts as due from half a source frame interval before its due time (so a 30 fps
    camera sampled at 5 fps keeps every 6th frame despite jitter), and a source that paused or
    fell behind starts a new schedule instead of bursting. ``fps`` may change at any time."""

    def __init__(self, fps: float | None = None) -> None:
        self.fps = fps
        self._next: float | None = None
        self._last: float | None = None
        self._src_interval = 0.0  # smoothed interval between the source's frames (ms)

    @property
    def fps(self) -> float | None:
        return self._fps

    @fps.setter
    def fps(self, fps: float | None) -> None:
        if fps is not None and (not math.isfinite(fps) or fps < 0):
            raise ConfigError(f"the analysis rate must be a number of frames per second >= 0, got {fps!r}")
        self._fps = float(fps) if fps else None

    def due(self, ts_ms: float) -> bool:
        if self._last is not None and 0 < ts_ms - self._last <= 1000.0:  # a pause is not a frame interval
            gap = ts_ms - self._last
            self._src_interval = gap if not self._src_interval else 0.9 * self._src_interval + 0.1 * gap
        self._last = ts_ms
        fps = self._fps
        if fps is None:
            return True
        interval = 1000.0 / fps
        nxt = self._next
        if nxt is not None and ts_ms + 0.5 * self._src_interval < nxt:
            return False
        # the next due time: one interval on, unless this frame came a whole interval late
        self._next = ts_ms + interval if nxt is None or ts_ms - nxt >= interval else nxt + interval
        return True
