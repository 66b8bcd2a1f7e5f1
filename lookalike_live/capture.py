"""Frame sources: webcam, video file, RTSP/HTTP stream; a capture thread per source.

Every decoded frame leaves this module as a :class:`lookalike_live.types.Frame` whose ``image``
is **BGR uint8, H x W x 3** (OpenCV's order), whose ``index`` counts frames from 0 and whose
``ts_ms`` increases strictly within a source:

* files: the frame's presentation time in the file (ms; with ``loop`` it keeps increasing
  across passes);
* webcams and streams: milliseconds since the capture thread started (monotonic clock; it keeps
  increasing across reconnects). ``CaptureThread.started_at + ts_ms / 1000`` is wall time.

How a frame flows (the design in ARCHITECTURE.md, step 1)::

    backend (cv2.VideoCapture) --read--> CaptureThread --put--> LatestFrameSlot --read()--> consumer

The slot holds one frame: a new frame replaces an unread one, which is counted as dropped, so
a slow consumer never slows capture down and always gets the newest picture. Only an offline
file run (``realtime=False``) is lossless by default: there the capture thread waits for the
consumer, so every frame is processed.

Live sources (webcams and streams) are watched: on an open failure, read errors or a stall (no
frame for ``stall_timeout`` seconds) the thread closes the backend and reconnects with paced
exponential backoff (cap and jitter), forever, until ``stop()``. Each step is published as a
:class:`StatusEvent` (``connecting``, ``live``, ``stalled``, ``reconnecting``, ``ended``,
``error``, ``stopped``) to subscribers and kept as the current status; counters (frames, drops,
corrupt frames, read errors, reconnects, last error, measured fps) are in :meth:`CaptureThread.stats`.

Every backend call is bounded: streams open with ``CAP_PROP_OPEN_TIMEOUT_MSEC`` and read with
``CAP_PROP_READ_TIMEOUT_MSEC``, so ``stop()`` returns within its own timeout even while a camera
does not answer; the (daemon) thread releases the backend as soon as the bounded call returns.

The one entry point for the rest of the package is :func:`open_source`::

    with open_source("rtsp://cam.local/stream1") as cap:
        frame = cap.read(timeout=1.0)      # newest Frame or None
"""

from __future__ import annotations

import abc
import contextlib
import enum
import logging
import math
import os
import random
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import cv2
import numpy as np

from .errors import ConfigError, SourceError
from .types import Frame

__all__ = [
    "SourceSpec",
    "parse_source",
    "redact_url",
    "SourceStatus",
    "StatusEvent",
    "CaptureStats",
    "Backoff",
    "LatestFrameSlot",
    "FrameSource",
    "WebcamSource",
    "FileSource",
    "StreamSource",
    "make_source",
    "CaptureThread",
    "open_source",
    "list_webcams",
    "STREAM_SCHEMES",
    "RTSP_TRANSPORTS",
]

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
RTSP_TRANSPORTS = ("auto", "tcp", "udp")
_WEBCAM_RE = re.compile(r"^(?:webcam|cam|camera)(?::(\d+))?$", re.IGNORECASE)
_V4L_RE = re.compile(r"^/dev/video(\d+)$")
_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


