"""Headless multi-camera monitor: one :class:`~lookalike_live.pipeline.Engine` per camera, JSON-lines
events, JPEG snapshots of decided faces, per-camera health in the logs, optional Prometheus
``/metrics``.

Sharing: every camera has its own capture thread, inference thread, MediaPipe detector (not
thread-safe) and tracker; they share one embedder (:class:`~lookalike_live.embed.shared.SharedEmbedder`:
the faces of cameras that need it at the same time go in one batch) and one gallery with one
:class:`~lookalike_live.gallery.Matcher` (thread-safe, a fair queue per camera; Milvus Lite also
allows a single client per file).

Rates: each camera is analysed ``detect_fps`` frames a second (default 5; 0: every frame); the
frames between are grabbed without colour conversion and counted as skipped. When the machine
cannot keep up, :class:`~lookalike_live.rates.FairRates` lowers every camera's rate by the same
factor (logged once; in health and metrics).

Events: :mod:`lookalike_live.events` (the same records as ``run --events``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from .config import Settings
from .errors import ConfigError, OutputError
from .events import EventWriter, OutputQueue, search_record, status_record, track_event_record
from .metrics import metrics_registry, prometheus_text
from .tracking import TrackEvent
from .types import FrameResult, Track

log = logging.getLogger(__name__)

__all__ = [
    "CameraConfig",
    "MonitorConfig",
    "EventWriter",
    "Monitor",
    "parse_camera",
    "load_monitor_config",
    "track_event_record",
    "status_record",
    "save_snapshot",
]

#: a camera name becomes a folder under --snapshots: letters, digits, '_', '-' and '.', but not
#: only dots ("." and ".." would be the folder itself or its parent)
_NAME_RE = re.compile(r"^(?!\.+$)[A-Za-z0-9_.-]{1,64}$")


#: frames analysed a second per camera unless its config says otherwise (Frigate's detect.fps default)
DEFAULT_DETECT_FPS = 5.0


def _check_fps(what: str, fps: float | None) -> float | None:
    """A detect_fps value: None (not set), 0 (every frame) or a positive rate."""
    if fps is None:
        return None
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number of frames a second (0: every frame), got {fps!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} must be >= 0 frames a second (0: every frame), got {fps!r}")
    return value


@dataclass(frozen=True)
class CameraConfig:
    """One camera. ``detect_fps``: frames analysed a second (0: every frame; None: the monitor's default)."""

    name: str
    url: str
    rtsp_transport: str = "auto"
    detect_fps: float | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(
                f"camera name {self.name!r} is not valid: use 1-64 letters, digits, '_', '-' or '.' (not only dots)"
            )
        if not self.url.strip():
            raise ConfigError(f"camera {self.name!r} has an empty URL")
        _check_fps(f"camera {self.name}: detect_fps", self.detect_fps)


@dataclass(frozen=True)
class MonitorConfig:
    cameras: tuple[CameraConfig, ...]
    events: Path | None = None  # JSON lines file (None: stdout)
    snapshots: Path | None = None  # folder for JPEG snapshots of decided faces (None: none)
    metrics_port: int | None = None  # Prometheus /metrics (0: any free port)
    metrics_host: str = "127.0.0.1"
    health_interval: float = 30.0  # seconds between per-camera health log lines
    stall_timeout: float = 5.0
    snapshot_margin: float = 0.3
    detect_fps: float = DEFAULT_DETECT_FPS  # for the cameras that do not set theirs (0: every frame)
    mqtt: Any = None  # an mqtt.MqttConfig, or None (no MQTT)

    def __post_init__(self) -> None:
        _check_fps("detect_fps", self.detect_fps)
        if not self.cameras:
            raise ConfigError("no camera given: use --camera NAME=URL (repeatable) or --config FILE")
        names = [c.name for c in self.cameras]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"camera names must be unique, repeated: {', '.join(dup)}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics port must be in 0..65535, got {self.metrics_port}")
        if self.health_interval <= 0:
            raise ConfigError(f"health interval must be > 0 s, got {self.health_interval}")

    def camera_fps(self, camera: CameraConfig) -> float | None:
        """The rate ``camera`` is analysed at (None: every frame)."""
        fps = self.detect_fps if camera.detect_fps is None else camera.detect_fps
        return float(fps) if fps else None


