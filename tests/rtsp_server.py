"""Loopback stream servers for the capture tests: the RTSP relay (``lookalike_live.bench.relay``,
shared with the ``monitor`` benchmark) and ffmpeg as an HTTP MJPEG camera."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from lookalike_live.bench.relay import (  # noqa: F401 - re-exported for the tests
    HOST,
    RtspRelay,
    RtspTestServer,
    _terminate,
    free_tcp_port,
    missing_tools,
    rtsp_describe_status,
)


class HttpMjpegTestServer:
    """ffmpeg itself as a one-client HTTP server of an MJPEG stream (``multipart/x-mixed-replace``,
    what many IP cameras serve at ``/video.mjpg``), looping ``clip`` at real time on 127.0.0.1::

        ffmpeg -re -stream_loop -1 -i clip.mp4 -an -c:v mjpeg -q:v 8 -f mpjpeg -listen 1 \\
            http://127.0.0.1:P/video.mjpg

    ``-listen 1`` serves one client and exits when it leaves; ``start()`` after ``stop()`` serves
    the same URL again. Needs only the ``ffmpeg`` package.
    """

    def __init__(self, clip: str | Path, *, log_dir: str | Path | None = None) -> None:
        if shutil.which("ffmpeg") is None:
            raise RuntimeError("ffmpeg not found: install the package 'ffmpeg'")
        self.clip = Path(clip)
        self.port = free_tcp_port()
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="mjpeg-test-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._runs = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/video.mjpg"

    def command(self) -> list[str]:
        return [
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
            "-re", "-stream_loop", "-1", "-i", str(self.clip), "-an",
            "-c:v", "mjpeg", "-q:v", "8", "-f", "mpjpeg", "-listen", "1", self.url,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> HttpMjpegTestServer:
        """Start ffmpeg and return once it listens (it serves the first client that connects)."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._runs += 1
        with open(self.log_dir / f"mjpeg-{self._runs}.log", "wb") as out:
            self._proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        # ffmpeg listens once it has opened the input; probing the port would use up the one
        # client it serves, so watch the listening sockets instead.
        while not _listening(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                text = (self.log_dir / f"mjpeg-{self._runs}.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"ffmpeg MJPEG server did not start at {self.url}:\n{text[-2000:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            _terminate(self._proc)
        self._proc = None

    def __enter__(self) -> HttpMjpegTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listening(port: int) -> bool:
    """Whether a TCP socket listens on 127.0.0.1:port (Linux /proc/net/tcp; no connection made)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            return any(
                parts[1] == want and parts[3] == "0A"  # 0A: LISTEN
                for parts in (line.split() for line in f.readlines()[1:])
            )
    except OSError:
        time.sleep(0.5)  # not Linux: give ffmpeg a moment
        return True
