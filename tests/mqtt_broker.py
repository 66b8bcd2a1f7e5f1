"""A real MQTT broker on loopback for the tests: Debian's mosquitto, started on a free port with
persistence in a temporary folder, stopped by its pid (SIGTERM, SIGKILL after a timeout)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO_PATHS = ("mosquitto", "/usr/sbin/mosquitto")


def mosquitto() -> str | None:
    for p in MOSQUITTO_PATHS:
        found = shutil.which(p)
        if found:
            return found
    return None


def missing() -> str | None:
    """Why the broker cannot run here (for ``pytest.skip``), or None."""
    if mosquitto() is None:
        return "mosquitto not found: install the Debian/Ubuntu package 'mosquitto' to run the MQTT tests"
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return "paho-mqtt is not installed: pip install 'lookalike-live[mqtt]'"
    return None


class Broker:
    """mosquitto on 127.0.0.1:``port`` (the same port across restarts), anonymous, persistent."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        from lookalike_live.bench.relay import free_tcp_port

        self.port = free_tcp_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {folder}/\nautosave_interval 1\n"
                             f"log_dest file {folder}/mosquitto.log\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Broker:
        exe = mosquitto()
        assert exe is not None
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.folder / "mosquitto.log").read_text(errors="replace") if (self.folder / "mosquitto.log").exists() else ""
                self.stop()
                raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{log[-2000:]}")
            time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # mosquitto saves its persistence file on SIGTERM
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)
