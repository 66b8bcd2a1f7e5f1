"""A real RTSP relay on loopback, fed by ffmpeg with a video clip, for the capture tests and the
``monitor`` benchmark.

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

One relay serves many paths (``paths=("cam0", "cam1", ...)``: one ffmpeg publisher per path;
``stagger`` seconds between their starts put the looped clips out of step, as real cameras are);
several relays on one machine do not play together (a second one's streams never play, even to
ffprobe), so a test or benchmark with many cameras uses one relay with many paths.

``RtspRelay`` picks free ports once and keeps them, so ``stop()`` / ``start()`` /
``restart()`` bring the *same* URLs down and up again, like a camera that reboots.

Usage::

    with RtspRelay(clip) as server:
        cap = open_source(server.url, rtsp_transport="udp")
        server.stop()      # camera goes away
        server.start()     # camera comes back on the same URL

    with RtspRelay(clip, paths=[f"cam{i}" for i in range(16)], copy=True) as relay:
        urls = relay.urls  # one per path
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
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
RTSP_SERVER = "rtsp-server-perl"
# UDP ports the server hands out for RTP: 2 per stream per connection, never reused while it
# runs, so every player (re)connection uses 2 more. 200 ports a path covers any test run.
_RTP_BLOCK = 200


def missing_tools() -> str | None:
    """Why the RTSP server cannot run here (for ``pytest.skip``), or None when it can."""
    for tool, package in ((RTSP_SERVER, "rtsp-server-perl"), ("ffmpeg", "ffmpeg")):
        if shutil.which(tool) is None:
            return f"{tool} not found: install the Debian/Ubuntu package {package!r} to run the RTSP tests"
    return None


def free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
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
    from ..capture import _rtsp_describe

    answer = _rtsp_describe(f"rtsp://{HOST}:{url_port}/{path}", timeout)
    return answer[0] if answer else None


class RtspRelay:
    """``rtsp-server-perl`` + one ffmpeg publisher per path looping ``clip`` at real time, on 127.0.0.1.

    ``url`` (the first path's) and ``urls`` stay the same across ``stop()``/``start()``/``restart()``.
    Logs of every process go to ``log_dir`` (a temporary folder by default) and are quoted in
    start-up errors.
    """

    def __init__(
        self,
        clip: str | Path,
        *,
        path: str = "live",
        paths: Sequence[str] | None = None,
        copy: bool = False,
        gop: int = 10,
        log_dir: str | Path | None = None,
        stagger: float = 0.0,
    ) -> None:
        reason = missing_tools()
        if reason:
            raise RuntimeError(reason)
        self.clip = Path(clip)
        self.paths = tuple(paths) if paths else (path,)
        if len(set(self.paths)) != len(self.paths) or not all(self.paths):
            raise ValueError(f"paths must be distinct and not empty, got {self.paths}")
        self.path = self.paths[0]
        self.copy = copy
        self.gop = gop
        self.stagger = float(stagger)  # seconds between the publishers' starts: the loops out of step
        self.client_port = free_tcp_port()
        self.source_port = free_tcp_port()
        while self.source_port == self.client_port:
            self.source_port = free_tcp_port()
        self.rtp_start_port = _free_udp_block(_RTP_BLOCK * len(self.paths))
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="rtsp-test-"))
        self._server: subprocess.Popen[bytes] | None = None
        self._publishers: list[subprocess.Popen[bytes]] = []
        self._runs = 0

    def url_for(self, path: str) -> str:
        """The URL players open for ``path``: ``rtsp://127.0.0.1:<client_port>/<path>``."""
        return f"rtsp://{HOST}:{self.client_port}/{path}"

    @property
    def url(self) -> str:
        """The first path's URL."""
        return self.url_for(self.path)

    @property
    def urls(self) -> list[str]:
        """One URL per path, in the order of ``paths``."""
        return [self.url_for(p) for p in self.paths]

    def publish_url(self, path: str | None = None) -> str:
        return f"rtsp://{HOST}:{self.source_port}/{path or self.path}"

    @property
    def pids(self) -> list[int]:
        """The relay's and the publishers' process ids (what a benchmark leaves out of its CPU figures)."""
        return [p.pid for p in ([self._server] if self._server else []) + self._publishers]

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

    def publisher_command(self, path: str | None = None) -> list[str]:
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
            "-f", "rtsp", "-rtsp_transport", "udp", self.publish_url(path),
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> RtspRelay:
        """Start the relay and the publishers; return once DESCRIBE answers 200 on every path."""
        if self.running:
            return self
        self._runs += 1
        deadline = time.monotonic() + timeout + (0.5 + self.stagger) * len(self.paths)
        self._server = self._spawn(self.server_command(), f"server-{self._runs}.log")
        while not (_port_open(self.client_port) and _port_open(self.source_port)):
            self._check_alive(self._server, "rtsp-server-perl", deadline)
            time.sleep(0.05)
        self._publishers = []
        for i, p in enumerate(self.paths):
            if i and self.stagger > 0:
                time.sleep(self.stagger)
            self._publishers.append(self._spawn(self.publisher_command(p), f"ffmpeg-{p}-{self._runs}.log"))
        waiting = list(self.paths)
        while waiting:
            waiting = [p for p in waiting if rtsp_describe_status(self.client_port, p) != 200]
            self._check_alive(self._server, "rtsp-server-perl", deadline)
            for proc in self._publishers:
                self._check_alive(proc, "ffmpeg publisher", deadline)
            if waiting:
                time.sleep(0.1)
        log.info("RTSP test relay up at %s (%d path(s), run %d)", self.url, len(self.paths), self._runs)
        return self

    def stop(self) -> None:
        """Stop the publishers and the relay (the URLs stop answering: connection refused)."""
        for proc in [*self._publishers, self._server]:
            if proc is not None:
                _terminate(proc)
        self._publishers, self._server = [], None

    def _signal_publishers(self, sig: int) -> None:
        for proc in self._publishers:
            if proc.poll() is None:
                proc.send_signal(sig)

    def freeze(self) -> None:
        """Freeze the publishers (SIGSTOP): the relay stays up but no packet flows (a hung camera)."""
        self._signal_publishers(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let frozen publishers go on (SIGCONT)."""
        self._signal_publishers(signal.SIGCONT)

    def restart(self, down_for: float = 0.0, timeout: float = 15.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start(timeout=timeout)

    def __enter__(self) -> RtspRelay:
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
            raise RuntimeError(f"{name} {state} (RTSP test relay {self.url})\n{logs}")


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


#: the name the tests have used
RtspTestServer = RtspRelay