# --------------------------------------------------------------------------------------------
# Source specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSpec:
    """What ``parse_source`` understood.

    ``kind`` is ``"webcam"`` (``index`` set), ``"file"`` (``target`` is an absolute path) or
    ``"stream"`` (``target`` is the URL, scheme one of STREAM_SCHEMES). ``text`` is the input.
    """

    kind: str
    target: str
    index: int | None = None
    text: str = ""

    @property
    def live(self) -> bool:
        """Webcams and streams are live (watched and reconnected); files are not."""
        return self.kind != "file"

    @property
    def scheme(self) -> str:
        return urlsplit(self.target).scheme.lower() if self.kind == "stream" else ""

    @property
    def display_name(self) -> str:
        """A name safe to log or show: ``webcam:0``, the file name, or the URL without password."""
        if self.kind == "webcam":
            return f"webcam:{self.index}"
        if self.kind == "file":
            return Path(self.target).name
        return redact_url(self.target)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and status messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_source(text: str | int | os.PathLike[str] | SourceSpec) -> SourceSpec:
    """Understand a source as typed by a user (CLI flag, config, GUI field).

    * webcam: ``0``, ``"1"``, ``"webcam"`` (index 0), ``"webcam:1"``, ``"/dev/video2"``;
    * stream: ``rtsp://``, ``rtsps://``, ``http://``, ``https://`` URLs (a host is required);
    * file: any other text is a path (``~`` expanded, ``file://`` URLs accepted) that must exist.

    Raises SourceError naming the input when it is empty, a URL has no host or an unsupported
    scheme, or a file does not exist / is a folder.
    """
    if isinstance(text, SourceSpec):
        return text
    if isinstance(text, bool):
        raise SourceError(f"not a frame source: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise SourceError(f"webcam index must be >= 0, got {text}")
        return SourceSpec("webcam", str(text), index=text, text=str(text))
    raw = os.fspath(text)
    s = raw.strip()
    if not s:
        raise SourceError(
            "empty frame source: give a webcam index (0), a video file path or an rtsp:// / http(s):// URL"
        )
    if s.isdigit():
        return SourceSpec("webcam", s, index=int(s), text=raw)
    m = _WEBCAM_RE.match(s) or _V4L_RE.match(s)
    if m:
        index = int(m.group(1) or 0)
        return SourceSpec("webcam", str(index), index=index, text=raw)

    scheme = ""
    if "://" in s:
        scheme = s.split("://", 1)[0].lower()
    if scheme == "file":
        s = urlsplit(s).path
    elif scheme in STREAM_SCHEMES:
        try:
            parts = urlsplit(s)
            _ = parts.port  # raises ValueError on a non-numeric port
        except ValueError as exc:
            raise SourceError(f"malformed stream URL {redact_url(s)!r}: {exc}") from None
        if not parts.hostname:
            raise SourceError(f"stream URL {redact_url(s)!r} has no host: expected {scheme}://HOST[:PORT]/PATH")
        return SourceSpec("stream", s, text=raw)
    elif scheme and len(scheme) > 1:  # "C://..." style Windows paths fall through to files
        raise SourceError(
            f"unsupported source URL scheme {scheme!r} in {redact_url(s)!r}: "
            f"use one of {', '.join(x + '://' for x in STREAM_SCHEMES)}, a webcam index or a file path"
        )

    path = Path(s).expanduser()
    if not path.exists():
        raise SourceError(
            f"video file not found: {path} (a source is a webcam index like 0, a video file path, "
            "or an rtsp:// / http(s):// URL)"
        )
    if path.is_dir():
        raise SourceError(f"frame source {path} is a folder, expected a video file")
    return SourceSpec("file", str(path.resolve()), text=raw)


# --------------------------------------------------------------------------------------------
# Status, events, counters, backoff
# --------------------------------------------------------------------------------------------


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

    ``frames``: frames published; ``drops``: frames replaced in the slot before anyone read them;
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


# --------------------------------------------------------------------------------------------
# Latest-frame slot
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Frame sources (one backend connection each; used by one capture thread)
# --------------------------------------------------------------------------------------------


def _backend(preferred: int) -> int:
    try:
        return preferred if cv2.videoio_registry.hasBackend(preferred) else cv2.CAP_ANY
    except AttributeError:  # very old OpenCV
        return cv2.CAP_ANY


def _as_bgr(image: Any) -> tuple[np.ndarray | None, str]:
    """A frame from ``cv2.VideoCapture.read`` as BGR uint8 (H, W, 3), or (None, why) if unusable."""
    if not isinstance(image, np.ndarray) or image.size == 0:
        return None, "empty frame"
    if image.dtype != np.uint8:
        return None, f"unsupported pixel type {image.dtype} (expected uint8)"
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), ""
    if image.ndim == 3 and image.shape[2] == 3:
        return (image if image.flags.c_contiguous else np.ascontiguousarray(image)), ""
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), ""
    return None, f"unsupported frame shape {image.shape}"