def parse_camera(text: str) -> CameraConfig:
    """``NAME=URL`` (as given to ``--camera``) -> CameraConfig."""
    name, sep, url = text.partition("=")
    if not sep or not name.strip() or not url.strip():
        raise ConfigError(f"--camera expects NAME=URL (e.g. door=rtsp://10.0.0.5/stream1), got {text!r}")
    return CameraConfig(name.strip(), url.strip())


def load_monitor_config(path: str | Path, **overrides: Any) -> MonitorConfig:
    """A monitor config from TOML::

        events = "events.jsonl"
        snapshots = "snapshots"
        metrics_port = 9108
        detect_fps = 5              # frames analysed a second, every camera (0: every frame)
        [mqtt]                      # optional: events on MQTT too
        url = "mqtt://broker.lan:1883"
        username = "lookalike"      # optional; the password: password = "...", or the
        password_env = "MQTT_PASS"  #   environment variable named here
        [[camera]]
        name = "door"
        url = "rtsp://10.0.0.5/stream1"
        rtsp_transport = "tcp"      # optional
        detect_fps = 10             # optional: this camera's rate

    Relative paths are relative to the config file. ``overrides`` (not None) win.
    """
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"monitor config {path} not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read monitor config {path}: {exc}") from exc
    known = {"camera", "cameras", "events", "snapshots", "metrics_port", "metrics_host", "health_interval",
             "stall_timeout", "detect_fps", "mqtt"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cams = data.get("camera", data.get("cameras", []))
    if not isinstance(cams, list):
        raise ConfigError(f"{path}: [[camera]] tables expected")
    cameras = []
    for i, c in enumerate(cams):
        if not isinstance(c, dict) or "name" not in c or "url" not in c:
            raise ConfigError(f"{path}: camera #{i + 1} needs name and url")
        extra = sorted(set(c) - {"name", "url", "rtsp_transport", "detect_fps"})
        if extra:
            raise ConfigError(f"{path}: camera #{i + 1}: unknown keys {', '.join(extra)}; known: name, url, "
                              "rtsp_transport, detect_fps")
        cameras.append(CameraConfig(str(c["name"]), str(c["url"]), str(c.get("rtsp_transport", "auto")),
                                    _check_fps(f"{path}: camera #{i + 1}: detect_fps", c.get("detect_fps"))))
    base = path.parent

    def rel(v: Any) -> Path | None:
        return None if v is None else (base / Path(str(v)).expanduser())

    values: dict[str, Any] = {
        "cameras": tuple(cameras), "events": rel(data.get("events")), "snapshots": rel(data.get("snapshots")),
        "metrics_port": data.get("metrics_port"), "metrics_host": data.get("metrics_host", "127.0.0.1"),
        "health_interval": float(data.get("health_interval", 30.0)),
        "stall_timeout": float(data.get("stall_timeout", 5.0)),
        "detect_fps": _check_fps(f"{path}: detect_fps", data.get("detect_fps", DEFAULT_DETECT_FPS)),
    }
    if "mqtt" in data:
        from .mqtt import mqtt_config

        values["mqtt"] = mqtt_config(data["mqtt"], where=f"{path}: [mqtt]")
    for k, v in overrides.items():
        if v is not None:
            values[k] = v
    return MonitorConfig(**values)


def save_snapshot(folder: Path, camera: str, result: FrameResult, track: Track, margin: float = 0.3) -> Path:
    """Write a JPEG of ``track``'s face (box plus ``margin``) with its open-set overlay (box, name,
    similarity, the matched photo: overlay.py), cropped to hold both; returns its path."""
    import cv2

    from .overlay import Annotator

    img = result.frame.image
    h, w = img.shape[:2]
    one = FrameResult(result.frame, result.detections, (track,), result.timings)
    ann = Annotator(open_set=True)
    tags = ann.layout(one)
    drawn = ann.annotate(img, one, tags)
    x1, y1, x2, y2 = track.xyxy
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    bx1, by1, bx2, by2 = x1 - mx, y1 - my, x2 + mx, y2 + my
    for tag in tags:  # keep the tag in the picture
        if tag.rect is not None:
            tx, ty, tw, th = tag.rect
            bx1, by1, bx2, by2 = min(bx1, tx - 2), min(by1, ty - 2), max(bx2, tx + tw + 2), max(by2, ty + th + 2)
    ix1, iy1 = int(max(0, bx1)), int(max(0, by1))
    ix2, iy2 = int(min(w, bx2)), int(min(h, by2))
    crop = drawn[iy1:iy2, ix1:ix2] if ix2 > ix1 and iy2 > iy1 else drawn
    out = folder / camera
    if out.resolve().parent != folder.resolve():  # never outside --snapshots (a name like "..")
        raise ConfigError(f"camera name {camera!r} cannot be a folder inside {folder}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{int(time.time() * 1000)}_{result.frame.index:06d}_track{track.track_id}.jpg"
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(crop), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ConfigError(f"could not encode a snapshot for camera {camera}")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- the monitor
@dataclass
class _Camera:
    config: CameraConfig
    engine: Any
    unsubscribe: list[Callable[[], None]] = field(default_factory=list)


class Monitor:
    """Runs every camera of ``config`` until :meth:`stop` (see the module docstring).

    ``settings``: model, detector, gallery and threshold. ``store``: the model store (tests).
    ``engine_config``: an :class:`~lookalike_live.pipeline.EngineConfig` for every camera.
    """

    def __init__(self, config: MonitorConfig, settings: Settings, *, store: Path | None = None,
                 engine_config: Any | None = None, capture_options: dict[str, Any] | None = None) -> None:
        self.config = config
        self.settings = settings
        self.store = store
        self.engine_config = engine_config
        self.capture_options = dict(capture_options or {})
        self.cameras: dict[str, _Camera] = {}
        self.writer: EventWriter | None = None
        self.outputs: OutputQueue | None = None  # the writer thread of events and snapshots
        self._runtime: Any = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._health_stop = threading.Event()
        self._health_thread: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self.snapshots = 0
        self.rates: Any = None  # FairRates
        self.mqtt: Any = None  # MqttPublisher

    @property
    def metrics_port(self) -> int | None:
        return None if self._http is None else int(self._http.server_address[1])

    def start(self) -> Monitor:
        """Load the models, open the gallery, start every camera (and the metrics server)."""
        from .pipeline import EngineConfig
        from .runtime import Runtime

        if self._started:
            return self
        from .capture import parse_source
        from .errors import SourceError

        for cam in self.config.cameras:  # a camera that cannot be parsed is refused now, with why
            try:
                parse_source(cam.url)
            except SourceError as exc:
                raise ConfigError(f"camera {cam.name}: {exc}") from exc
        self._started = True
        s = self.settings
        try:
            from .rates import FairRates

            self.writer = EventWriter(self.config.events)
            self.outputs = OutputQueue(name="monitor-outputs")
            if self.config.mqtt is not None:
                from .mqtt import MqttPublisher

                self.mqtt = MqttPublisher(self.config.mqtt, tuple(c.name for c in self.config.cameras)).start()
            # one embedder, gallery and matcher for all; ONNX Runtime's threads sleep when idle, so
            # the cameras' capture threads get the cores between model calls
            self._runtime = Runtime(s, store=self.store, spin=False)
            cfg = self.engine_config or EngineConfig.from_settings(s)
            self.rates = FairRates()
            for cam in self.config.cameras:
                fps = self.config.camera_fps(cam)
                engine = self._runtime.engine(cam.name, dataclasses.replace(cfg, detect_fps=fps))
                self.rates.add(cam.name, engine, fps)
                c = _Camera(cam, engine)
                c.unsubscribe.append(engine.subscribe_events(self._on_event(cam.name)))
                c.unsubscribe.append(engine.subscribe_status(self._on_status(cam.name)))
                c.unsubscribe.append(engine.subscribe_search(self._on_search(cam.name)))
                self.cameras[cam.name] = c
            if self.config.metrics_port is not None:
                self._start_http()
            for c in self.cameras.values():
                opts = {"stall_timeout": self.config.stall_timeout, "rtsp_transport": c.config.rtsp_transport,
                        **self.capture_options}
                c.engine.start(c.config.url, realtime=True, **opts)
            self.rates.start()
            self._health_thread = threading.Thread(target=self._health_loop, name="monitor-health", daemon=True)
            self._health_thread.start()
        except BaseException:
            self.stop()
            raise
        log.info("monitoring %d camera(s): %s", len(self.cameras), ", ".join(self.cameras))
        return self

    # -- callbacks (engine threads) ----------------------------------------------------------------
    def _write(self, rec: dict[str, Any], camera: str) -> None:
        """Queue one event line for the writer thread (raises once a write failed), and for MQTT."""
        writer, outputs = self.writer, self.outputs
        if writer is not None and outputs is not None:
            outputs.submit(lambda: self._emit(writer, camera, rec))

    def _emit(self, writer: EventWriter, camera: str, rec: dict[str, Any]) -> None:
        """On the writer thread: the line in the events file, then the same record to MQTT."""
        writer.write(rec)
        if self.mqtt is not None:
            self.mqtt.event(camera, rec)
            if rec.get("event") == "camera_status":
                self.mqtt.status(camera, rec)

    def _on_event(self, camera: str) -> Callable[[TrackEvent, FrameResult], None]:
        def cb(event: TrackEvent, result: FrameResult) -> None:
            rec = track_event_record(camera, event)
            shoot = self.config.snapshots is not None and event.kind in ("identity_decided", "identity_changed") \
                and event.track.track_id in {t.track_id for t in result.tracks if t.state.value != "lost"}
            writer, outputs = self.writer, self.outputs
            if writer is None or outputs is None:
                return

            def job() -> None:  # on the writer thread: the snapshot (JPEG, overlay), then the line
                if shoot and self.config.snapshots is not None:
                    try:
                        path = save_snapshot(self.config.snapshots, camera, result, event.track, self.config.snapshot_margin)
                        rec["snapshot"] = str(path)
                        self.snapshots += 1
                    except (OSError, ConfigError) as exc:
                        log.warning("%s: snapshot not saved: %s", camera, exc)
                self._emit(writer, camera, rec)

            outputs.submit(job)

        return cb

    def _on_status(self, camera: str) -> Callable[[Any], None]:
        def cb(ev: Any) -> None:
            with contextlib.suppress(OutputError):  # a failed events file: health says so (once)
                self._write(status_record(camera, ev), camera)

        return cb

    def _on_search(self, camera: str) -> Callable[[bool, str], None]:
        def cb(available: bool, message: str) -> None:
            with contextlib.suppress(OutputError):
                self._write(search_record(camera, available, message), camera)

        return cb

    # -- health and metrics ---------------------------------------------------------------------------
    def health(self) -> dict[str, dict[str, Any]]:
        """Per camera: status, fps (analysed a second, last 2 s), frames, skipped (not analysed by
        policy), drops, reconnects, search availability, latency p50, detect_fps (configured),
        analysis_fps (now: lowered when the machine cannot keep up) and rate_scale."""
        out = {}
        for name, c in self.cameras.items():
            d = c.engine.metrics.as_dict()
            status, error = d["status"], None
            if c.engine.failure is not None:  # its engine stopped with an error: say so, with why
                status, error = "failed", str(c.engine.failure) or type(c.engine.failure).__name__
            elif self.outputs is not None and self.outputs.failure is not None:  # the events file failed
                status, error = "failed", str(self.outputs.failure)
            elif status in ("error", "reconnecting", "stalled") and c.engine.capture is not None:
                error = c.engine.capture.stats().last_error or None  # why the camera is not live
            out[name] = {"status": status, "fps": d["fps"], "frames": d["counters"]["frames"],
                         "skipped": d["counters"]["policy_skips"],
                         "drops": d["counters"]["capture_drops"], "reconnects": d["counters"]["reconnects"],
                         "search_available": d["search_available"],
                         "latency_p50_ms": d["stages"]["latency"]["p50_ms"],
                         **(self.rates.health(name) if self.rates is not None else {})}
            if error is not None:
                out[name]["error"] = error
        return out

    def _health_loop(self) -> None:
        while not self._health_stop.wait(self.config.health_interval):
            for name, h in self.health().items():
                level = logging.INFO if h["status"] == "live" else logging.WARNING
                rate = h.get("analysis_fps")
                log.log(level, "camera %s: %s, %.1f fps analysed (target %s), %d frames, %d skipped, %d drops, "
                        "%d reconnects, search %s, latency p50 %.0f ms%s", name, h["status"] or "starting", h["fps"],
                        "every frame" if rate is None else f"{rate:.1f}", h["frames"], h["skipped"], h["drops"],
                        h["reconnects"], "up" if h["search_available"] else "DOWN", h["latency_p50_ms"],
                        f" ({h['error']})" if "error" in h else "")

    def embedder_stats(self) -> dict[str, Any]:
        """The shared embedder's calls, model calls, faces and mean batch (how much the cameras share)."""
        shared = getattr(self._runtime, "shared_embedder", None)
        return shared.stats() if shared is not None else {}

    def prometheus(self) -> str:
        return prometheus_text(self._camera_metrics())

    def _camera_metrics(self) -> dict[str, Any]:
        return {name: c.engine.metrics for name, c in self.cameras.items()}

    def _start_http(self) -> None:
        from prometheus_client.exposition import MetricsHandler

        handler = MetricsHandler.factory(metrics_registry(self._camera_metrics))
        try:
            self._http = ThreadingHTTPServer((self.config.metrics_host, int(self.config.metrics_port or 0)), handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.config.metrics_host}:{self.config.metrics_port}: {exc} "
                "(use another --metrics-port, or 0 for any free port)"
            ) from exc
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="monitor-metrics", daemon=True)
        self._http_thread.start()
        log.info("Prometheus metrics on http://%s:%d/metrics", self.config.metrics_host, self.metrics_port)

    # -- lifecycle ----------------------------------------------------------------------------------
    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """Stop every camera, the metrics server, the matcher and the gallery; complete the
        events file (flushed, fsynced). Idempotent. Returns the per-camera summaries."""
        if self._stopped:
            return {}
        self._stopped = True
        self._health_stop.set()
        if self.rates is not None:
            self.rates.stop()
        summaries: dict[str, Any] = {}
        for c in self.cameras.values():
            c.engine.request_stop()  # all cameras stop together, then each is joined
        for name, c in self.cameras.items():
            summaries[name] = c.engine.stop(timeout)
            for u in c.unsubscribe:
                u()
            c.engine.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._runtime is not None:
            self._runtime.close()  # the matcher, the gallery, the embedder
        if self.outputs is not None:
            self.outputs.close(timeout)  # what the cameras produced before they stopped is written
        if self.writer is not None:
            self.writer.close()
        if self.mqtt is not None:
            self.mqtt.close(timeout)  # and sent, while the broker is there
        return summaries

    def run(self, stop_event: threading.Event) -> dict[str, Any]:
        """Start, wait until ``stop_event`` is set, stop; returns the per-camera summaries."""
        self.start()
        try:
            while not stop_event.wait(0.5):
                pass
        finally:
            summaries = self.stop()
        return summaries

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cameras_from_args(cameras: Sequence[str] | None) -> tuple[CameraConfig, ...]:
    return tuple(parse_camera(c) for c in (cameras or []))
