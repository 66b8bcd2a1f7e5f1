"""What a capture reports: its status (:class:`SourceStatus`, :class:`StatusEvent`), its
counters (:class:`CaptureStats`) and the reconnect pacing (:class:`Backoff`)."""

from __future__ import annotations

import enum
import logging
import random
import time
from dataclasses import dataclass, field

from ..errors import ConfigError

log = logging.getLogger(__name__)


class SourceStatus(str, enum.Enum):
    """Lifecycle of a capture thread. ``ended``, ``error`` and ``stopped`` are final."""

    CONNECTING = "connecting"  # opening the backend for the first time
    LIVE = "live"  # frames are flowing
    STALLED = "stalled"  # no frame for stall_timeout seconds (live sources)
    RECONNECTING = "reconnecting"  # waiting (backoff) before the next open attempt
    ENDED = "ended"  # a file reached its end (no loop)
    ERROR = "error"  # a file could not be opened or decoded (final; live sources retry instead)
    STOPPED = "stopped"  # stop() was called

    @property
    def final(self) -> bool:
        return self in (SourceStatus.ENDED, SourceStatus.ERROR, SourceStatus.STOPPED)


@dataclass(frozen=True)
class StatusEvent:
    """One status change of a source, delivered to subscribers.

    ``message`` says why (the error for ``error``/``reconnecting``/``stalled``); for
    ``reconnecting``, ``attempt`` counts failed attempts in a row and ``retry_in`` is the backoff
    delay in seconds before the next open. ``time`` is wall-clock seconds (``time.time()``).
    """

    source_id: str
    status: SourceStatus
    message: str = ""
    attempt: int = 0
    retry_in: float | None = None
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class CaptureStats:
    """Counters of one capture thread (a snapshot).

    ``frames``: frames published; ``skipped``: frames grabbed but not analysed (``sample_fps``:
    skipped by policy); ``drops``: frames replaced in the slot before anyone read them;
    ``delivered``: frames handed to readers; ``corrupt``: reads that returned no/garbage image
    (skipped); ``read_errors``: failed reads; ``reconnects``: open attempts after the first;
    ``fps``: measured capture rate over the last 2 s (0 when frames stopped).
    """

    source_id: str
    status: SourceStatus
    frames: int
    drops: int
    delivered: int
    corrupt: int
    read_errors: int
    reconnects: int
    last_error: str
    fps: float
    skipped: int = 0


@dataclass(frozen=True)
class Backoff:
    """Paced exponential backoff: ``min(maximum, initial * factor**(attempt-1))`` seconds,
    times a random factor in ``[1 - jitter, 1 + jitter]`` (so many cameras do not retry in step).
    The attempt counter resets once a connection has been live for ``reset_after`` seconds."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 10.0
    jitter: float = 0.2
    reset_after: float = 10.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.factor < 1:
            raise ConfigError(
                f"invalid backoff {self}: need initial > 0, maximum >= initial and factor >= 1"
            )
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"backoff jitter must be in [0, 1), got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (``attempt`` >= 1 failures)."""
        exp = min(max(attempt, 1) - 1, 64)
        base = min(self.maximum, self.initial * self.factor**exp)
        if self.jitter:
            base *= (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return base
