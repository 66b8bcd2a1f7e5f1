"""The monitor's events on MQTT, against a real broker on loopback (mosquitto, tests/mqtt_broker.py):
every event of a run arrives, the camera's status is retained, a broker restart mid-run loses
nothing, and a full queue drops the oldest events and counts them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_fixtures import LiveGallery, live_gallery  # noqa: F401
from mqtt_broker import Broker, missing

from lookalike_live.errors import ConfigError
from lookalike_live.mqtt import MqttPublisher, mqtt_config, parse_mqtt_url


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    why = missing()
    if why:
        pytest.skip(why)
    folder = tmp_path / "broker"
    folder.mkdir()
    b = Broker(folder).start()
    try:
        yield b
    finally:
        b.stop()


class Subscriber:
    """A paho client collecting what arrives on ``topic``; ``persistent``: a session the broker
    keeps (and fills) while the client is away, across broker restarts."""

    def __init__(self, port: int, topic: str = "lookalike/#", persistent: bool = False, name: str = "test-sub") -> None:
        import paho.mqtt.client as paho

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name, clean_session=not persistent)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
            client.subscribe(topic, qos=1)
            self.connected.set()

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            with self.lock:
                self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(10), "the test subscriber did not connect"
        time.sleep(0.2)  # the SUBSCRIBE is acknowledged

    def events(self, camera: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t == f"lookalike/{camera}/events"]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _key(rec: dict[str, Any]) -> str:
    return json.dumps(rec, sort_keys=True)


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _monitor(gallery: LiveGallery, clip: Path, events: Path, url: str, **capture: Any) -> Any:
    from lookalike_live.monitor import CameraConfig, Monitor, MonitorConfig

    cfg = MonitorConfig(cameras=(CameraConfig("stage", str(clip), detect_fps=0),), events=events,
                        mqtt=parse_mqtt_url(url, client_id="lookalike-test"))
    return Monitor(cfg, gallery.settings(threshold=0.15), store=gallery.store, capture_options=capture)


def test_every_event_of_a_run_arrives_and_the_status_is_retained(broker: Broker, live_gallery: LiveGallery,  # noqa: F811
                                                                  hamilton_clip: Path, tmp_path: Path) -> None:
    sub = Subscriber(broker.port)
    events = tmp_path / "events.jsonl"
    mon = _monitor(live_gallery, hamilton_clip, events, broker.url).start()
    try:
        assert mon.cameras["stage"].engine.wait(60)  # the clip played to its end
    finally:
        mon.stop()
    written = _lines(events)
    assert len(written) >= 20 and {r["event"] for r in written} >= {"track_started", "identity_decided", "track_ended"}
    _wait(lambda: len({_key(r) for r in sub.events("stage")}) >= len(written), 15, "every event on MQTT")
    assert {_key(r) for r in sub.events("stage")} == {_key(r) for r in written}  # the same records
    assert mon.mqtt.stats()["dropped"] == 0 and mon.mqtt.stats()["queued"] == 0
    sub.close()
    late = Subscriber(broker.port, name="late-sub")  # subscribes after the run: gets what is retained
    _wait(lambda: len(late.messages) >= 2, 5, "the retained status and availability")
    retained = {t: p for t, p, r in late.messages if r}
    assert json.loads(retained["lookalike/stage/status"]) == {"camera": "stage", "status": "offline"}
    assert retained["lookalike/available/lookalike-test"] == b"offline"
    assert not any(t.endswith("/events") for t in retained)  # events are not retained
    late.close()


def test_a_broker_restart_mid_run_loses_no_event(broker: Broker, live_gallery: LiveGallery,  # noqa: F811
                                                 hamilton_clip: Path, tmp_path: Path) -> None:
    """The broker goes down for 3 s while the camera keeps producing events, then comes back on the
    same port: the monitor reconnects (backoff) and sends what it queued; the subscriber (a
    persistent session the broker keeps across its restart) gets every event of the file."""
    sub = Subscriber(broker.port, persistent=True)
    events = tmp_path / "events.jsonl"
    mon = _monitor(live_gallery, hamilton_clip, events, broker.url, loop=True).start()
    try:
        _wait(lambda: len(sub.events("stage")) >= 5, 30, "events before the restart")
        broker.stop()
        n_down = len(_lines(events))
        time.sleep(3.0)
        produced_while_down = len(_lines(events)) - n_down
        broker.start()
        _wait(lambda: mon.mqtt.stats()["connects"] >= 2, 20, "the monitor to reconnect")
        time.sleep(2.0)
    finally:
        mon.stop()
    written = _lines(events)
    stats = mon.mqtt.stats()
    print("events:", len(written), "produced while the broker was down:", produced_while_down, "mqtt:", stats)
    assert produced_while_down >= 3  # the outage had something to lose
    _wait(lambda: {_key(r) for r in written} <= {_key(r) for r in sub.events("stage")}, 20, "the queued events")
    assert stats["dropped"] == 0 and stats["queued"] == 0 and stats["connects"] >= 2
    sub.close()


def test_a_full_queue_drops_the_oldest_events_and_counts_them(broker: Broker) -> None:
    """Broker down, a queue of 3, 10 events: 7 are dropped (counted), the 3 newest arrive once the
    broker is back."""
    sub = Subscriber(broker.port, persistent=True, name="bound-sub")
    broker.stop()  # the subscriber's session (and what it is sent) is kept by the broker
    pub = MqttPublisher(parse_mqtt_url(broker.url, queue_size=3, client_id="bound-pub"), cameras=("cam",)).start()
    try:
        for i in range(10):
            pub.event("cam", {"event": "x", "i": i})
        assert pub.stats()["dropped"] == 7 and pub.stats()["queued"] == 3
        broker.start()
        _wait(lambda: len(sub.events("cam")) >= 3, 20, "the queued events after the broker came back")
        time.sleep(0.5)
    finally:
        pub.close()
    got = [r["i"] for r in sub.events("cam")]
    assert sorted(set(got)) == [7, 8, 9], got
    assert pub.stats()["dropped"] == 7
    sub.close()


def test_mqtt_settings_are_checked() -> None:
    cfg = parse_mqtt_url("mqtts://user:p%40ss@broker.lan", prefix="home")
    assert (cfg.host, cfg.port, cfg.username, cfg.password, cfg.tls, cfg.prefix) == \
        ("broker.lan", 8883, "user", "p@ss", True, "home")
    assert mqtt_config({"url": "mqtt://b:1884", "username": "u", "password_env": "NOPE_NOT_SET"}).port == 1884
    for bad, why in (("http://b", "mqtt://"), ("mqtt://", "no host"), ("mqtt://b:99999", "port")):
        with pytest.raises(ConfigError, match=why):
            parse_mqtt_url(bad)
    with pytest.raises(ConfigError, match="unknown keys hots"):
        mqtt_config({"url": "mqtt://b", "hots": 1})
    with pytest.raises(ConfigError, match="'#'"):
        parse_mqtt_url("mqtt://b", prefix="a/#")
