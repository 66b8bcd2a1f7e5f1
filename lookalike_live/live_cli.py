"""The live subcommands: ``run`` (one source, headless: annotated video, events, summary) and
``monitor`` (many RTSP cameras: JSON-lines events, snapshots, Prometheus metrics).

Wired into ``lookalike-live`` by ``cli.build_parser`` calling :func:`register` with the shared
option helpers (same call shape as ``commands.register``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .capture.specs import RTSP_TRANSPORTS
from .cliutil import Opt, check_output_path, counting, rate
from .cliutil import emit as _emit
from .cliutil import settings_from_args as _settings
from .errors import ConfigError, SourceError

log = logging.getLogger("lookalike_live")


__all__ = ["register", "cmd_run", "cmd_monitor"]


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (main thread only; elsewhere nothing is installed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum: int, _frame: object) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


# --------------------------------------------------------------------------- run
class _VideoOut:
    """Annotated frames into an MP4 (mp4v), opened on the first frame (size known then)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps if fps and 1 <= fps <= 240 else 30.0
        self.frames = 0
        self._writer: Any = None
        self._lock = threading.Lock()

    def write(self, image: Any) -> None:
        import cv2

        with self._lock:
            if self._writer is None:
                h, w = image.shape[:2]
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h))
                if not self._writer.isOpened():
                    raise ConfigError(f"cannot write video {self.path}: OpenCV has no MP4 (mp4v) writer here")
            self._writer.write(image)
            self.frames += 1

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.release()
                self._writer = None


#: `run` gives up on a live source after this many failed connection attempts in a row (a missing
#: webcam, a refused port: a one-shot job should say why at once, not after --connect-timeout)
GIVE_UP_AFTER = 3


def _no_frame_message(spec: Any, failed: list[Any], waited: float, args: argparse.Namespace) -> str:
    """Why a live source gave no frame, with the cause the watchdog saw and flags that exist."""
    why = failed[-1].message if failed and failed[-1].message else "no answer"
    tried = f"{len(failed)} attempts in {waited:.0f} s" if failed else f"{waited:.0f} s"
    if spec.kind == "webcam":
        return f"no frame from {spec.display_name} ({tried}): {why}"
    other = "udp" if args.rtsp_transport == "tcp" else "tcp"
    return (f"no frame from {spec.display_name} ({tried}): {why}. Check the address, the port and the "
            f"credentials; a camera slow to answer needs a longer --connect-timeout; or try --rtsp-transport {other}")


