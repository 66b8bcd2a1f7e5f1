"""Fair analysis rates across cameras (the monitor): every camera analyses its configured
``detect_fps`` (or every frame); when the machine cannot keep up, every camera's rate is lowered
by the same factor, and raised back when there is room again.

Each camera's capture thread samples its stream (:class:`~lookalike_live.capture.CaptureThread`,
``sample_fps``): it offers its engine only the frames due at its rate, so a camera cannot take
another's share by offering more. :class:`FairRates` watches, every ``period`` seconds, what
each camera dropped of what it was offered, and the process's CPU use:

* some live camera dropped more than ``1 - behind`` (15 %) of the frames it was offered (and at
  least 2): its engine did not take them before the next one came. The machine is short. The common factor ``scale``
  drops to what the cameras managed together (not dropped / offered over all cameras, times 0.95),
  at most halving it per period;
* a camera is not judged in its first ``warmup`` seconds live (connecting, first model calls),
  nor after a reconnect;
* every camera kept up and the CPU is below ``cpu_low``: ``scale`` rises by ``step_up`` (15 %),
  up to 1.

A camera's analysis rate is ``scale`` times its configured rate (``detect_fps``, or its stream's
frame rate for every-frame cameras). The first lowering is logged once as a warning (with the
rates), the return to full rate once as info; ``scale`` and each camera's rates are in the
monitor's health and Prometheus metrics.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .embed.base import usable_cpus

log = logging.getLogger(__name__)

__all__ = ["FairRates", "RateState"]


@dataclass
class RateState:
    """One camera under :class:`FairRates`."""

    name: str
    configured_fps: float | None  # detect_fps; None: every frame of the stream
    engine: Any
    analysis_fps: float | None = None  # what its capture samples now (None: every frame)
    source_fps: float = 0.0  # frames a second its stream delivered in the last period
    live_since: float | None = None  # monotonic time it (re)connected; judged ``warmup`` s after
    _last: tuple[int, int, int] | None = field(default=None, repr=False)  # grabbed, offered, dropped

    def base_fps(self) -> float | None:
        """The rate at scale 1 (the stream's rate for an every-frame camera, None before it is known)."""
        if self.configured_fps is not None:
            return self.configured_fps
        cap = getattr(self.engine, "capture", None)
        fps = getattr(getattr(cap, "source", None), "fps", None)
        return float(fps) if fps else (self.source_fps or None)


class FairRates:
    """See the module doc. ``cores``: the CPU cores this process may use (default: its affinity)."""

    def __init__(self, *, period: float = 2.0, behind: float = 0.85, cpu_low: float = 0.8,
                 step_up: float = 1.15, min_scale: float = 0.02, cores: int | None = None, warmup: float = 4.0,
                 cpu_time: Callable[[], float] = time.process_time) -> None:
        self.period = float(period)
        self.warmup = float(warmup)  # seconds after a camera (re)connects that are not judged (start-up burst)
        self.behind = float(behind)
        self.cpu_low = float(cpu_low)
        self.step_up = float(step_up)
        self.min_scale = float(min_scale)
        self.cores = cores or usable_cpus()
        self._cpu_time = cpu_time
        self.cameras: dict[str, RateState] = {}
        self.scale = 1.0
        self.cpu = 0.0  # share of the cores the process used in the last period
        self.lowered_logged = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_tick: tuple[float, float] | None = None  # (monotonic, cpu seconds)

    def add(self, name: str, engine: Any, configured_fps: float | None) -> RateState:
        state = RateState(name, configured_fps, engine, configured_fps)
        self.cameras[name] = state
        return state

    # -- the loop ----------------------------------------------------------------------------------
    def start(self) -> FairRates:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fair-rates", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - rate control must never stop the cameras
                log.exception("fair rate control failed; rates stay as they are")

    def tick(self, now: float | None = None) -> float:
        """One control step (the thread calls it every ``period``); returns the new scale."""
        now = time.monotonic() if now is None else now
        cpu_s = self._cpu_time()
        if self._last_tick is None:
            self._last_tick = (now, cpu_s)
            for cam in self.cameras.values():
                cam._last = _counts(cam.engine)
            return self.scale
        dt = max(now - self._last_tick[0], 1e-6)
        self.cpu = (cpu_s - self._last_tick[1]) / (dt * self.cores)
        self._last_tick = (now, cpu_s)
        kept_all = offered_all = 0.0
        short = []
        for cam in self.cameras.values():
            counts = _counts(cam.engine)
            prev, cam._last = cam._last, counts
            if not _live(cam.engine):
                cam.live_since = None
                continue
            if cam.live_since is None:
                cam.live_since = now
            if prev is None or now - cam.live_since < self.warmup:
                continue  # connecting, models warming up: its first drops say nothing about the machine
            grabbed, offered, dropped = (max(0, a - b) for a, b in zip(counts, prev, strict=True))
            cam.source_fps = grabbed / dt
            if offered <= 0:
                continue
            kept_all += offered - dropped
            offered_all += offered
            if dropped >= 2 and dropped > (1.0 - self.behind) * offered:
                short.append(cam.name)
        old = self.scale
        if short and offered_all > 0:
            managed = kept_all / offered_all
            self.scale = max(self.min_scale, old * min(0.9, max(0.5, 0.95 * managed)))
        elif not short and self.cpu < self.cpu_low and old < 1.0:
            self.scale = min(1.0, old * self.step_up)
        if self.scale != old:
            self._apply()
            self._say(old, short)
        return self.scale

    def _apply(self) -> None:
        for cam in self.cameras.values():
            base = cam.base_fps()
            cam.analysis_fps = None if base is None or (self.scale >= 1.0 and cam.configured_fps is None) \
                else base * self.scale
            cap = getattr(cam.engine, "capture", None)
            if cap is not None:
                cap.sample_fps = cam.analysis_fps
            metrics = getattr(cam.engine, "metrics", None)
            if metrics is not None:
                metrics.rate_scale = self.scale
                metrics.analysis_fps = cam.analysis_fps

    def _say(self, old: float, short: list[str]) -> None:
        if self.scale < 1.0 and not self.lowered_logged:
            self.lowered_logged = True
            rates = ", ".join(f"{c.name} {_fps(c.base_fps())} -> {_fps(c.analysis_fps)}" for c in self.cameras.values())
            log.warning("cannot keep up with %d camera(s) (%s fell behind, CPU %.0f%%): every camera's analysis rate is lowered to %.0f%% "
                        "(%s fps); it rises again when there is room. Fewer cameras, a lower detect_fps or "
                        "another machine for some cameras keep every camera at its configured rate",
                        len(self.cameras), ", ".join(short), self.cpu * 100, self.scale * 100, rates)
        elif self.scale >= 1.0 and self.lowered_logged:
            self.lowered_logged = False
            log.info("keeping up again: every camera analyses at its configured rate")
        else:
            log.debug("analysis rates scaled %.3f -> %.3f (cpu %.0f%%, behind: %s)", old, self.scale,
                      self.cpu * 100, ", ".join(short) or "none")

    def health(self, name: str) -> dict[str, Any]:
        cam = self.cameras[name]
        return {"detect_fps": cam.configured_fps, "analysis_fps": None if cam.analysis_fps is None
                else round(cam.analysis_fps, 2), "rate_scale": round(self.scale, 3)}


def _counts(engine: Any) -> tuple[int, int, int]:
    """(frames grabbed, offered, dropped) so far by ``engine``'s current capture."""
    cap = getattr(engine, "capture", None)
    if cap is None:
        return 0, 0, 0
    st = cap.stats()
    return int(st.frames + st.skipped), int(st.frames), int(st.drops)


def _live(engine: Any) -> bool:
    cap = getattr(engine, "capture", None)
    return cap is not None and getattr(cap.status, "value", "") == "live"


def _fps(v: float | None) -> str:
    return "every frame" if v is None or not math.isfinite(v) else f"{v:.1f}"