class FrameSource(abc.ABC):
    """One backend connection: ``open()``, then ``read()`` until it fails, then ``close()``.

    ``read()`` returns ``(ok, image, ts_ms)``: ``ok`` False means the read failed (end of a file,
    a lost stream); ``image`` is what the backend gave (may be None/garbage when ``ok``: the
    capture thread counts and skips it); ``ts_ms`` is the media time in ms or None (then the
    capture thread stamps the frame with its clock). Sources may be re-opened after ``close()``.
    Implementations raise SourceError from ``open()`` with an actionable message.
    """

    #: live sources are reconnected by the watchdog; non-live sources end.
    live: bool = True

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        #: set by the capture thread on stop(): an open() with several steps gives up early.
        self.cancel: threading.Event | None = None

    @property
    def name(self) -> str:
        return self.spec.display_name

    @property
    def fps(self) -> float | None:
        """Nominal frame rate of the open source, when the backend knows it."""
        return None

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> tuple[bool, np.ndarray | None, float | None]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _OpenCvSource(FrameSource):
    """Shared cv2.VideoCapture plumbing."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._cap: Any = None

    @property
    def fps(self) -> float | None:
        if self._cap is None:
            return None
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return fps if math.isfinite(fps) and 0 < fps <= 1000 else None

    def read(self) -> tuple[bool, np.ndarray | None, float | None]:
        if self._cap is None:
            return False, None, None
        ok, image = self._cap.read()
        return bool(ok), image, None

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            try:
                cap.release()
            except cv2.error as exc:  # a backend failing on release must not kill the thread
                log.warning("%s: release failed: %s", self.name, exc)


class WebcamSource(_OpenCvSource):
    """A local camera by index (``cv2.VideoCapture(index)``, the platform's default backend:
    V4L2 on Linux, MSMF/DirectShow on Windows, AVFoundation on macOS).

    ``size`` (width, height) and ``fps`` are requests; the camera may pick the nearest mode.
    """

    live = True

    def __init__(
        self, spec: SourceSpec, *, size: tuple[int, int] | None = None, fps: float | None = None
    ) -> None:
        if spec.kind != "webcam" or spec.index is None:
            raise SourceError(f"WebcamSource needs a webcam spec, got {spec.kind} {spec.target!r}")
        super().__init__(spec)
        self.index = spec.index
        self.size = size
        self.requested_fps = fps

    def open(self) -> None:
        self.close()
        cap = cv2.VideoCapture(self.index, cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open webcam {self.index}: no camera at that index, or it is in use by another "
                "program (see list_webcams() / the GUI's source list for the cameras found)"
            )
        if self.size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(self.size[0]))
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(self.size[1]))
        if self.requested_fps:
            cap.set(cv2.CAP_PROP_FPS, float(self.requested_fps))
        self._cap = cap


class FileSource(_OpenCvSource):
    """A video file decoded with OpenCV's FFmpeg backend. ``ts_ms`` is the frame's time in the
    file; with ``loop`` the file restarts at its end and ``ts_ms`` keeps increasing."""

    live = False

    def __init__(self, spec: SourceSpec, *, loop: bool = False) -> None:
        if spec.kind != "file":
            raise SourceError(f"FileSource needs a file spec, got {spec.kind} {spec.target!r}")
        super().__init__(spec)
        self.path = spec.target
        self.loop = loop
        self.passes = 0
        self._offset_ms = 0.0
        self._last_ts = -math.inf
        self._pass_frames = 0
        self._interval_ms = 1000.0 / 30.0

    def open(self) -> None:
        self.close()
        if not os.path.isfile(self.path):
            raise SourceError(f"video file not found: {self.path}")
        cap = cv2.VideoCapture(self.path, _backend(cv2.CAP_FFMPEG))
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open video file {self.path}: not a video OpenCV/FFmpeg can decode "
                "(check the file plays with ffprobe/ffplay)"
            )
        self._cap = cap
        self._interval_ms = 1000.0 / (self.fps or 30.0)
        self._pass_frames = 0
        self.passes += 1

    def read(self) -> tuple[bool, np.ndarray | None, float | None]:
        if self._cap is None:
            return False, None, None
        ok, image = self._cap.read()
        if not ok and self.loop and self._pass_frames > 0:
            log.debug("%s: end of pass %d, looping", self.name, self.passes)
            self._offset_ms = self._last_ts + self._interval_ms
            try:
                self.open()
            except SourceError as exc:
                log.warning("%s: cannot restart the loop: %s", self.name, exc)
                return False, None, None
            ok, image = self._cap.read()
        if not ok:
            return False, None, None
        self._pass_frames += 1
        pos = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        ts = self._offset_ms + pos if math.isfinite(pos) and pos >= 0 else -math.inf
        if ts <= self._last_ts:  # missing or repeated timestamps: step by the nominal interval
            ts = self._last_ts + self._interval_ms if math.isfinite(self._last_ts) else 0.0
        self._last_ts = ts
        return True, image, ts


# OPENCV_FFMPEG_CAPTURE_OPTIONS is process-wide and read by cv2.VideoCapture() at open time.
# Opens that need the same value may run together; a different value waits until they finish.
# The value the process had before is restored when no open needs ours any more.
_env_cond = threading.Condition()
_env_value: str | None = None
_env_users = 0
_env_saved: str | None = None


@contextlib.contextmanager
def _ffmpeg_capture_options(value: str) -> Iterator[None]:
    global _env_value, _env_users, _env_saved
    with _env_cond:
        while _env_users and _env_value != value:
            _env_cond.wait()
        if _env_users == 0:
            _env_saved = os.environ.get(_FFMPEG_OPTIONS_ENV)
            os.environ[_FFMPEG_OPTIONS_ENV] = value
            _env_value = value
        _env_users += 1
    try:
        yield
    finally:
        with _env_cond:
            _env_users -= 1
            if _env_users == 0:
                if _env_saved is None:
                    os.environ.pop(_FFMPEG_OPTIONS_ENV, None)
                else:
                    os.environ[_FFMPEG_OPTIONS_ENV] = _env_saved
                _env_value = None
                _env_cond.notify_all()


def _tcp_probe(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection, else why not (for error messages)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r} ({exc.strerror})"
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port} (is the camera/server running, is the port right?)"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s (host down, firewalled or wrong address)"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"


class StreamSource(_OpenCvSource):
    """An RTSP or HTTP(S) stream through OpenCV's FFmpeg backend.

    ``open_timeout``/``read_timeout`` (seconds) bound every backend call
    (``CAP_PROP_OPEN_TIMEOUT_MSEC`` / ``CAP_PROP_READ_TIMEOUT_MSEC``). ``rtsp_transport``:
    ``"tcp"`` (RTP interleaved in the RTSP connection: no loss, passes NAT), ``"udp"``, or
    ``"auto"`` (the default: TCP, and UDP when the server answers but refuses TCP; the transport
    that worked is tried first next time). ``ffmpeg_options`` are extra FFmpeg demuxer options
    (``{"fflags": "nobuffer"}``), passed through ``OPENCV_FFMPEG_CAPTURE_OPTIONS``.
    """

    live = True

    def __init__(
        self,
        spec: SourceSpec,
        *,
        open_timeout: float = 10.0,
        read_timeout: float = 5.0,
        rtsp_transport: str = "auto",
        ffmpeg_options: Mapping[str, str] | None = None,
    ) -> None:
        if spec.kind != "stream":
            raise SourceError(f"StreamSource needs a stream URL, got {spec.kind} {spec.target!r}")
        if rtsp_transport not in RTSP_TRANSPORTS:
            raise ConfigError(f"rtsp_transport must be one of {RTSP_TRANSPORTS}, got {rtsp_transport!r}")
        if open_timeout <= 0 or read_timeout <= 0:
            raise ConfigError(f"open_timeout and read_timeout must be > 0, got {open_timeout}, {read_timeout}")
        for k, v in (ffmpeg_options or {}).items():
            if any(c in f"{k}{v}" for c in ";|"):
                raise ConfigError(f"ffmpeg option {k!r}={v!r} must not contain ';' or '|'")
        super().__init__(spec)
        self.url = spec.target
        self.open_timeout = float(open_timeout)
        self.read_timeout = float(read_timeout)
        self.rtsp_transport = rtsp_transport
        self.ffmpeg_options = dict(ffmpeg_options or {})
        self.transport: str | None = None  # the transport of the open connection (RTSP)
        self._preferred = "tcp" if rtsp_transport == "auto" else rtsp_transport

    @property
    def is_rtsp(self) -> bool:
        return self.spec.scheme in ("rtsp", "rtsps")

    def _options(self, transport: str | None) -> str:
        opts = dict(self.ffmpeg_options)
        if transport:
            opts["rtsp_transport"] = transport
        return "|".join(f"{k};{v}" for k, v in opts.items())

    def _try_open(self, transport: str | None) -> Any:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout * 1000),
        ]  # fmt: skip
        options = self._options(transport)
        with _ffmpeg_capture_options(options):
            cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def read(self) -> tuple[bool, np.ndarray | None, float | None]:
        started = time.monotonic()
        ok, image, ts = super().read()
        if ok and time.monotonic() - started >= 0.95 * self.read_timeout:
            # The read timeout fired: FFmpeg then flushes its decoder, and OpenCV hands out
            # stale buffered pictures as if they were new. Report the timeout instead.
            return False, None, None
        return ok, image, ts

    def _host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        default = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}.get(parts.scheme.lower(), 554)
        return parts.hostname or "", parts.port or default

    def open(self) -> None:
        self.close()
        order: list[str | None] = [None]
        if self.is_rtsp:
            order = [self._preferred]
            if self.rtsp_transport == "auto":
                order.append("udp" if self._preferred == "tcp" else "tcp")
        tried: list[str] = []
        timed_out = False
        for transport in order:
            if self.cancel is not None and self.cancel.is_set():
                raise SourceError(f"opening {redact_url(self.url)} was cancelled (stop requested)")
            started = time.monotonic()
            cap = self._try_open(transport)
            if cap is not None:
                self._cap, self.transport = cap, transport
                if self.rtsp_transport == "auto" and transport:
                    self._preferred = transport
                return
            if transport:
                tried.append(transport)
            timed_out = time.monotonic() - started >= 0.9 * self.open_timeout
            if timed_out or transport == order[-1]:
                break  # a server that does not answer will not answer over UDP either
            if _tcp_probe(*self._host_port(), min(self.open_timeout, 3.0)) is not None:
                break  # nobody listens there: the other transport cannot help
            log.debug("%s: open over %s failed, trying the next transport", self.name, transport)
        raise SourceError(self._explain(tried, timed_out))

    def _explain(self, tried: list[str], timed_out: bool) -> str:
        """An actionable message for a failed open (probes the server once more to say why)."""
        name = redact_url(self.url)
        host, port = self._host_port()
        if timed_out:
            return (
                f"cannot open {name}: no answer within {self.open_timeout:g} s (camera off or overloaded, "
                "network or firewall, wrong address or port)"
            )
        reason = _tcp_probe(host, port, min(self.open_timeout, 3.0))
        if reason:
            return f"cannot open {name}: {reason}"
        parts = urlsplit(self.url)
        via = f" over {' and '.join(t.upper() for t in tried)}" if tried else ""
        other = {"tcp": "udp", "udp": "tcp"}.get(self.rtsp_transport)
        transport_hint = f", or try rtsp_transport={other!r} or 'auto'" if other else ""
        answer = _rtsp_describe(self.url, min(self.open_timeout, 3.0)) if parts.scheme.lower() == "rtsp" else None
        if answer is not None:
            code, phrase = answer
            if code == 404:
                return (
                    f"cannot open {name}: the server has no stream at path {parts.path or '/'!r} (404 {phrase}); "
                    "check the path (the camera's manual names it, e.g. /stream1)"
                )
            if code == 401:
                login = (
                    "check the user name and password in the URL"
                    if parts.username
                    else "put them in the URL: rtsp://USER:PASSWORD@HOST/PATH"
                )
                return f"cannot open {name}: the camera requires a login (401 {phrase}); {login}{transport_hint}"
            if code != 200:
                return f"cannot open {name}: the server answered {code} {phrase} to DESCRIBE"
            return (
                f"cannot open {name}: the stream exists (DESCRIBE 200) but could not be played{via}"
                + (f"; try rtsp_transport={other!r} or 'auto'" if other else "")
            )
        return (
            f"cannot open {name}: the server answers but the stream could not be opened{via}; "
            f"check the path and the credentials{transport_hint}"
        )


def _rtsp_describe(url: str, timeout: float) -> tuple[int, str] | None:
    """(status code, reason phrase) of an unauthenticated RTSP DESCRIBE of ``url``, or None."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 554
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    clean = urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query, ""))
    request = (
        f"DESCRIBE {clean} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n"
        "User-Agent: lookalike-live\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(request)
            head = conn.recv(1024).decode("latin-1").split("\r\n", 1)[0]
    except (OSError, UnicodeError):
        return None
    m = re.match(r"RTSP/\d\.\d\s+(\d{3})\s*(.*)", head)
    return (int(m.group(1)), m.group(2).strip()) if m else None


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


class CaptureThread:
    """Reads one FrameSource on its own (daemon) thread into a LatestFrameSlot.

    Consumers call ``read(timeout)`` / ``poll()`` (newest unread :class:`Frame`, BGR uint8) or
    iterate ``frames()``; they watch ``status``, ``subscribe(callback)`` to status events and
    read counters with ``stats()``. Subscribers run on the capture thread: keep them short,
    never block in them (an exception in one is logged and ignored).

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
        self.realtime = realtime
        self.lossless = lossless
        self.stall_timeout = float(stall_timeout)
        self.max_read_failures = int(max_read_failures)
        self.backoff = backoff or Backoff()
        self.stop_timeout = float(stop_timeout)
        self._rng = rng or random.Random()
        if isinstance(source, StreamSource):  # a read must return in time to notice a stall
            source.read_timeout = min(source.read_timeout, self.stall_timeout)

        self.slot = LatestFrameSlot()
        self._stop = threading.Event()
        self._resume = threading.Event()  # cleared while a file is paused
        self._resume.set()
        self._lock = threading.Lock()
        self._status_cond = threading.Condition(self._lock)
        self._subscribers: list[StatusCallback] = []
        self._events: deque[StatusEvent] = deque(maxlen=256)
        self._status = SourceStatus.CONNECTING
        source.cancel = self._stop
        self._thread = threading.Thread(target=self._run, name=f"capture[{self.source_id}]", daemon=True)
        self._started = False
        self._t0 = time.monotonic()
        self.started_at = time.time()
        # counters (written by the capture thread only)
        self._frames = 0
        self._corrupt = 0
        self._read_errors = 0
        self._reconnects = 0
        self._last_error = ""
        self._frame_times: deque[float] = deque(maxlen=64)
        self._next_index = 0
        self._last_ts = -math.inf
        self._last_read_ms: float | None = None

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
        """Wait until the current status is one of ``statuses``; False on timeout."""
        wanted = {SourceStatus(s) for s in statuses}
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._status_cond:
            while self._status not in wanted:
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

    def _publish(self, image: np.ndarray, ts_ms: float | None) -> None:
        now = time.monotonic()
        ts = (now - self._t0) * 1000.0 if ts_ms is None else float(ts_ms)
        if ts <= self._last_ts:
            ts = math.nextafter(self._last_ts, math.inf)
        self._last_ts = ts
        frame = Frame(self.source_id, self._next_index, ts, image, captured_at=now, decode_ms=self._last_read_ms)
        self._next_index += 1
        self.slot.put(frame, wait=self.lossless, cancel=self._stop)
        with self._lock:
            self._frames += 1
            self._frame_times.append(now)

    def _read_one(self) -> tuple[str, np.ndarray | None, float | None]:
        """One backend read: ("frame", image, ts), ("corrupt", None, None) or ("failed", None, None).
        Its duration is kept for the frame (``Frame.decode_ms``)."""
        t0 = time.monotonic()
        ok, raw, ts = self.source.read()
        self._last_read_ms = (time.monotonic() - t0) * 1e3
        if not ok:
            return "failed", None, None
        image, why = _as_bgr(raw)
        if image is None:
            with self._lock:
                self._corrupt += 1
                self._last_error = f"corrupt frame skipped: {why}"
            log.debug("%s: corrupt frame skipped (%s)", self.source_id, why)
            return "corrupt", None, None
        return "frame", image, ts

    def _run_file(self) -> None:
        try:
            self.source.open()
        except SourceError as exc:
            self._error(str(exc))
            self._set_status(SourceStatus.ERROR, str(exc))
            return
        self._set_status(SourceStatus.LIVE, f"{self.source.name} at {self.source.fps or 0:.2f} fps")
        anchor: tuple[float, float] | None = None  # (monotonic time, ts_ms) for real-time pacing
        while not self._stop.is_set():
            if not self._resume.is_set():
                while not self._resume.wait(0.05):
                    if self._stop.is_set():
                        return
                anchor = None  # resume at the file's pace from here, no burst
            kind, image, ts = self._read_one()
            if kind == "failed":  # the end of the file (FileSource loops by itself)
                break
            if image is None:
                continue
            if self.realtime and ts is not None:
                now = time.monotonic()
                if anchor is None:
                    anchor = (now, ts)
                delay = anchor[0] + (ts - anchor[1]) / 1000.0 - now
                if delay > 0:
                    if self._stop.wait(delay):
                        break
                elif delay < -0.5:  # fell behind (slow decode, paused machine): re-anchor, no burst
                    anchor = (now, ts)
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
            if image is not None:
                failures = 0
                last_frame = now
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
) -> CaptureThread:
    """Open a frame source and (by default) start its capture thread.

    ``source``: webcam index, file path, rtsp:// or http(s):// URL (see :func:`parse_source`),
    a parsed SourceSpec, or any FrameSource. Frames come out as :class:`Frame` (BGR uint8).

    ``realtime``: play files at their frame rate (else as fast as they decode, lossless unless
    ``lossless=False``); ``loop``: restart files at their end. ``stall_timeout``,
    ``open_timeout``, ``read_timeout`` are seconds; ``rtsp_transport`` is ``auto`` | ``tcp`` |
    ``udp``; ``backoff`` paces reconnects of live sources. ``on_status`` is subscribed before the
    thread starts, so it sees every event.

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
    )
    if on_status is not None:
        cap.subscribe(on_status)
    return cap.start() if start else cap


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log (e.g. "can't open camera by index") for the duration."""
    logging_mod = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_mod is None:
        yield
        return
    previous = logging_mod.getLogLevel()
    logging_mod.setLogLevel(logging_mod.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_mod.setLogLevel(previous)


def list_webcams(max_index: int = 8) -> list[int]:
    """Indices of the cameras that open, among 0 .. ``max_index - 1`` (for a source picker).

    Quiet (OpenCV's warnings are silenced while probing) and fast: on Linux only indices with a
    ``/dev/videoN`` node are probed, so a machine without cameras answers ``[]`` at once.
    Cameras busy in another program are not listed (they cannot be opened).
    """
    if max_index < 0:
        raise ConfigError(f"max_index must be >= 0, got {max_index}")
    found: list[int] = []
    linux = sys.platform.startswith("linux")
    with _quiet_opencv():
        for index in range(max_index):
            if linux and not os.path.exists(f"/dev/video{index}"):
                continue
            cap = cv2.VideoCapture(index, cv2.CAP_ANY)
            try:
                if cap.isOpened():
                    found.append(index)
            finally:
                cap.release()
    log.debug("webcams found: %s", found)
    return found
