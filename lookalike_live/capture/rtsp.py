"""RTSP and HTTP streams (:class:`StreamSource`): bounded opens and reads, transport choice,
per-open FFmpeg options, and the probes behind clear connection errors."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import cv2
import numpy as np

from ..errors import ConfigError, SourceError
from .sources import _OpenCvSource
from .specs import RTSP_TRANSPORTS, SourceSpec, redact_url

log = logging.getLogger(__name__)

_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


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
