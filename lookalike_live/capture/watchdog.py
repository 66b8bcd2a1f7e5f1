"""The capture thread and its watchdog (:class:`CaptureThread`: reconnects with paced
backoff, stall detection, status events) and the entry points :func:`make_source` /
:func:`open_source`."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from ..errors import ConfigError, SourceError
from ..types import Frame
from .rtsp import StreamSource
from .sampling import RateSampler, read_overridden
from .slot import LatestFrameSlot
from .sources import FileSource, FrameSource, WebcamSource, _as_bgr
from .specs import SourceSpec, parse_source
from .status import Backoff, CaptureStats, SourceStatus, StatusEvent

log = logging.getLogger(__name__)


def make_source(
    spec: SourceSpec | str,
    *,
    loop: bool = False,
    open_timeout: float = 10.0,
    read_timeout: float = 5.0,
    rtsp_transport: str = "auto",
    ffmpeg_options: Mapping[str, str] | None = None,
    webcam_size: tuple[int, int] | None = None,
    webcam_fps: float | None = None,
) -> FrameSource:
    """The FrameSource for a spec (or text, parsed with ``parse_source``)."""
    spec = parse_source(spec)
    if spec.kind == "webcam":
        return WebcamSource(spec, size=webcam_size, fps=webcam_fps)
    if spec.kind == "file":
        return FileSource(spec, loop=loop)
    return StreamSource(
        spec,
        open_timeout=open_timeout,
        read_timeout=read_timeout,
        rtsp_transport=rtsp_transport,
        ffmpeg_options=ffmpeg_options,
    )


# --------------------------------------------------------------------------------------------
# Capture thread + watchdog
# --------------------------------------------------------------------------------------------


StatusCallback = Callable[[StatusEvent], None]


class _ReadSentinel:
    """One daemon thread for the process that reports, from outside, a live source whose backend
    read has not returned for its ``stall_timeout``: the capture thread cannot, it is inside the
    read. (OpenCV's V4L2 webcam read waits up to 10 s per attempt in the driver's select; its
    own OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT setting shortens that.) The thread ends when no
    capture is watched."""

    interval = 0.2

    def __init__(self) -> None:
        self._watched: weakref.WeakSet[CaptureThread] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, capture: CaptureThread) -> None:
        with self._lock:
            self._watched.add(capture)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="capture-read-sentinel", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            with self._lock:
                watched = [c for c in self._watched if c.running]
                if not watched:
                    self._watched = weakref.WeakSet()
                    self._thread = None
                    return
            for capture in watched:
                capture._report_blocked_read()


_sentinel = _ReadSentinel()


class CaptureThread:
    """Reads one FrameSource on its own (daemon) thread into a LatestFrameSlot.

    Consumers call ``read(timeout)`` / ``poll()`` (newest unread :class:`Frame`, BGR uint8) or
    iterate ``frames()``; they watch ``status``, ``subscribe(callback)`` to status events and
    read counters with ``stats()``. Subscribers run on the capture thread: keep them short,
    never block in them (an exception in one is logged and ignored).

    ``sample_fps`` (None: every frame): analyse this many frames a second. Every frame is still
    grabbed (decoded as far as the stream needs, no colour conversion); only the due ones are
    converted and published; the others are counted in ``stats().skipped`` (skipped by policy,
    not dropped). It may be changed while the thread runs (the monitor's fair rate control does).
    A sampled source's slot holds two frames: a reader late by one slow frame loses nothing.

    ``realtime`` paces files at their own frame rate (live sources are paced by the source).
    ``lossless`` (files only; default: ``not realtime``) makes the thread wait for the reader
    instead of dropping frames. ``stall_timeout``: seconds without a frame before a live source
    is declared stalled and reconnected. ``max_read_failures``: failed reads in a row before
    reconnecting. ``stop_timeout``: how long ``stop()`` waits for the thread by default.

    The reconnect watchdog runs inside the capture thread: every backend call it makes is
    bounded (a StreamSource's read timeout is capped at ``stall_timeout``), so after each call
    it checks for a stall and decides to reconnect. A backend that ignored its own timeouts
    would hold the thread, but never ``stop()`` or the readers, which only wait on the slot.
    """

    def __init__(
        self,
        source: FrameSource,
        *,
        source_id: str | None = None,
        realtime: bool = True,
        lossless: bool | None = None,
        stall_timeout: float = 5.0,
        max_read_failures: int = 3,
        backoff: Backoff | None = None,
        stop_timeout: float = 2.0,
        rng: random.Random | None = None,
        sample_fps: float | None = None,
    ) -> None:
        if lossless is None:
            lossless = not source.live and not realtime
        if lossless and source.live:
            raise ConfigError(
                f"lossless capture applies to files only: a live source ({source.name}) must never "
                "wait for its reader (frames are dropped and counted instead)"
            )
        if stall_timeout <= 0 or stop_timeout < 0 or max_read_failures < 1:
            raise ConfigError(
                f"need stall_timeout > 0, stop_timeout >= 0, max_read_failures >= 1; got "
                f"{stall_timeout}, {stop_timeout}, {max_read_failures}"
            )
        self.source = source
        self.source_id = source_id or source.name
        self.sampler = RateSampler(sample_fps)
        self._grab, self._retrieve = source.grab, source.retrieve
        if read_overridden(source):  # a subclass changed read(): grab and retrieve must go through it
            self._grab, self._retrieve = (lambda: FrameSource.grab(source)), (lambda: FrameSource.retrieve(source))
        self.realtime = realtime
        self.lossless = lossless
        self.stall_timeout = float(stall_timeout)
        self.max_read_failures = int(max_read_failures)
        self.backoff = backoff or Backoff()
        self.stop_timeout = float(stop_timeout)
        self._rng = rng or random.Random()
        if isinstance(source, StreamSource):  # a read must return in time to notice a stall
            source.read_timeout = min(source.read_timeout, self.stall_timeout)

        self.slot = LatestFrameSlot(depth=2 if sample_fps else 1)
        self._stop = threading.Event()
        self._resume = threading.Event()  # cleared while a file is paused
        self._resume.set()
        self._lock = threading.Lock()
        self._status_cond = threading.Condition(self._lock)
        self._subscribers: list[StatusCallback] = []
        self._events: deque[StatusEvent] = deque(maxlen=256)
        self._changes = 0  # status changes so far (wait_for sees one even when the next came at once)
        self._status = SourceStatus.CONNECTING
        source.cancel = self._stop
        self._thread = threading.Thread(target=self._run, name=f"capture[{self.source_id}]", daemon=True)
        self._started = False
        self._t0 = time.monotonic()
        self.started_at = time.time()
        # counters (written by the capture thread only)
        self._frames = 0
        self._skipped = 0
        self._corrupt = 0
        self._read_errors = 0
        self._reconnects = 0
        self._last_error = ""
        self._frame_times: deque[float] = deque(maxlen=64)
        self._next_index = 0
        self._last_ts = -math.inf
        self._last_read_ms: float | None = None
        self._anchor: tuple[float, float] | None = None
        self._reading_since: float | None = None  # when the read in progress began (None: none)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> CaptureThread:
        """Start the capture thread (once); returns self."""
        with self._lock:
            if self._started:
                return self
            self._started = True
            self._t0 = time.monotonic()
            self.started_at = time.time()
        self._thread.start()
        if self.source.live:
            _sentinel.watch(self)
        return self

    def pause(self, paused: bool = True) -> None:
        """Pause (or resume) reading a file: it resumes at the frame it stopped at. Live sources
        are not paused (a camera keeps streaming; pausing their display is the viewer's job)."""
        if paused and not self.source.live:
            self._resume.clear()
        else:
            self._resume.set()

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop capturing and wait up to ``timeout`` s (default ``stop_timeout``) for the thread.

        Returns True when the thread has finished. False means it is still inside one bounded
        backend call (an open or read waiting on a silent camera): it is a daemon, it releases
        the backend and exits as soon as that call returns (within the open/read timeout).
        Safe to call more than once and from any thread but the capture thread itself.
        """
        self._stop.set()
        self.slot.close()
        if not self._started:
            self._set_status(SourceStatus.STOPPED, "stopped before start")
            return True
        if threading.current_thread() is self._thread:
            return False
        self._thread.join(self.stop_timeout if timeout is None else timeout)
        if self._thread.is_alive():
            log.warning(
                "%s: capture thread still inside a backend call after stop(); it exits when that "
                "call times out", self.source_id,
            )
            return False
        return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to finish (a file's end, an error, or stop()); True if finished."""
        if self._started:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def __enter__(self) -> CaptureThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"CaptureThread({self.source_id!r}, status={self.status.value})"

    @property
    def sample_fps(self) -> float | None:
        """Frames analysed per second (None: every frame); see the class doc."""
        return self.sampler.fps

    @sample_fps.setter
    def sample_fps(self, fps: float | None) -> None:
        self.sampler.fps = fps
        self.slot.depth = 2 if fps else 1

    # -- frames ------------------------------------------------------------------------------

    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet read (BGR uint8), waiting up to ``timeout`` s.

        None on timeout, or once the source has finished (ended/error/stopped) and no frame is
        pending.
        """
        return self.slot.get(timeout)

    def poll(self) -> Frame | None:
        """The newest unread frame, or None at once."""
        return self.slot.poll()

    def frames(self, timeout: float | None = None) -> Iterator[Frame]:
        """Iterate frames until the source finishes (or ``timeout`` s pass without a frame)."""
        while True:
            frame = self.slot.get(timeout)
            if frame is None:
                return
            yield frame

    # -- status ------------------------------------------------------------------------------

    @property
    def status(self) -> SourceStatus:
        return self._status

    @property
    def last_event(self) -> StatusEvent | None:
        with self._lock:
            return self._events[-1] if self._events else None

    @property
    def events(self) -> list[StatusEvent]:
        """The recent status events (up to 256), oldest first."""
        with self._lock:
            return list(self._events)

    def subscribe(self, callback: StatusCallback) -> Callable[[], None]:
        """Call ``callback(StatusEvent)`` on every status change; returns an unsubscribe function."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def wait_for(self, *statuses: SourceStatus | str, timeout: float | None = None) -> bool:
        """Wait until the status is one of ``statuses``, or has been since the call (a stall that
        turned into a reconnect before this thread woke up counts); False on timeout."""
        wanted = {SourceStatus(s) for s in statuses}
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._status_cond:
            start = self._changes

            def seen() -> bool:
                if self._status in wanted:
                    return True
                new = min(self._changes - start, len(self._events))  # the events since the call
                return new > 0 and any(e.status in wanted for e in list(self._events)[-new:])

            while not seen():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._status_cond.wait(remaining)
            return True

    def stats(self) -> CaptureStats:
        with self._lock:
            times = list(self._frame_times)
            status, last_error = self._status, self._last_error
        now = time.monotonic()
        times = [t for t in times if now - t <= 2.0]  # the last 2 s only: 0 when frames stop
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else 0.0
        return CaptureStats(
            source_id=self.source_id,
            status=status,
            frames=self._frames,
            skipped=self._skipped,
            drops=self.slot.dropped,
            delivered=self.slot.delivered,
            corrupt=self._corrupt,
            read_errors=self._read_errors,
            reconnects=self._reconnects,
            last_error=last_error,
            fps=fps,
        )

    def _set_status(
        self, status: SourceStatus, message: str = "", *, attempt: int = 0, retry_in: float | None = None
    ) -> None:
        event = StatusEvent(self.source_id, status, message, attempt, retry_in)
        with self._status_cond:
            if self._status.final and self._events:
                return  # nothing follows ended / error / stopped
            self._status = status
            self._events.append(event)
            self._changes += 1
            subscribers = list(self._subscribers)
            self._status_cond.notify_all()
        level = logging.WARNING if status in (SourceStatus.ERROR, SourceStatus.STALLED) else logging.INFO
        if status is SourceStatus.RECONNECTING:
            log.log(level, "%s: reconnecting in %.2f s (attempt %d): %s", self.source_id, retry_in or 0.0, attempt, message)
        else:
            log.log(level, "%s: %s%s", self.source_id, status.value, f": {message}" if message else "")
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("%s: status subscriber %r failed", self.source_id, callback)

    def _error(self, message: str) -> None:
        with self._lock:
            self._last_error = message

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._set_status(SourceStatus.CONNECTING, self.source.name)
            if self.source.live:
                self._run_live()
            else:
                self._run_file()
        except Exception as exc:  # a bug or an unexpected backend error: report, never hang readers
            log.exception("%s: capture thread failed", self.source_id)
            self._error(f"{type(exc).__name__}: {exc}")
            self._set_status(SourceStatus.ERROR, f"capture failed: {type(exc).__name__}: {exc}")
        finally:
            self.source.close()
            if self._stop.is_set():
                self._set_status(SourceStatus.STOPPED)
            self.slot.close()

    def _stamp(self, ts_ms: float | None) -> float:
        """The frame's time: the media time, else the capture clock (ms since start); increasing."""
        ts = (time.monotonic() - self._t0) * 1000.0 if ts_ms is None else float(ts_ms)
        if ts <= self._last_ts:
            ts = math.nextafter(self._last_ts, math.inf)
        self._last_ts = ts
        return ts

    def _publish(self, image: np.ndarray, ts: float) -> None:
        now = time.monotonic()
        frame = Frame(self.source_id, self._next_index, ts, image, captured_at=now, decode_ms=self._last_read_ms)
        self._next_index += 1
        self.slot.put(frame, wait=self.lossless, cancel=self._stop)
        with self._lock:
            self._frames += 1
            self._frame_times.append(now)

    def _read_one(self, pace: bool = False) -> tuple[str, np.ndarray | None, float]:
        """One backend read: ("frame", image, ts), ("skipped", None, ts) (not due: grabbed, not
        converted), ("corrupt", None, ts) or ("failed", None, nan). ``pace``: wait until a
        file's frame is due in real time first. The read's duration is kept for the frame
        (``Frame.decode_ms``); while it lasts, the read sentinel can see it
        (:meth:`_report_blocked_read`)."""
        t0 = time.monotonic()
        with self._lock:
            self._reading_since = t0
        try:
            ok, ts_ms = self._grab()
        finally:
            with self._lock:
                self._reading_since = None
        grab_ms = (time.monotonic() - t0) * 1e3
        if not ok:
            return "failed", None, math.nan
        if pace and ts_ms is not None and self._pace(ts_ms):
            return "failed", None, math.nan  # stop() while waiting
        ts = self._stamp(ts_ms)
        if not self.sampler.due(ts):
            with self._lock:
                self._skipped += 1
            return "skipped", None, ts
        t1 = time.monotonic()
        raw = self._retrieve()
        self._last_read_ms = grab_ms + (time.monotonic() - t1) * 1e3
        image, why = _as_bgr(raw)
        if image is None:
            with self._lock:
                self._corrupt += 1
                self._last_error = f"corrupt frame skipped: {why}"
            log.debug("%s: corrupt frame skipped (%s)", self.source_id, why)
            return "corrupt", None, ts
        return "frame", image, ts

    def _pace(self, ts_ms: float) -> bool:
        """Real-time files: wait until the frame at ``ts_ms`` is due; True when stop() came first."""
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, ts_ms)
        delay = self._anchor[0] + (ts_ms - self._anchor[1]) / 1000.0 - now
        if delay > 0:
            return self._stop.wait(delay)
        if delay < -0.5:  # fell behind (slow decode, paused machine): re-anchor, no burst
            self._anchor = (now, ts_ms)
        return False

    def _report_blocked_read(self) -> None:
        """Called by the read sentinel: a read in progress for ``stall_timeout`` makes the source
        stalled now, not when (if ever) the backend returns."""
        with self._lock:
            since = self._reading_since
            if since is None or self._status not in (SourceStatus.CONNECTING, SourceStatus.LIVE):
                return
            blocked = time.monotonic() - since
            if blocked < self.stall_timeout:
                return
        self._set_status(SourceStatus.STALLED, (
            f"no frame for {blocked:.1f} s: the read is blocked in the backend (stall_timeout "
            f"{self.stall_timeout:g} s); it reconnects when the read returns"))

    def _run_file(self) -> None:
        try:
            self.source.open()
        except SourceError as exc:
            self._error(str(exc))
            self._set_status(SourceStatus.ERROR, str(exc))
            return
        self._set_status(SourceStatus.LIVE, f"{self.source.name} at {self.source.fps or 0:.2f} fps")
        self._anchor = None  # (monotonic time, ts_ms) for real-time pacing
        while not self._stop.is_set():
            if not self._resume.is_set():
                while not self._resume.wait(0.05):
                    if self._stop.is_set():
                        return
                self._anchor = None  # resume at the file's pace from here, no burst
            kind, image, ts = self._read_one(pace=self.realtime)
            if kind == "failed":  # the end of the file (FileSource loops by itself), or stop()
                break
            if image is None:
                continue
            self._publish(image, ts)
        if self._stop.is_set():
            return
        if self._frames == 0:
            msg = f"no frame could be decoded from {self.source.name}"
            self._error(msg)
            self._set_status(SourceStatus.ERROR, msg)
        else:
            self._set_status(SourceStatus.ENDED, f"{self._frames} frames")

    def _run_live(self) -> None:
        attempt = 0  # failed attempts in a row (drives the backoff)
        while not self._stop.is_set():
            try:
                self.source.open()
            except SourceError as exc:
                if self._stop.is_set():
                    break
                attempt += 1
                self._error(str(exc))
                self._wait_backoff(attempt, str(exc))
                continue
            if self._stop.is_set():
                break
            why, attempt = self._pump_live(attempt)
            self.source.close()
            if self._stop.is_set():
                break
            attempt += 1
            self._error(why)
            self._wait_backoff(attempt, why)

    def _pump_live(self, attempt: int) -> tuple[str, int]:
        """Read an open live source until it fails, stalls or stop() is called.

        Returns (why it ended, failed attempts in a row), the count reset to 0 once the
        connection has been live for ``backoff.reset_after`` seconds.
        """
        last_frame = time.monotonic()
        live_since: float | None = None
        failures = 0
        while not self._stop.is_set():
            kind, image, ts = self._read_one()
            now = time.monotonic()
            if image is not None or kind == "skipped":
                failures = 0
                last_frame = now
                if image is not None:
                    self._publish(image, ts)
                if live_since is None:
                    live_since = now
                    transport = getattr(self.source, "transport", None)
                    via = f" over {transport.upper()}" if transport else ""
                    self._set_status(SourceStatus.LIVE, f"{self.source.name}{via}")
                elif attempt and now - live_since >= self.backoff.reset_after:
                    attempt = 0
            elif kind == "failed":
                failures += 1
                with self._lock:
                    self._read_errors += 1
                if failures >= self.max_read_failures:
                    return f"{failures} reads failed in a row (stream ended or connection lost)", attempt
                self._stop.wait(0.05)  # no busy loop on a backend that fails at once
            if now - last_frame >= self.stall_timeout:
                since = "since it opened" if live_since is None else "since the last one"
                msg = f"no frame for {now - last_frame:.1f} s {since} (stall_timeout {self.stall_timeout:g} s)"
                if self.status is not SourceStatus.STALLED:  # the read sentinel may have said so already
                    self._set_status(SourceStatus.STALLED, msg)
                return msg, attempt
        return "stopped", attempt

    def _wait_backoff(self, attempt: int, message: str) -> None:
        delay = self.backoff.delay(attempt, self._rng)
        self._set_status(SourceStatus.RECONNECTING, message, attempt=attempt, retry_in=delay)
        if not self._stop.wait(delay):
            with self._lock:
                self._reconnects += 1


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def open_source(
    source: str | int | os.PathLike[str] | SourceSpec | FrameSource,
    *,
    realtime: bool = True,
    loop: bool = False,
    lossless: bool | None = None,
    source_id: str | None = None,
    stall_timeout: float = 5.0,
    open_timeout: float = 10.0,
    read_timeout: float = 5.0,
    rtsp_transport: str = "auto",
    ffmpeg_options: Mapping[str, str] | None = None,
    backoff: Backoff | None = None,
    stop_timeout: float = 2.0,
    webcam_size: tuple[int, int] | None = None,
    webcam_fps: float | None = None,
    on_status: StatusCallback | None = None,
    start: bool = True,
    sample_fps: float | None = None,
) -> CaptureThread:
    """Open a frame source and (by default) start its capture thread.

    ``source``: webcam index, file path, rtsp:// or http(s):// URL (see :func:`parse_source`),
    a parsed SourceSpec, or any FrameSource. Frames come out as :class:`Frame` (BGR uint8).

    ``realtime``: play files at their frame rate (else as fast as they decode, lossless unless
    ``lossless=False``); ``loop``: restart files at their end. ``stall_timeout``,
    ``open_timeout``, ``read_timeout`` are seconds; ``rtsp_transport`` is ``auto`` | ``tcp`` |
    ``udp``; ``backoff`` paces reconnects of live sources. ``on_status`` is subscribed before the
    thread starts, so it sees every event. ``sample_fps``: analyse this many frames a second
    (None: every frame; see :class:`CaptureThread`).

    Raises SourceError for a source that cannot be parsed (missing file, bad URL) and
    ConfigError for invalid settings. Failures after that (a camera that does not answer) are
    status events: ``error`` for files, ``reconnecting`` (forever, with backoff) for live sources.
    """
    if isinstance(source, FrameSource):
        frame_source = source
    else:
        frame_source = make_source(
            parse_source(source),
            loop=loop,
            open_timeout=open_timeout,
            read_timeout=read_timeout,
            rtsp_transport=rtsp_transport,
            ffmpeg_options=ffmpeg_options,
            webcam_size=webcam_size,
            webcam_fps=webcam_fps,
        )
    cap = CaptureThread(
        frame_source,
        source_id=source_id,
        realtime=realtime,
        lossless=lossless,
        stall_timeout=stall_timeout,
        backoff=backoff,
        stop_timeout=stop_timeout,
        sample_fps=sample_fps,
    )
    if on_status is not None:
        cap.subscribe(on_status)
    return cap.start() if start else cap
