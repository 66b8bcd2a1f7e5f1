"""The camera monitor under load: one loopback RTSP relay (rtsp-server-perl) serving the Hamilton
clip on N paths (ffmpeg ``-re -stream_loop -1 -c:v copy``: 640x360 H.264 at 29.97 fps, no
encoding CPU), ``lookalike-live monitor`` on N cameras, N = 1, 4, 8, 16, at ``detect_fps`` 5 and
at every frame.

Per run, after ``warmup`` seconds (connecting, the fair rates settling), over ``seconds``: frames
analysed a second per camera (min / median / max, and min/max), frames skipped by policy and
dropped a second, the rate scale the fair rates ended at, the decision latency p50 / p95 (wall:
face decoded -> identity decided, over the whole run), the monitor's CPU use (cores) and peak RSS
(its own, from ``wait4``), the relay's CPU. Counts come from the monitor's Prometheus
``/metrics``, scraped at the start and the end of the window. The gallery: 2,000 random unit
vectors (search cost only), as in the ``live`` section. Also, at 16 cameras and 5 fps, the
short-range detector (fewer, larger faces: half the embeddings).

The N streams are out of step: their publishers start the clip's duration / N apart (1 s at
most), so the clip's cuts (new faces) come at different moments on different cameras, as on real
cameras. One more run, 16 cameras at 5 fps with the streams in step (all publishers at once),
shows the worst case: every camera's new faces at the same instant.
Run: ``python -m lookalike_live.bench.monitor [--cameras 1 4] [--seconds 30]``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["run", "main", "CAMERAS", "RATES"]

CAMERAS = (1, 4, 8, 16)
RATES = (5.0, 0.0)  # detect_fps; 0: every frame


def scrape(port: int) -> dict[str, dict[str, float]]:
    """{metric: {camera: value}} from the monitor's /metrics (counters and gauges with a camera label)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, dict[str, float]] = {}
    for m in re.finditer(r'^(\w+)\{camera="([^"]+)"\} (\S+)$', body, re.M):
        out.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
    return out


