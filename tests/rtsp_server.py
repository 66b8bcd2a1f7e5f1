"""A real RTSP server on loopback, fed by ffmpeg with a video clip, for the capture tests.

Two processes, both bound to 127.0.0.1 only:

* ``rtsp-server-perl`` (Debian/Ubuntu package ``rtsp-server-perl``): a small RTSP relay. Publishers
  ANNOUNCE/RECORD on the *source* port, players DESCRIBE/SETUP/PLAY on the *client* port. It sends
  RTP to players over **UDP only** (no interleaved TCP), so players must use ``rtsp_transport=udp``
  (or ``auto``, which falls back to UDP).
* ``ffmpeg`` (package ``ffmpeg``) publishes the clip in a loop at its native rate::

      rtsp-server-perl --clientport C --serverport S --client_listen_address 127.0.0.1 \\
          --source_listen_address 127.0.0.1 --rtp_start_port R
      ffmpeg -re -stream_loop -1 -i clip.mp4 -an -c:v libx264 -preset ultrafast -tune zerolatency \\
          -g 10 -f rtsp rtsp://127.0.0.1:S/live

  The clip is re-encoded with a short GOP (``-g 10``, a key frame every ~0.33 s) so that a
  player joining or re-joining mid-stream decodes its first picture quickly; ``copy=True`` relays
  the clip's own packets instead (no encoding CPU, but key frames only every ~2 s).

``RtspTestServer`` picks free ports once and keeps them, so ``stop()`` / ``start()`` /
``restart()`` bring the *same* URL down and up again, like a camera that reboots.

Usage::

    with RtspTestServer(clip) as server:
        cap = open_source(server.url, rtsp_transport="udp")
        server.stop()      # camera goes away
        server.start()     # camera comes back on the same URL
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
RTSP_SERVER = "rtsp-server-perl"
# UDP ports the server hands out for RTP: 2 per stream per connection, never reused while it
# runs, so every player (re)connection uses 2 more. 200 ports covers any test run.
_RTP_BLOCK = 200


def missing_tools() -> str | None:
    """Why the RTSP server cannot run here (for ``pytest.skip``), or None when it can."""
    for tool, package in ((RTSP_SERVER, "rtsp-server-perl"), ("ffmpeg", "ffmpeg")):
        if shutil.which(tool) is None:
            return f"{tool} not found: install the Debian/Ubuntu package {package!r} to run the RTSP tests"
    return None


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _udp_block_free(start: int, count: int) -> bool:
    socks: list[socket.socket] = []
    try:
        for port in range(start, start + count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def _free_udp_block(count: int = _RTP_BLOCK) -> int:
    """An even port starting ``count`` free UDP ports, below Linux's ephemeral range (32768+)."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(50):
        start = rng.randrange(20000, 32000 - count, 2)
        if _udp_block_free(start, count):
            return start
    raise RuntimeError(f"no block of {count} free UDP ports found on {HOST}")


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
        return True
    return False


def rtsp_describe_status(url_port: int, path: str, timeout: float = 1.0) -> int | None:
    """Send one RTSP DESCRIBE and return the status code (200 once a stream is mounted), or None."""
    from lookalike_live.capture import _rtsp_describe

    answer = _rtsp_describe(f"rtsp://{HOST}:{url_port}/{path}", timeout)
    return answer[0] if answer else None


