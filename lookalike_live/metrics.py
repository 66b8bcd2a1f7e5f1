"""Live metrics: per-stage latency, fps, drops, reconnects; exportable as a dict or, through
prometheus_client (:class:`MetricsCollector`), in Prometheus's exposition formats.

Stages (milliseconds): ``decode`` (one backend read on the capture thread), ``detect``, ``align``,
``embed`` (only the faces that were queried, one batch), ``search`` (submit -> answer, measured on
the matcher's thread), ``latency`` (end to end: frame decoded -> its FrameResult published) and
``frame`` (the inference thread's work on one frame). Every method is thread-safe.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["STAGES", "Metrics", "MetricsCollector", "StageStats", "metrics_registry", "prometheus_text"]

STAGES = ("decode", "detect", "align", "embed", "search", "latency", "frame")
COUNTERS = ("frames", "faces", "embeddings", "queries", "answers", "search_failures", "search_dropped",
            "capture_drops", "policy_skips", "relooks_deferred", "reconnects", "corrupt", "frames_refused", "events")


class StageStats:
    """Samples (ms) of one stage: count and total since start, percentiles over the last ``window``."""

    def __init__(self, window: int = 512) -> None:
        self.count = 0
        self.total_ms = 0.0
        self.last_ms = 0.0
        self.max_ms = 0.0
        self._window: deque[float] = deque(maxlen=window)

    def add(self, ms: float) -> None:
        self.count += 1
        self.total_ms += ms
        self.last_ms = ms
        self.max_ms = max(self.max_ms, ms)
        self._window.append(ms)

    def percentile(self, q: float) -> float:
        if not self._window:
            return 0.0
        data = sorted(self._window)
        k = (len(data) - 1) * q / 100.0
        lo, hi = math.floor(k), math.ceil(k)
        return data[lo] + (data[hi] - data[lo]) * (k - lo)

    def samples(self) -> list[float]:
        """The last ``window`` samples (ms), oldest first."""
        return list(self._window)

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean_ms": round(self.total_ms / self.count, 3) if self.count else 0.0,
            "p50_ms": round(self.percentile(50), 3),
            "p95_ms": round(self.percentile(95), 3),
            "max_ms": round(self.max_ms, 3),
            "last_ms": round(self.last_ms, 3),
        }


class Metrics:
    """Counters and stage timings of one engine (one source)."""

    def __init__(self, source_id: str = "", window: int = 512) -> None:
        self.source_id = source_id
        self._lock = threading.Lock()
        self._stages = {s: StageStats(window) for s in STAGES}
        self._counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._frame_times: deque[float] = deque(maxlen=256)
        self._started = time.monotonic()
        self._first_frame: float | None = None
        self._last_frame: float | None = None
        self.status = ""
        self.search_available = True
        self.detect_fps: float | None = None  # configured analysis rate (None: every frame)
        self.analysis_fps: float | None = None  # the rate now (the monitor's fair rates lower it)
        self.rate_scale = 1.0  # analysis_fps / detect_fps

    def record(self, stage: str, ms: float) -> None:
        with self._lock:
            self._stages.setdefault(stage, StageStats()).add(float(ms))

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + int(n)

    def set_counter(self, name: str, value: int) -> None:
        with self._lock:
            self._counters[name] = int(value)

    def frame_done(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._counters["frames"] += 1
            self._frame_times.append(now)
            if self._first_frame is None:
                self._first_frame = now
            self._last_frame = now

    def counter(self, name: str) -> int:
        with self._lock:
            return self._counters.get(name, 0)

    def stage(self, name: str) -> dict[str, float]:
        with self._lock:
            return self._stages.get(name, StageStats()).as_dict()

    def samples(self, stage: str) -> list[float]:
        """The stage's last ``window`` timings (ms), oldest first (for histograms)."""
        with self._lock:
            return self._stages.get(stage, StageStats()).samples()

    def fps(self, window_s: float = 2.0) -> float:
        """Frames processed per second over the last ``window_s`` seconds (0 when none)."""
        now = time.monotonic()
        with self._lock:
            times = [t for t in self._frame_times if now - t <= window_s]
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def overall_fps(self) -> float:
        with self._lock:
            n, a, b = self._counters["frames"], self._first_frame, self._last_frame
        if n < 2 or a is None or b is None or b <= a:
            return 0.0
        return (n - 1) / (b - a)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            stages = {k: v.as_dict() for k, v in self._stages.items()}
            counters = dict(self._counters)
        return {
            "source": self.source_id,
            "status": self.status,
            "search_available": self.search_available,
            "detect_fps": self.detect_fps,
            "analysis_fps": None if self.analysis_fps is None else round(self.analysis_fps, 3),
            "rate_scale": round(self.rate_scale, 4),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "fps": round(self.fps(), 3),
            "overall_fps": round(self.overall_fps(), 3),
            "counters": counters,
            "stages": stages,
        }

    def prometheus(self, prefix: str = "lookalike") -> str:
        return prometheus_text({self.source_id or "default": self}, prefix)