def cmd_run(args: argparse.Namespace) -> int:
    from .capture import parse_source
    from .events import EventWriter, search_record, status_record, track_event_record
    from .overlay import Annotator
    from .pipeline import Engine, EngineConfig

    if not args.headless:
        raise ConfigError(
            "`run` shows no window: add --headless (annotated video with --out, events with --events); "
            "the live desktop overlay is `lookalike-live app`"
        )
    settings = _settings(args)
    for flag, path in (("--out", args.out), ("--events", args.events)):
        if path is not None:
            check_output_path(flag, Path(path))  # before any work: not after the whole video
    spec = parse_source(args.source)  # a missing file or a bad URL fails here, clearly
    camera = args.name or spec.display_name
    config = EngineConfig.from_settings(settings, top_k=args.top_k or 0, with_thumbnails=not args.no_thumbnails,
                                        detect_fps=args.detect_fps or None)
    engine = Engine.from_settings(settings, config=config, source_id=camera)
    writer = EventWriter(args.events) if args.events else None
    video: _VideoOut | None = None
    annotator = Annotator(open_set=args.open_set, show_track_ids=args.track_ids)
    last_status: list[Any] = []
    try:
        if writer is not None:
            engine.subscribe_events(lambda ev, res: writer.write(track_event_record(camera, ev, open_set=args.open_set)))
            engine.subscribe_status(lambda ev: writer.write(status_record(camera, ev)), output=True)
            engine.subscribe_search(lambda ok, msg: writer.write(search_record(camera, ok, msg)), output=True)
        engine.subscribe_status(last_status.append)
        if args.out:
            out_path = Path(args.out)

            def on_result(res: Any) -> None:
                nonlocal video
                if video is None:
                    fps = getattr(engine.capture.source, "fps", None) if engine.capture is not None else None
                    video = _VideoOut(out_path, float(fps or 30.0))
                video.write(annotator.annotate(res.frame.image, res))

            engine.subscribe(on_result)
        stop = threading.Event()
        t0 = time.monotonic()
        with _stop_on_signals(stop):
            engine.start(spec, realtime=args.realtime or spec.live, loop=args.loop, max_frames=args.max_frames,
                         rtsp_transport=args.rtsp_transport)
            while not engine.wait(0.2):
                if stop.is_set():
                    break
                failed = [e for e in last_status if e.status.value == "reconnecting"]
                waited = time.monotonic() - t0
                if spec.live and engine.metrics.counter("frames") == 0 and (
                        waited > args.connect_timeout or len(failed) >= GIVE_UP_AFTER):
                    engine.stop()
                    raise SourceError(_no_frame_message(spec, failed, waited, args))
            summary = engine.stop()
            engine.wait(0)
        if spec.kind == "file" and summary["frames"] == 0:
            why = last_status[-1].message if last_status else "no frame decoded"
            raise SourceError(f"no frame could be processed from {spec.display_name}: {why}")
    finally:
        engine.close()
        if video is not None:
            video.close()
        if writer is not None:
            writer.close()
    result = {**summary, "source": spec.display_name}
    if args.out:
        result["out"] = str(args.out)
        result["out_frames"] = video.frames if video is not None else 0
    if args.events:
        result["events"] = str(args.events)
        result["event_count"] = writer.count if writer is not None else 0

    def human(r: dict[str, Any]) -> str:
        lat = r["median_decision_latency_ms"]
        lines = [
            f"{r['source']}: {r['frames']} frames in {r['seconds']} s ({r['fps']} fps), {r['faces']} faces, "
            f"{r['tracks']} tracks, {r['decided_tracks']} decided"
            + (f" (median decision latency {lat} ms)" if lat is not None else ""),
            f"embeddings {r['embeddings']} ({r['embeddings_per_frame']}/frame), drops {r['drops']}"
            + (f", skipped {r['skipped']} (--detect-fps {r['detect_fps']:g})" if r.get("detect_fps") else ""),
        ]
        if "out" in r:
            lines.append(f"annotated video: {r['out']} ({r['out_frames']} frames)")
        if "events" in r:
            lines.append(f"events: {r['events']} ({r['event_count']} lines)")
        return "\n".join(lines)

    _emit(args, result, human)
    return 0