class RtspTestServer:
    """``rtsp-server-perl`` + an ffmpeg publisher looping ``clip`` at real time, on 127.0.0.1.

    ``url`` stays the same across ``stop()``/``start()``/``restart()``. Logs of both processes go
    to ``log_dir`` (a temporary folder by default) and are quoted in start-up errors.
    """

    def __init__(
        self,
        clip: str | Path,
        *,
        path: str = "live",
        copy: bool = False,
        gop: int = 10,
        log_dir: str | Path | None = None,
    ) -> None:
        reason = missing_tools()
        if reason:
            raise RuntimeError(reason)
        self.clip = Path(clip)
        self.path = path
        self.copy = copy
        self.gop = gop
        self.client_port = _free_tcp_port()
        self.source_port = _free_tcp_port()
        while self.source_port == self.client_port:
            self.source_port = _free_tcp_port()
        self.rtp_start_port = _free_udp_block()
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="rtsp-test-"))
        self._server: subprocess.Popen[bytes] | None = None
        self._publisher: subprocess.Popen[bytes] | None = None
        self._runs = 0

    @property
    def url(self) -> str:
        """The URL players open: ``rtsp://127.0.0.1:<client_port>/<path>``."""
        return f"rtsp://{HOST}:{self.client_port}/{self.path}"

    @property
    def publish_url(self) -> str:
        return f"rtsp://{HOST}:{self.source_port}/{self.path}"

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def server_command(self) -> list[str]:
        return [
            RTSP_SERVER,
            "--clientport", str(self.client_port),
            "--serverport", str(self.source_port),
            "--client_listen_address", HOST,
            "--source_listen_address", HOST,
            "--rtp_start_port", str(self.rtp_start_port),
            "--loglevel", "2",
        ]  # fmt: skip

    def publisher_command(self) -> list[str]:
        codec = (
            ["-c:v", "copy"]
            if self.copy
            else [
                "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                "-g", str(self.gop), "-bf", "0", "-pix_fmt", "yuv420p",
            ]
        )  # fmt: skip
        return [
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning",
            "-re", "-stream_loop", "-1", "-i", str(self.clip), "-an", *codec,
            "-f", "rtsp", "-rtsp_transport", "udp", self.publish_url,
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> RtspTestServer:
        """Start the server and the publisher; return once DESCRIBE on ``url`` answers 200."""
        if self.running:
            return self
        self._runs += 1
        deadline = time.monotonic() + timeout
        self._server = self._spawn(self.server_command(), f"server-{self._runs}.log")
        while not (_port_open(self.client_port) and _port_open(self.source_port)):
            self._check_alive(self._server, "rtsp-server-perl", deadline)
            time.sleep(0.05)
        self._publisher = self._spawn(self.publisher_command(), f"ffmpeg-{self._runs}.log")
        while rtsp_describe_status(self.client_port, self.path) != 200:
            self._check_alive(self._server, "rtsp-server-perl", deadline)
            self._check_alive(self._publisher, "ffmpeg publisher", deadline)
            time.sleep(0.1)
        log.info("RTSP test server up at %s (run %d)", self.url, self._runs)
        return self

    def stop(self) -> None:
        """Stop the publisher and the server (the URL stops answering: connection refused)."""
        for proc in (self._publisher, self._server):
            if proc is not None:
                _terminate(proc)
        self._publisher = self._server = None

    def freeze(self) -> None:
        """Freeze the publisher (SIGSTOP): the server stays up but no packet flows (a hung camera)."""
        if self._publisher is not None and self._publisher.poll() is None:
            self._publisher.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen publisher go on (SIGCONT)."""
        if self._publisher is not None and self._publisher.poll() is None:
            self._publisher.send_signal(signal.SIGCONT)

    def restart(self, down_for: float = 0.0, timeout: float = 15.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start(timeout=timeout)

    def __enter__(self) -> RtspTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, cmd: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with open(self.log_dir / log_name, "wb") as out:
            return subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _check_alive(self, proc: subprocess.Popen[bytes], name: str, deadline: float) -> None:
        if proc.poll() is not None or time.monotonic() > deadline:
            self.stop()
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(self.log_dir.glob("*.log"))
            )
            state = f"exited with {proc.returncode}" if proc.returncode is not None else "not ready in time"
            raise RuntimeError(f"{name} {state} (RTSP test server {self.url})\n{logs}")


def _terminate(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGINT (both tools exit cleanly on it), then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)  # a frozen process would not see SIGINT
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=grace)


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
        self.port = _free_tcp_port()
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
