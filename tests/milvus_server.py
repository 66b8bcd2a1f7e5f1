"""A real Milvus 2.3 server (``milvus-server`` from the ``milvus`` PyPI package) for the tests.

``milvus-server`` is a Python launcher: it writes a config into ``--data DIR``, unpacks the Milvus
binary into ``DIR/bin`` and runs ``milvus run standalone`` as its child (embedded etcd, local
storage, rocksmq: no Docker). Three things the launcher does not do, handled here:

* **Ports.** Every component's port is chosen free once and passed both as a flag
  (``--proxy-port``, ``--etcd-port``, ...) and as the environment variable Milvus reads for that
  config key (``PROXY_PORT``, ...; the environment wins over the launcher's milvus.yaml). The
  launcher checks each flag's port with a plain ``bind()`` and silently moves to the next free
  port when it fails, which it does for ~60 s after a stop (TIME_WAIT); the environment keeps
  the real ports fixed across restarts. The embedded etcd ignores ``--etcd-port`` for
  *listening* (it always binds 2379/2380), so an etcd config with our ports is passed through
  ``ETCD_CONFIG_PATH``. Milvus's gRPC components listen on all interfaces; clients here always
  use 127.0.0.1.
* **Stopping.** SIGTERM kills the launcher but orphans the ``milvus`` child. The launcher runs in
  its own process group; ``stop()`` sends SIGTERM to that group, waits, then SIGKILLs the group
  and any child left over (Milvus's graceful stop can hang).
* **Restart.** ``stop()`` / ``start()`` / ``restart()`` keep the data dir and every port, so the
  same URI goes down and comes back with its data, like a server that reboots.

Usage::

    with MilvusServer(tmp_path / "milvus") as server:
        client = MilvusClient(server.uri)
        server.restart()
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# component -> Milvus config key as an environment variable (Milvus reads ``proxy.port`` from
# ``PROXY_PORT``: lower-cased, without "_" and "."), which wins over the launcher's milvus.yaml
_PORT_ENV = {
    "proxy": "PROXY_PORT",
    "proxy_internal": "PROXY_INTERNALPORT",
    "root_coord": "ROOTCOORD_PORT",
    "query_coord": "QUERYCOORD_PORT",
    "query_node": "QUERYNODE_PORT",
    "index_node": "INDEXNODE_PORT",
    "data_coord": "DATACOORD_PORT",
    "data_node": "DATANODE_PORT",
}

# components whose ``<component>.ip`` (env ``<COMPONENT>_IP``) is pinned to loopback
_IP_ENV = ("ROOTCOORD", "PROXY", "QUERYCOORD", "QUERYNODE", "INDEXCOORD", "INDEXNODE", "DATACOORD", "DATANODE")

# component -> milvus-server flag (all take an int port)
_PORT_FLAGS = {
    "proxy": "--proxy-port",
    "proxy_internal": "--proxy-internal-port",
    "etcd": "--etcd-port",
    "root_coord": "--root-coord-port",
    "query_coord": "--query-coord-port",
    "query_node": "--query-node-port",
    "index_coord": "--index-coord-port",
    "index_node": "--index-node-port",
    "data_coord": "--data-coord-port",
    "data_node": "--data-node-port",
}


def milvus_server_binary() -> Path | None:
    """The ``milvus-server`` launcher next to this interpreter (the venv's bin dir), or on PATH."""
    here = Path(sys.executable).parent / "milvus-server"
    if here.is_file() and os.access(here, os.X_OK):
        return here
    import shutil

    found = shutil.which("milvus-server")
    return Path(found) if found else None


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held together while choosing, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _children(pid: int) -> list[int]:
    """All descendants of ``pid`` (from /proc; empty where /proc is absent)."""
    out: list[int] = []
    try:
        entries = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    parents: dict[int, int] = {}
    for p in entries:
        try:
            with open(f"/proc/{p}/stat", encoding="utf-8") as f:
                stat = f.read()
            parents[p] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    frontier = [pid]
    while frontier:
        cur = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == cur]
        out += kids
        frontier += kids
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class MilvusServerError(RuntimeError):
    """The test Milvus server could not be started."""