# --------------------------------------------------------------------------- monitor
def cmd_monitor(args: argparse.Namespace) -> int:
    from .monitor import Monitor, MonitorConfig, cameras_from_args, load_monitor_config
    from .pipeline import EngineConfig

    settings = _settings(args)
    overrides: dict[str, Any] = {
        "events": args.events, "snapshots": args.snapshots, "metrics_port": args.metrics_port,
        "metrics_host": args.metrics_host, "health_interval": args.health_interval, "detect_fps": args.detect_fps,
    }
    if args.mqtt_url:
        from .mqtt import parse_mqtt_url

        overrides["mqtt"] = parse_mqtt_url(args.mqtt_url, tls=args.mqtt_tls, ca_certs=args.mqtt_ca)
    elif args.mqtt_tls or args.mqtt_ca:
        raise ConfigError("--mqtt-tls and --mqtt-ca go with --mqtt-url mqtt://HOST:PORT")
    if args.config:
        if args.camera:
            overrides["cameras"] = load_monitor_config(args.config).cameras + cameras_from_args(args.camera)
        config = load_monitor_config(args.config, **overrides)
    else:
        config = MonitorConfig(cameras=cameras_from_args(args.camera),
                               **{k: v for k, v in overrides.items() if v is not None})
    if config.events is None:
        raise ConfigError("monitor needs --events FILE.jsonl (or `events = ...` in its config file)")
    stop = threading.Event()
    engine_config = EngineConfig.from_settings(settings, top_k=args.top_k or 0,
                                               with_thumbnails=not args.no_thumbnails)
    monitor = Monitor(config, settings, engine_config=engine_config)
    t0 = time.monotonic()
    with _stop_on_signals(stop):
        monitor.start()
        try:
            if config.metrics_port is not None:
                log.info("metrics: http://%s:%s/metrics", config.metrics_host, monitor.metrics_port)
            while not stop.wait(0.25):
                if args.duration and time.monotonic() - t0 >= args.duration:
                    break
            health = monitor.health()
        finally:
            summaries = monitor.stop()
    result = {
        "cameras": {name: {**summaries.get(name, {}), **health.get(name, {})} for name in monitor.cameras},
        "events": str(config.events), "event_count": monitor.writer.count if monitor.writer else 0,
        "snapshots": monitor.snapshots, "seconds": round(time.monotonic() - t0, 3),
        # events and snapshots the writer thread dropped because it fell behind (its queue was full)
        "outputs_dropped": monitor.outputs.dropped if monitor.outputs is not None else 0,
        "metrics_port": monitor.metrics_port,
        "rate_scale": round(monitor.rates.scale, 3) if monitor.rates is not None else 1.0,
        "embedder": monitor.embedder_stats(),
    }
    if monitor.mqtt is not None:  # sent, still queued (broker down at exit), dropped (queue full)
        result["mqtt"] = monitor.mqtt.stats()

    def human(r: dict[str, Any]) -> str:
        lines = [f"monitored {len(r['cameras'])} camera(s) for {r['seconds']} s: {r['event_count']} events "
                 f"in {r['events']}, {r['snapshots']} snapshots"
                 + (f", {r['outputs_dropped']} events or snapshots dropped (the disk fell behind)"
                    if r["outputs_dropped"] else "")]
        for name, c in r["cameras"].items():
            lines.append(f"  {name}: {c.get('frames', 0)} frames analysed, {c.get('skipped', 0)} skipped, "
                         f"{c.get('drops', 0)} drops, {c.get('tracks', 0)} tracks, "
                         f"{c.get('decided_tracks', 0)} decided, {c.get('reconnects', 0)} reconnects")
        if r["rate_scale"] < 1:
            lines.append(f"  the machine could not keep up: every camera ran at {r['rate_scale']:.0%} of its rate")
        if "mqtt" in r:
            m = r["mqtt"]
            lines.append(f"  MQTT: {m['sent']} sent, {m['queued']} not sent (broker unreachable at exit), "
                         f"{m['dropped']} dropped from a full queue")
        return "\n".join(lines)

    _emit(args, result, human)
    # it did its work unless every camera ended in an error it cannot retry (a file that does not
    # open, an events file that cannot be written); a camera still reconnecting is waited for
    cameras: dict[str, dict[str, Any]] = result["cameras"]  # type: ignore[assignment]
    ended = [n for n, c in cameras.items() if c.get("status") in ("error", "failed")]
    if ended and len(ended) == len(cameras):
        log.error("no camera could be monitored: %s",
                  "; ".join(f"{n}: {cameras[n].get('error') or cameras[n].get('status')}" for n in ended))
        return 1
    return 0


# --------------------------------------------------------------------------- registration
def _live_opts(p: argparse.ArgumentParser, open_set_default: bool = False) -> None:
    g = p.add_argument_group("recognition")
    g.add_argument("--threshold", type=float,
                   help="similarity at which a face is a match: \"looks like\" (lookalike) or known (open set); "
                   "default: the model's calibrated threshold: from `eval identify --save-threshold`, else the one "
                   "its spec ships, else 0.35")
    if not open_set_default:
        g.add_argument("--open-set", action="store_true",
                       help="below the threshold a face is \"unknown\" (the monitor's way) instead of showing "
                       "its nearest celebrity as \"a bit like\"")
        g.add_argument("--track-ids", action="store_true", help="debug: draw internal track ids on the labels")
    g.add_argument("--top-k", type=int, default=0, help="identities kept per track (default 0: the best only)")
    g.add_argument("--no-thumbnails", action="store_true", help="do not fetch matched photos' thumbnails")


