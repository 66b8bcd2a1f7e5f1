"""RTSP and HTTP streams (:class:`StreamSource`): bounded opens and reads, transport choice,
per-open FFmpeg options, and the probes behind clear connection errors.

Streams are read with PyAV (FFmpeg's libraries, bundled with the ``av`` wheel), not OpenCV:
OpenCV's FFmpeg backend takes demuxer options (the RTSP transport among them) only from the
process-wide ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` environment variable, and changing the
environment from capture threads races every ``getenv`` in the process (glibc's setenv is not
thread-safe). PyAV takes options and open/read timeouts per open. ``scripts/decode_ab.py``
measures the three ways side by side (the sample clip, 640x360 H.264 over loopback RTSP at 30
fps, 2 runs of 8 s, 2-core CPU, 2026-12-01): 1.23-1.26 CPU-ms a frame with PyAV, 0.89-1.00 with
OpenCV, 1.66-1.67 with an ffmpeg CLI pipe (Frigate's way; it also needs an ffmpeg binary). PyAV
costs ~0.3 ms a frame more than OpenCV: 1 % of one core per 30 fps camera.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import numpy as np

from ..errors import ConfigError, SourceError
from ..redact import redact_text
from .sources import TwoStepSource
from .specs import RTSP_TRANSPORTS, SourceSpec, redact_url

log = logging.getLogger(__name__)


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


class StreamSource(TwoStepSource):
    """An RTSP or HTTP(S) stream, read with PyAV.

    ``open_timeout``/``read_timeout`` (seconds) bound every network wait of an open and of a read
    (PyAV's per-open ``timeout``). ``rtsp_transport``: ``"tcp"`` (RTP interleaved in the RTSP
    connection: no loss, passes NAT), ``"udp"``, or ``"auto"`` (the default: TCP, and UDP when the
    server answers but refuses TCP; the transport that worked is tried first next time).
    ``ffmpeg_options`` are extra FFmpeg demuxer options for this stream only
    (``{"fflags": "nobuffer"}``).
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
            if not isinstance(k, str) or not isinstance(v, str) or not k:
                raise ConfigError(f"ffmpeg option {k!r}={v!r}: names and values must be text")
        super().__init__(spec)
        self.url = spec.target
        self.open_timeout = float(open_timeout)
        self.read_timeout = float(read_timeout)
        self.rtsp_transport = rtsp_transport
        self.ffmpeg_options = dict(ffmpeg_options or {})
        self.transport: str | None = None  # the transport of the open connection (RTSP)
        self._preferred = "tcp" if rtsp_transport == "auto" else rtsp_transport
        self._container: Any = None
        self._stream: Any = None
        self._frames: Iterator[Any] | None = None
        self._grabbed: Any = None
        self.last_open_error = ""

    @property
    def is_rtsp(self) -> bool:
        return self.spec.scheme in ("rtsp", "rtsps")

    @property
    def fps(self) -> float | None:
        rate = None if self._stream is None else (self._stream.average_rate or self._stream.guessed_rate)
        fps = float(rate) if rate else 0.0
        return fps if 0 < fps <= 1000 else None

    def options(self, transport: str | None) -> dict[str, str]:
        """The FFmpeg options of one open: the extra ones, then the transport."""
        opts = dict(self.ffmpeg_options)
        if transport:
            opts["rtsp_transport"] = transport
        return opts

    def _try_open(self, transport: str | None) -> Any:
        import av

        try:
            container = av.open(self.url, mode="r", options=self.options(transport),
                                timeout=(self.open_timeout, self.read_timeout))
        except (av.FFmpegError, OSError) as exc:
            self.last_open_error = redact_text(" ".join(str(exc).split()))
            log.debug("%s: open%s failed: %s", self.name, f" over {transport}" if transport else "",
                      self.last_open_error)
            return None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{redact_url(self.url)} has no video stream")
        return container

    def grab(self) -> tuple[bool, float | None]:
        """Decode the next frame, without converting it (:meth:`retrieve` does). (False, None)
        when the stream ended, was lost or sent nothing for ``read_timeout`` seconds; a packet
        that did not decode grabs nothing (then ``retrieve`` gives None: the capture thread
        counts it as corrupt)."""
        import av

        self._grabbed = None
        if self._frames is None:
            return False, None
        try:
            self._grabbed = next(self._frames)
        except StopIteration:
            return False, None
        except av.InvalidDataError as exc:  # a damaged packet: skip it, keep the connection
            log.debug("%s: undecodable packet: %s", self.name, exc)
            self._frames = self._container.decode(self._stream)
        except (av.FFmpegError, OSError) as exc:  # timeout, connection lost, end of stream
            log.debug("%s: read failed: %s", self.name, exc)
            return False, None
        return True, None

    def retrieve(self) -> np.ndarray | None:
        """The grabbed frame as BGR uint8 (colour conversion: ~0.3 ms for 640x360), None if it did not decode."""
        frame, self._grabbed = self._grabbed, None
        return None if frame is None else frame.to_ndarray(format="bgr24")

    def close(self) -> None:
        container, self._container, self._stream, self._frames = self._container, None, None, None
        self._grabbed = None
        if container is not None:
            try:
                container.close()
            except Exception as exc:  # noqa: BLE001 - a backend failing on close must not kill the thread
                log.warning("%s: close failed: %s", self.name, exc)

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
            container = self._try_open(transport)
            if container is not None:
                self._container, self.transport = container, transport
                self._stream = container.streams.video[0]
                self._frames = container.decode(self._stream)
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