def _cpu_s(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def one_run(urls: Sequence[str], *, detect_fps: float, mstore: Path, gallery_uri: str, model: str,
            workdir: Path, warmup: float, seconds: float, relay_pids: Sequence[int],
            detector: str | None = None, in_step: bool = False) -> dict[str, Any]:
    """One monitor run on ``urls``; see the module doc for the figures."""
    from .relay import free_tcp_port

    port = free_tcp_port()
    events = workdir / f"events-{len(urls)}-{detect_fps:g}-{detector or 'default'}{'-in-step' if in_step else ''}.jsonl"
    cmd = [sys.executable, "-m", "lookalike_live.cli", "monitor", "--events", str(events),
           "--metrics-port", str(port), "--detect-fps", str(detect_fps), "--model", model, "--backend", "onnx",
           "--milvus-uri", gallery_uri, "--no-thumbnails", "--health-interval", "10", "--json"]
    if detector:
        cmd += ["--detector", detector]
    for i, url in enumerate(urls):
        cmd += ["--camera", f"cam{i}={url}"]
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(mstore), "PYTHONUNBUFFERED": "1"}
    err_path = events.with_suffix(".log")
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # the metrics server is up once the models are loaded and the cameras started
            if proc.poll() is not None:
                raise RuntimeError(f"monitor exited ({proc.returncode}):\n{err_path.read_text()[-3000:]}")
            try:
                scrape(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"monitor did not start:\n{err_path.read_text()[-3000:]}") from None
                time.sleep(0.5)
        time.sleep(warmup)
        a, t_a, cpu_a, relay_a = scrape(port), time.monotonic(), _cpu_s([proc.pid]), _cpu_s(relay_pids)
        time.sleep(seconds)
        b, t_b, cpu_b, relay_b = scrape(port), time.monotonic(), _cpu_s([proc.pid]), _cpu_s(relay_pids)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    out_text = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"monitor failed ({status}):\n{err_path.read_text()[-3000:]}")
    summary = json.loads(out_text)
    dt = t_b - t_a

    def rate(metric: str) -> dict[str, float]:
        return {cam: (b[metric].get(cam, 0.0) - a[metric].get(cam, 0.0)) / dt for cam in b.get(metric, {})}

    fps = rate("lookalike_frames_total")
    values = sorted(fps.values())
    lat50 = [c["median_decision_latency_ms"] for c in summary["cameras"].values() if c.get("median_decision_latency_ms")]
    lat95 = [c["p95_decision_latency_ms"] for c in summary["cameras"].values() if c.get("p95_decision_latency_ms")]
    res = {
        "cameras": len(urls), "detect_fps": detect_fps or "every frame", "detector": detector or "default",
        "streams": "in step" if in_step else "out of step",
        "window_s": round(dt, 1),
        "fps_min": round(values[0], 2), "fps_median": round(statistics.median(values), 2),
        "fps_max": round(values[-1], 2), "min_over_max": round(values[0] / values[-1], 3) if values[-1] else 0.0,
        "fps_total": round(sum(values), 1),
        "skipped_per_s": round(sum(rate("lookalike_policy_skips_total").values()), 1),
        "drops_per_s": round(sum(rate("lookalike_capture_drops_total").values()), 1),
        "rate_scale": summary.get("rate_scale"),
        "decision_p50_ms": round(statistics.median(lat50), 1) if lat50 else None,
        "decision_p95_ms": round(max(lat95), 1) if lat95 else None,  # the worst camera's p95
        "cpu_cores": round((cpu_b - cpu_a) / dt, 2), "relay_cpu_cores": round((relay_b - relay_a) / dt, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "embedder": summary.get("embedder", {}),
        "per_camera_fps": {k: round(v, 2) for k, v in sorted(fps.items())},
    }
    log.info("monitor bench: %d camera(s) at %s: %s", len(urls), res["detect_fps"],
             {k: v for k, v in res.items() if k not in ("per_camera_fps", "embedder")})
    return res


def _clip_seconds(clip: str | Path) -> float:
    """The clip's duration (frames / frame rate), 10 s when the file does not say."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    try:
        frames, fps = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()
    return frames / fps if frames > 0 and fps > 0 else 10.0


def run(clip: str | Path, *, model: str = "facenet-casia-webface", store: Path | None = None,
        shared_models: Path | None = None, cameras: Sequence[int] = CAMERAS, rates: Sequence[float] = RATES,
        warmup: float = 15.0, seconds: float = 30.0, plots_dir: Path | None = None,
        with_short: bool = True, with_in_step: bool = True) -> dict[str, Any]:
    """Every (cameras, rate) run; see the module doc."""
    from .live import model_store, random_gallery
    from .relay import RtspRelay, missing_tools

    why = missing_tools()
    if why:
        return {"not_run": why}
    out: dict[str, Any] = {"clip": str(clip), "model": model, "cpus": os.cpu_count(), "warmup_s": warmup,
                           "seconds": seconds, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        work = Path(tmp)
        mstore, out["weights"] = model_store(model, work, store, shared_models)
        gallery_uri = str(work / "gallery.db")
        random_gallery(gallery_uri, model, mstore)
        paths = [f"cam{i}" for i in range(max(cameras))]
        with RtspRelay(clip, paths=paths, copy=True, log_dir=work, stagger=min(1.0, _clip_seconds(clip) / len(paths))) as relay:
            for n in cameras:
                for fps in rates:
                    out["runs"].append(one_run(relay.urls[:n], detect_fps=fps, mstore=mstore, gallery_uri=gallery_uri,
                                               model=model, workdir=work, warmup=warmup, seconds=seconds,
                                               relay_pids=relay.pids))
            if with_short and max(cameras) >= 16 and 5.0 in rates:
                out["runs"].append(one_run(relay.urls[:16], detect_fps=5.0, mstore=mstore, gallery_uri=gallery_uri,
                                           model=model, workdir=work, warmup=warmup, seconds=seconds,
                                           relay_pids=relay.pids, detector="short"))
            if with_in_step and max(cameras) >= 16 and 5.0 in rates:
                relay.stagger = 0.0  # every publisher at once: the clip's cuts on every camera together
                relay.restart()
                out["runs"].append(one_run(relay.urls[:16], detect_fps=5.0, mstore=mstore, gallery_uri=gallery_uri,
                                           model=model, workdir=work, warmup=warmup, seconds=seconds,
                                           relay_pids=relay.pids, in_step=True))
    if plots_dir is not None:
        from ..plots import plot_monitor_load

        out["plot"] = str(plot_monitor_load(out["runs"], Path(plots_dir) / "monitor.png"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from .live import clip_parser

    p = clip_parser(__doc__)
    p.add_argument("--cameras", type=int, nargs="+", default=list(CAMERAS))
    p.add_argument("--rates", type=float, nargs="+", default=list(RATES), help="detect_fps values (0: every frame)")
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--seconds", type=float, default=30.0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    res = run(a.clip, model=a.model, shared_models=a.shared_models if a.shared_models.is_dir() else None,
              cameras=a.cameras, rates=a.rates, warmup=a.warmup, seconds=a.seconds)
    sys.stdout.write(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