def register(sub: argparse._SubParsersAction, model_opts: Opt, detector_opts: Opt, gallery_opts: Opt,
             json_opt: Opt) -> None:
    """Add ``run`` and ``monitor`` to the ``lookalike-live`` parser."""
    p = sub.add_parser(
        "run", help="run one source headless: annotated video, JSON-lines events, summary",
        description="Detect, track and match every face of a video file, RTSP/HTTP stream or webcam; the "
        "annotated video shows each face's nearest celebrity (\"looks like\" at or above the threshold, \"a bit "
        "like\" below; --open-set: \"unknown\" below). "
        "Files are processed as fast as possible, every frame, deterministically (--realtime: at their "
        "frame rate, dropping frames the machine is too slow for). Summary keys: frames, seconds, fps "
        "(frames per wall second), faces, tracks, decided_tracks, median_decision_latency_ms, drops (frames "
        "dropped), search_dropped (queries dropped), corrupt (frames that did not decode), frames_refused.",
    )
    p.add_argument("--source", required=True, metavar="SRC",
                   help="video file, rtsp:// or http(s):// URL, or webcam index")
    p.add_argument("--headless", action="store_true", help="no window (required: the GUI is `lookalike-live app`)")
    p.add_argument("--out", type=Path, metavar="FILE.mp4", help="write the annotated video here")
    p.add_argument("--events", type=Path, metavar="FILE.jsonl", help="write track events as JSON lines")
    p.add_argument("--realtime", action="store_true", help="pace files at their frame rate (drop frames if slow)")
    p.add_argument("--loop", action="store_true", help="restart a file at its end (until Ctrl+C)")
    p.add_argument("--max-frames", type=counting, metavar="N", help="stop after N processed frames")
    p.add_argument("--name", help="source name in events (default: the file name or redacted URL)")
    p.add_argument("--connect-timeout", type=float, default=20.0, metavar="S",
                   help="live sources: give up when no frame arrives within S seconds (default 20), or "
                   f"after {GIVE_UP_AFTER} failed attempts in a row")
    p.add_argument("--rtsp-transport", choices=RTSP_TRANSPORTS, default="auto",
                   help="RTSP: RTP over the RTSP connection (tcp), over UDP, or auto (TCP, then UDP; default)")
    p.add_argument("--detect-fps", type=rate, default=0.0, metavar="FPS",
                   help="analyse FPS frames a second, skipping the frames between (default 0: every frame)")
    _live_opts(p)
    model_opts(p)
    detector_opts(p)
    gallery_opts(p)
    json_opt(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "monitor", help="watch RTSP cameras headless: JSON-lines events, snapshots, Prometheus metrics",
        description="Run every camera until SIGINT/SIGTERM (or --duration): events track_started, "
        "identity_decided, identity_changed, track_ended, camera_status, search_status as JSON lines "
        "(camera, time, bbox, nearest, decision, match, score: open set, see the README), JPEG snapshots of "
        "decided faces with their overlay, per-camera health in the "
        "log, optional Prometheus /metrics. Cameras reconnect by themselves; the events file is complete "
        "(every line valid JSON) when the command exits.",
    )
    p.add_argument("--camera", action="append", metavar="NAME=URL", help="a camera (repeatable)")
    p.add_argument("--config", type=Path, metavar="FILE.toml", help="cameras and options from a TOML file")
    p.add_argument("--events", type=Path, metavar="FILE.jsonl", help="events file (appended to)")
    p.add_argument("--snapshots", type=Path, metavar="DIR", help="save JPEG snapshots of decided faces here")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus /metrics on PORT (0: any)")
    p.add_argument("--metrics-host", default=None, help="address for /metrics (default 127.0.0.1)")
    p.add_argument("--health-interval", type=float, metavar="S", help="seconds between health log lines (default 30)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until a signal)")
    p.add_argument("--detect-fps", type=rate, metavar="FPS",
                   help="frames analysed a second on every camera that does not set its own detect_fps in "
                   "--config (default 5; 0: every frame). The frames between are decoded, not analysed. When the "
                   "machine cannot keep up, every camera's rate is lowered by the same factor (logged)")
    g = p.add_argument_group("MQTT (the events on a broker too; needs the mqtt extra: pip install 'lookalike-live[mqtt]')")
    g.add_argument("--mqtt-url", metavar="URL",
                   help="mqtt://[USER@]HOST[:1883] or mqtts://HOST[:8883]: publish every event on "
                   "lookalike/<camera>/events and each camera's status, retained, on lookalike/<camera>/status; "
                   "the password comes from $LOOKALIKE_MQTT_PASSWORD (or [mqtt] in --config)")
    g.add_argument("--mqtt-tls", action="store_true", help="connect with TLS (implied by mqtts://)")
    g.add_argument("--mqtt-ca", metavar="FILE.pem", help="CA certificates for --mqtt-tls (default: the system's)")
    _live_opts(p, open_set_default=True)
    model_opts(p)
    detector_opts(p)
    gallery_opts(p)
    json_opt(p)
    p.set_defaults(func=cmd_monitor)