class MilvusServer:
    """One ``milvus-server`` (Milvus 2.3 standalone) with a fixed data dir and fixed ports."""

    def __init__(self, data_dir: Path, *, binary: Path | None = None, startup_timeout: float = 180.0,
                 stop_timeout: float = 5.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.binary = binary or milvus_server_binary()
        if self.binary is None:
            raise MilvusServerError("milvus-server not found: install the dev extra (pip install 'milvus>=2.3')")
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        ports = free_ports(len(_PORT_FLAGS) + 1)
        self.ports = dict(zip(_PORT_FLAGS, ports[:-1], strict=True))
        self.ports["etcd_peer"] = ports[-1]
        self._proc: subprocess.Popen[bytes] | None = None
        self._pids: set[int] = set()
        self._log = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for name in ("launcher.log", "logs/milvus-stderr.log"):
            p = self.data_dir / name
            if p.is_file():
                text = p.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {p}\n" + "\n".join(text))
        return "\n".join(parts)

    def _etcd_config(self) -> Path:
        c, p = self.ports["etcd"], self.ports["etcd_peer"]
        path = self.data_dir / "etcd-embed.yaml"
        path.write_text(
            "name: default\n"
            f"listen-client-urls: http://127.0.0.1:{c}\n"
            f"advertise-client-urls: http://127.0.0.1:{c}\n"
            f"listen-peer-urls: http://127.0.0.1:{p}\n"
            f"initial-advertise-peer-urls: http://127.0.0.1:{p}\n"
            f"initial-cluster: default=http://127.0.0.1:{p}\n"
        )
        return path

    def start(self) -> str:
        """Start (or do nothing if running); wait until it answers; return the URI."""
        if self.running:
            return self.uri
        busy = [f"{k}={v}" for k, v in self.ports.items() if _port_open(v)]
        if busy:
            raise MilvusServerError(f"ports already in use (another process took them?): {busy}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.binary), "--data", str(self.data_dir)]
        for key, flag in _PORT_FLAGS.items():
            cmd += [flag, str(self.ports[key])]
        env = dict(os.environ, ETCD_CONFIG_PATH=str(self._etcd_config()),
                   ETCD_ENDPOINTS=f"127.0.0.1:{self.ports['etcd']}",
                   INDEXCOORD_ADDRESS=f"127.0.0.1:{self.ports['index_coord']}")
        env.update({var: str(self.ports[key]) for key, var in _PORT_ENV.items()})
        # every component registers its address in etcd; by default that is the first unicast
        # address of the machine, which may not route back to itself in a sandbox: use loopback
        env.update({f"{c}_IP": "127.0.0.1" for c in _IP_ENV})
        # After a kill the dead process's etcd session lives on for its TTL (etcd renews leases when
        # it restarts), and until it expires the query coordinator routes searches to the dead
        # query node ("node not match"): a short TTL makes a restarted server serve again sooner.
        # A bounded graceful stop (default 1800 s) lets SIGTERM finish instead of hanging.
        env.update(COMMON_SESSION_TTL="10", COMMON_GRACEFULSTOPTIMEOUT="10")
        self._log = open(self.data_dir / "launcher.log", "ab")  # noqa: SIM115 - closed in stop()
        t0 = time.monotonic()
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        log.info("milvus-server pid %d ready on %s in %.1f s", self._proc.pid, self.uri, time.monotonic() - t0)
        return self.uri

    def _wait_ready(self, t0: float) -> None:

        assert self._proc is not None
        deadline = t0 + self.startup_timeout
        last: str | None = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise MilvusServerError(f"milvus-server exited with {self._proc.returncode}\n{self.log_tail()}")
            self._pids.update(_children(self._proc.pid))
            if _port_open(self.ports["proxy"]):
                last = self._try_client(lambda c: c.list_collections(timeout=3), timeout=3)
                if last is None:
                    return
            time.sleep(0.5)
        raise MilvusServerError(f"milvus-server not ready within {self.startup_timeout:.0f} s ({last})\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the launcher's process group, SIGKILL whatever is left after ``stop_timeout``."""
        proc, self._proc = self._proc, None
        if proc is not None:
            pids = {proc.pid} | self._pids | set(_children(proc.pid))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while time.monotonic() < deadline and any(_alive(p) for p in pids):
                proc.poll()
                time.sleep(0.1)
            left = [p for p in pids if _alive(p)]
            if left:
                log.warning("milvus-server did not stop within %.0f s: SIGKILL %s", self.stop_timeout, left)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                for p in left:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(p, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _port_open(self.ports["proxy"]):
                time.sleep(0.1)
        self._pids.clear()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _try_client(self, call: Callable[[Any], object], timeout: float) -> str | None:
        """``call(client)`` on a fresh client of this server: None when it worked, else the error."""
        from pymilvus import MilvusClient

        try:
            client = MilvusClient(uri=self.uri, timeout=timeout)
            try:
                call(client)
                return None
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 - not serving yet
            return str(exc)[:200]

    def wait_usable(self, timeout: float = 90.0) -> None:
        """Wait until the server creates, loads and drops a collection: a server restarted on its
        data dir answers ``list_collections`` well before its coordinators serve DDL again."""
        def probe(client: Any) -> None:
            client.create_collection("_ready_probe", dimension=2, timeout=5)
            client.drop_collection("_ready_probe", timeout=5)

        deadline = time.monotonic() + timeout
        last: str | None = ""
        while time.monotonic() < deadline:
            last = self._try_client(probe, timeout=5)
            if last is None:
                return
            time.sleep(1.0)
        raise MilvusServerError(f"milvus-server on {self.uri} not serving DDL within {timeout:.0f} s ({last})")

    def restart(self) -> str:
        """Stop and start again: same data dir, same ports, same URI."""
        self.stop()
        return self.start()

    def __enter__(self) -> MilvusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