class MetricsCollector:
    """A prometheus_client collector over several engines' :class:`Metrics`, labelled
    ``camera="NAME"`` and read at scrape time. ``sources`` returns {camera name: Metrics}."""

    def __init__(self, sources: Callable[[], Mapping[str, Metrics]], prefix: str = "lookalike") -> None:
        self.sources = sources
        self.prefix = prefix

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        p = self.prefix
        dicts = [(name, m.as_dict()) for name, m in self.sources().items()]
        fps = GaugeMetricFamily(f"{p}_fps", "Frames processed per second (last 2 s).", labels=["camera"])
        up = GaugeMetricFamily(f"{p}_search_available", "1 when the gallery answered the last search.",
                               labels=["camera"])
        target = GaugeMetricFamily(f"{p}_analysis_fps", "Frames a second the camera is analysed at now "
                                   "(its detect_fps times rate_scale; absent: every frame).", labels=["camera"])
        scale = GaugeMetricFamily(f"{p}_rate_scale", "The factor every camera's analysis rate is lowered by "
                                  "when the machine cannot keep up (1: configured rates).", labels=["camera"])
        for name, d in dicts:
            fps.add_metric([name], d["fps"])
            up.add_metric([name], 1.0 if d["search_available"] else 0.0)
            if d["analysis_fps"] is not None:
                target.add_metric([name], d["analysis_fps"])
            scale.add_metric([name], d["rate_scale"])
        yield fps
        yield up
        yield target
        yield scale
        for c in COUNTERS:
            family = CounterMetricFamily(f"{p}_{c}", f"Total {c.replace('_', ' ')}.", labels=["camera"])
            for name, d in dicts:
                family.add_metric([name], d["counters"].get(c, 0))
            yield family
        quantiles = GaugeMetricFamily(f"{p}_stage_seconds", "Stage latency quantiles over the recent window (seconds).",
                                      labels=["camera", "stage", "quantile"])
        samples = CounterMetricFamily(f"{p}_stage_samples", "Samples per stage.", labels=["camera", "stage"])
        for name, d in dicts:
            for stage, st in d["stages"].items():
                for q, key in (("0.5", "p50_ms"), ("0.95", "p95_ms")):
                    quantiles.add_metric([name, stage, q], st[key] / 1000.0)
                samples.add_metric([name, stage], st["count"])
        yield quantiles
        yield samples


def metrics_registry(sources: Callable[[], Mapping[str, Metrics]], prefix: str = "lookalike") -> Any:
    """A prometheus_client CollectorRegistry of its own (not the process-wide default) serving
    ``sources``' metrics."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(sources, prefix))
    return registry


def prometheus_text(by_source: Mapping[str, Metrics] | Iterable[tuple[str, Metrics]], prefix: str = "lookalike") -> str:
    """Prometheus text exposition (0.0.4) of several engines' metrics, labelled ``camera="NAME"``."""
    from prometheus_client import generate_latest

    items = dict(by_source.items() if isinstance(by_source, Mapping) else by_source)
    return generate_latest(metrics_registry(lambda: items, prefix)).decode("utf-8")
