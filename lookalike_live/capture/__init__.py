"""Frame sources: webcam, video file, RTSP/HTTP stream; a capture thread per source.

Every decoded frame leaves this module as a :class:`lookalike_live.types.Frame` whose ``image``
is **BGR uint8, H x W x 3** (OpenCV's order), whose ``index`` counts frames from 0 and whose
``ts_ms`` increases strictly within a source:

* files: the frame's presentation time in the file (ms; with ``loop`` it keeps increasing
  across passes);
* webcams and streams: milliseconds since the capture thread started (monotonic clock; it keeps
  increasing across reconnects). ``CaptureThread.started_at + ts_ms / 1000`` is wall time.

How a frame flows (the design in ARCHITECTURE.md, step 1)::

    backend (OpenCV; PyAV for streams) --read--> CaptureThread --put--> LatestFrameSlot --read()--> consumer

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

Every backend call is bounded: streams open and read with PyAV's per-open timeouts, so ``stop()``
returns within its own timeout even while a camera does not answer; the (daemon) thread releases
the backend as soon as the bounded call returns. A backend that blocks anyway (a webcam driver)
is reported ``stalled`` while it blocks, by a sentinel thread outside the capture thread.

The one entry point for the rest of the package is :func:`open_source`::

    with open_source("rtsp://cam.local/stream1") as cap:
        frame = cap.read(timeout=1.0)      # newest Frame or None

Modules: ``specs`` (parse a source), ``status`` (status, counters, backoff), ``slot`` (the
latest-value slot), ``sources`` (webcam, file), ``rtsp`` (streams), ``watchdog`` (the capture
thread, reconnects, :func:`open_source`).
"""

from .rtsp import StreamSource, _rtsp_describe
from .slot import LatestFrameSlot
from .sources import FileSource, FrameSource, WebcamSource, list_webcams
from .specs import RTSP_TRANSPORTS, STREAM_SCHEMES, SourceSpec, parse_source, redact_url
from .status import Backoff, CaptureStats, SourceStatus, StatusEvent
from .watchdog import CaptureThread, make_source, open_source

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
    "_rtsp_describe",
]
