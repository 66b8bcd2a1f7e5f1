"""The monitor's events on MQTT (the bus Frigate, Double Take and Home Assistant use), with
paho-mqtt (the optional ``mqtt`` extra: ``pip install 'lookalike-live[mqtt]'``).

Topics (``prefix`` default ``lookalike``):

* ``<prefix>/<camera>/events``: every event record of the camera, the same JSON as the events
  file's lines, QoS 1;
* ``<prefix>/<camera>/status``: the camera's latest ``camera_status`` record, retained (a client
  that subscribes later gets it at once); ``{"camera": ..., "status": "offline"}`` when the
  monitor stops;
* ``<prefix>/available/<client id>``: ``online`` while this monitor is connected, ``offline``
  (retained; also the connection's last will, sent by the broker if the monitor dies). One per
  monitor, so several machines can share a broker.

Delivery: records go into a bounded queue (``queue_size``) that one sender thread empties while
the broker is connected; a record leaves the queue when the broker acknowledged it (QoS 1), so
records produced while the broker is down or restarting are sent when it is back (at least
once: a record in flight when the connection dropped may arrive twice). When the queue is full
the oldest record is dropped and counted (``stats()["dropped"]``, the monitor's summary and
health, a warning in the log). The connection is retried with exponential backoff (1 s to
``max_backoff``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["MqttConfig", "MqttPublisher", "mqtt_config", "parse_mqtt_url", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'lookalike-live[mqtt]' (paho-mqtt)"
PASSWORD_ENV = "LOOKALIKE_MQTT_PASSWORD"


@dataclass(frozen=True)
class MqttConfig:
    """Where and how to publish. ``url``: ``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` (TLS);
    user and password may be in the URL, in ``username``/``password``, or the password in the
    environment variable ``password_env`` (default ``LOOKALIKE_MQTT_PASSWORD``). ``tls``: use TLS
    (implied by ``mqtts://``); ``ca_certs``: a CA bundle for it (default: the system's)."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_certs: str | None = None
    prefix: str = "lookalike"
    client_id: str = ""
    queue_size: int = 10_000
    keepalive: int = 30
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("the MQTT URL has no host: use --mqtt-url mqtt://HOST:1883")
        if not 0 < self.port < 65536:
            raise ConfigError(f"MQTT port must be in 1..65535, got {self.port}")
        if self.queue_size < 1:
            raise ConfigError(f"the MQTT queue must hold at least 1 event, got {self.queue_size}")
        if not self.prefix or any(c in self.prefix for c in "#+"):
            raise ConfigError(f"MQTT topic prefix {self.prefix!r} must not be empty or hold '#' or '+'")

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_mqtt_url(url: str, **options: Any) -> MqttConfig:
    """``mqtt://[user[:password]@]host[:port]`` (or ``mqtts://``) plus ``options`` -> MqttConfig."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ConfigError(f"--mqtt-url must start with mqtt:// or mqtts://, got {url!r}")
    tls = parts.scheme in ("mqtts", "ssl") or bool(options.pop("tls", False))
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(f"--mqtt-url {url!r} has a bad port") from None
    user = options.pop("username", None) or (unquote(parts.username) if parts.username else None)
    password = options.pop("password", None) or (unquote(parts.password) if parts.password else None)
    env = options.pop("password_env", None) or PASSWORD_ENV
    if password is None and user is not None:
        password = os.environ.get(env)
    options = {k: v for k, v in options.items() if v is not None}
    return MqttConfig(parts.hostname or "", port, user, password, tls, **options)


def mqtt_config(table: Any, where: str = "[mqtt]") -> MqttConfig:
    """The ``[mqtt]`` table of a monitor config file -> MqttConfig."""
    if not isinstance(table, dict) or "url" not in table:
        raise ConfigError(f"{where} needs url = \"mqtt://HOST:1883\"")
    known = {"url", "username", "password", "password_env", "tls", "ca_certs", "prefix", "client_id", "queue_size"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    opts = {k: v for k, v in table.items() if k != "url"}
    return parse_mqtt_url(str(table["url"]), **opts)


class MqttPublisher:
    """Publishes records to a broker; see the module doc. Thread-safe: :meth:`event` and
    :meth:`status` never block (they queue)."""

    def __init__(self, config: MqttConfig, cameras: tuple[str, ...] = ()) -> None:
        try:
            import paho.mqtt.client as paho
        except ImportError:
            raise ConfigError(f"--mqtt-url needs paho-mqtt: {INSTALL_HINT}") from None
        self.config = config
        self.cameras = cameras
        self._paho = paho
        self._queue: collections.deque[tuple[str, bytes, bool]] = collections.deque()
        self._cond = threading.Condition()
        self._connected = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.dropped = 0
        self.connects = 0
        self._warned_full = False
        # unique per machine and process: a broker drops a client when another connects with its id
        cid = config.client_id or f"lookalike-live-{socket.gethostname()}-{os.getpid()}"
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            client.tls_set(ca_certs=config.ca_certs, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=int(max(1, config.max_backoff)))
        self.client_id = cid
        client.will_set(self.available_topic, "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self._failing = False
        self._client = client

    def topic(self, camera: str, kind: str) -> str:
        return f"{self.config.prefix}/{camera}/{kind}"

    @property
    def available_topic(self) -> str:
        return f"{self.config.prefix}/available/{self.client_id}"

    # -- producers -------------------------------------------------------------------------------
    def event(self, camera: str, record: dict[str, Any]) -> None:
        """Queue one event record for ``<prefix>/<camera>/events``."""
        self._put(self.topic(camera, "events"), record, retain=False)

    def status(self, camera: str, record: dict[str, Any]) -> None:
        """Queue the camera's status for ``<prefix>/<camera>/status`` (retained)."""
        self._put(self.topic(camera, "status"), record, retain=True)

    def _put(self, topic: str, record: dict[str, Any], retain: bool) -> None:
        payload = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        with self._cond:
            if self._stopping:
                return
            if len(self._queue) >= self.config.queue_size:
                self._queue.popleft()
                self.dropped += 1
                if not self._warned_full:
                    self._warned_full = True
                    log.warning("MQTT %s: the queue of %d events is full (broker down?): the oldest are dropped "
                                "and counted", self.config.where, self.config.queue_size)
            self._queue.append((topic, payload, retain))
            self._cond.notify_all()

    # -- connection --------------------------------------------------------------------------------
    def start(self) -> MqttPublisher:
        """Connect in the background (the monitor starts even while the broker is down)."""
        self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._thread.start()
        log.info("MQTT: publishing events to %s under %s/<camera>/events", self.config.where, self.config.prefix)
        return self

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT %s: the broker refused the connection: %s%s", self.config.where, reason,
                        " (check the user name and password)" if "auth" in str(reason).lower() else "")
            return
        client.publish(self.available_topic, "online", qos=1, retain=True)
        self._failing = False
        with self._cond:
            self._connected = True
            self.connects += 1
            self._warned_full = False
            self._cond.notify_all()
        log.info("MQTT: connected to %s%s", self.config.where, "" if self.connects == 1 else " again")

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        """A (re)connection attempt failed (broker down, wrong host or port): said once per outage."""
        if not self._failing:
            self._failing = True
            log.warning("MQTT: cannot connect to %s (broker down, or a wrong host or port in --mqtt-url?); "
                        "retrying with backoff, events are queued (up to %d)", self.config.where,
                        self.config.queue_size)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
            self._cond.notify_all()
        if was and not self._stopping:
            log.warning("MQTT %s: connection lost (%s); reconnecting with backoff, events are queued (up to %d)",
                        self.config.where, reason, self.config.queue_size)

    def _send_loop(self) -> None:
        """Send the queue's head while connected; it leaves the queue once the broker acknowledged it."""
        while True:
            with self._cond:
                while not self._stopping and (not self._connected or not self._queue):
                    self._cond.wait(0.5)
                if self._stopping:
                    return
                topic, payload, retain = self._queue[0]
            info = self._client.publish(topic, payload, qos=1, retain=retain)
            acked = False
            if info.rc == self._paho.MQTT_ERR_SUCCESS:
                try:
                    info.wait_for_publish(timeout=5.0)
                    acked = info.is_published()
                except (RuntimeError, ValueError):  # not sent (the connection dropped): resend it
                    acked = False
            with self._cond:
                if acked:
                    if self._queue and self._queue[0][1] is payload:
                        self._queue.popleft()
                    self.sent += 1
                    self._cond.notify_all()
                elif self._connected:
                    self._cond.wait(0.2)  # not acknowledged yet: try again shortly

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"connected": self._connected, "sent": self.sent, "queued": len(self._queue),
                    "dropped": self.dropped, "connects": self.connects}

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout`` s while connected), mark the cameras offline, disconnect."""
        deadline = time.monotonic() + timeout
        for cam in self.cameras:
            self.status(cam, {"camera": cam, "status": "offline"})
        with self._cond:
            while self._queue and self._connected and time.monotonic() < deadline:
                self._cond.wait(0.05)
            left = len(self._queue)
            self._stopping = True
            self._cond.notify_all()
        if left:
            log.warning("MQTT %s: %d event(s) not sent before exit (broker down or slow)", self.config.where, left)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._connected:
            info = self._client.publish(self.available_topic, "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=1.0)
        self._client.disconnect()
        self._client.loop_stop()
