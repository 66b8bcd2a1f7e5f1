"""Per-camera analysis rates (detect_fps): the capture's sampler, skipping by policy on the real
clip, the tracker's interval-scaled gates on real detections, the shared embedder's batching and
the monitor's fair rates."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live_fixtures import LiveGallery, live_gallery  # noqa: F401

from lookalike_live.capture import CaptureStats, open_source
from lookalike_live.capture.sampling import RateSampler
from lookalike_live.capture.status import SourceStatus
from lookalike_live.errors import ConfigError
from lookalike_live.rates import FairRates

CLIP_FRAMES = 275
CLIP_FPS = 29.97


def test_sampler_keeps_every_nth_frame_despite_jitter_and_restarts_after_a_pause() -> None:
    rng = np.random.default_rng(0)
    s = RateSampler(5.0)
    ts = np.cumsum(1000 / 30 + rng.uniform(-8, 8, 300))  # 10 s of a jittery 30 fps camera
    kept = [t for t in ts if s.due(float(t))]
    assert 49 <= len(kept) <= 51  # 5 a second
    gaps = np.diff(kept)
    assert gaps.min() > 150 and gaps.max() < 260  # every ~6th frame, never two in a row
    s.fps = None
    assert all(s.due(float(t)) for t in ts[-1] + np.arange(1, 11) * 33.3)  # None: every frame
    s.fps = 5.0
    after_pause = ts[-1] + 60_000 + np.arange(30) * 33.3  # a minute without frames: no burst after it
    assert sum(s.due(float(t)) for t in after_pause) <= 6
    with pytest.raises(ConfigError, match="frames per second"):
        s.fps = -1


def test_capture_skips_by_policy_without_converting_and_counts_apart_from_drops(hamilton_clip: Path) -> None:
    cap = open_source(hamilton_clip, realtime=False, sample_fps=5.0)  # lossless file run: nothing dropped
    frames = list(cap.frames(timeout=10))
    assert cap.join(5) and cap.status is SourceStatus.ENDED
    st: CaptureStats = cap.stats()
    expected = CLIP_FRAMES / CLIP_FPS * 5
    assert abs(len(frames) - expected) <= 2, (len(frames), expected)
    assert st.frames == len(frames) and st.skipped == CLIP_FRAMES - len(frames) and st.drops == 0
    ts = np.array([f.ts_ms for f in frames])
    assert np.all(np.diff(ts) > 150)  # the media clock: ~200 ms apart
    assert [f.index for f in frames] == list(range(len(frames)))


def test_engine_at_5_fps_tracks_as_stably_as_at_every_frame(live_gallery: LiveGallery,  # noqa: F811
                                                            hamilton_clip: Path) -> None:
    """The same clip, every frame and at detect_fps 5, with the real detector: at 5 fps the faces
    move six times further between analysed frames, yet the tracker opens no more tracks (its
    IoU gate and motion prediction scale with the interval)."""
    from lookalike_live.pipeline import Engine, EngineConfig

    settings = live_gallery.settings(threshold=0.15)
    out = {}
    for fps in (None, 5.0):
        cfg = EngineConfig.from_settings(settings, detect_fps=fps, with_thumbnails=False)
        with Engine.from_settings(settings, store=live_gallery.store, config=cfg) as engine:
            out[fps] = engine.run(str(hamilton_clip))
    full, five = out[None], out[5.0]
    assert full["frames"] == CLIP_FRAMES and full["skipped"] == 0
    assert abs(five["frames"] - CLIP_FRAMES / CLIP_FPS * 5) <= 2 and five["skipped"] == CLIP_FRAMES - five["frames"]
    assert five["detect_fps"] == 5.0 and five["drops"] == 0
    print("every frame:", {k: full[k] for k in ("tracks", "decided_tracks", "embeddings")},
          "5 fps:", {k: five[k] for k in ("tracks", "decided_tracks", "embeddings")})
    assert five["tracks"] <= full["tracks"]
    assert five["decided_tracks"] >= 1


def test_tracker_gates_scale_with_the_interval_on_real_detections(hamilton_clip: Path, model_store: Path) -> None:
    """Real detections of the clip tracked at every frame and at every 6th (5 fps): with the
    gates scaled, 5 fps opens no more tracks than 30 fps; with the 30 fps IoU gate kept at 5 fps
    (the fix reverted), faces that moved are cut into new tracks."""
    import cv2

    from lookalike_live.detect import FaceDetector
    from lookalike_live.tracking import Tracker, TrackerConfig

    dets = []
    with FaceDetector("full", store=model_store, running_mode="video") as det:
        cap = cv2.VideoCapture(str(hamilton_clip))
        i = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            ts = i * 1000 / CLIP_FPS
            dets.append((ts, det.detect(img, ts)))
            i += 1
        cap.release()

    def tracks(step: int, **cfg: Any) -> int:
        tr = Tracker(TrackerConfig(**cfg))
        for k, (ts, d) in enumerate(dets[::step]):
            tr.assign(d, ts, k)
            tr.finish_frame(ts)
            tr.drain_events()
        return tr.counters["tracks"]

    every, five, five_fixed = tracks(1), tracks(6), tracks(6, iou_floor=0.3)
    tr = Tracker()
    tr.assign(dets[0][1], 0.0, 0)
    tr.assign(dets[6][1], 200.0, 1)
    assert tr.iou_gate == pytest.approx(0.1)  # 0.3 at 33 ms, in proportion beyond, down to the floor
    print("tracks: every frame", every, "| 5 fps", five, "| 5 fps with the 30 fps gate", five_fixed)
    assert five <= every
    assert five_fixed > five


def test_shared_embedder_merges_concurrent_calls_and_gives_each_caller_its_rows(model_store: Path) -> None:
    from lookalike_live.embed import create_embedder
    from lookalike_live.embed.shared import SharedEmbedder
    from lookalike_live.types import FaceCrops

    real = create_embedder("mobilefacenet", backend="onnx", store=model_store)
    real.prepare()
    rng = np.random.default_rng(1)
    crops = [FaceCrops(rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8), np.arange(n, dtype=np.int64) + 10 * k,
                       np.ones(n, np.float32)) for k, n in enumerate((1, 2, 3, 1, 2, 1, 3, 2))]
    alone = [real.embed(c).vectors for c in crops]
    calls = []

    class Slow:  # the real model, slowed so that callers pile up behind a running call
        spec, dim = real.spec, real.dim

        def embed(self, c: FaceCrops) -> Any:
            calls.append(len(c))
            time.sleep(0.05)
            return real.embed(c)

    shared = SharedEmbedder(Slow())
    results: dict[int, Any] = {}
    start = threading.Barrier(len(crops))

    def call(k: int) -> None:
        start.wait()
        results[k] = shared.embed(crops[k])

    threads = [threading.Thread(target=call, args=(k,)) for k in range(len(crops))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    real.close()
    stats = shared.stats()
    assert stats["calls"] == 8 and stats["faces"] == 15 and sum(calls) == 15
    assert len(calls) < 8 and max(calls) > 3, calls  # merged: fewer, larger model calls
    for k, c in enumerate(crops):
        assert results[k].det_index.tolist() == c.det_index.tolist()
        np.testing.assert_allclose(results[k].vectors, alone[k], atol=1e-4)  # each caller its own rows


def test_a_busy_shared_model_puts_off_re_checks_but_never_first_looks(live_gallery: LiveGallery,  # noqa: F811
                                                                       hamilton_clip: Path) -> None:
    """Two runs of the clip on one Runtime, the second while another thread keeps the shared
    model busy (another camera's faces): every track still gets its first look and a decision,
    the re-checks of decided tracks are put off (counted) instead of waiting for the model."""
    from lookalike_live.pipeline import EngineConfig
    from lookalike_live.runtime import Runtime
    from lookalike_live.types import FaceCrops

    settings = live_gallery.settings(threshold=0.15)
    cfg = EngineConfig.from_settings(settings, with_thumbnails=False)
    rng = np.random.default_rng(2)
    other = FaceCrops(rng.integers(0, 256, (4, 112, 112, 3), dtype=np.uint8), np.arange(4, dtype=np.int64),
                      np.ones(4, np.float32))
    out = {}
    with Runtime(settings, store=live_gallery.store) as rt:
        for loaded in (False, True):
            stop = threading.Event()

            def other_camera(stop: threading.Event) -> None:
                while not stop.is_set():
                    rt.shared_embedder.embed(other)

            load = threading.Thread(target=other_camera, args=(stop,), daemon=True)
            if loaded:
                load.start()
            try:
                with rt.engine("cam", cfg) as engine:
                    out[loaded] = engine.run(str(hamilton_clip))
            finally:
                stop.set()
                if loaded:
                    load.join(10)
    idle, busy = out[False], out[True]
    print({k: (idle[k], busy[k]) for k in ("tracks", "decided_tracks", "embeddings", "relooks_deferred")})
    assert idle["frames"] == busy["frames"] == CLIP_FRAMES
    assert idle["relooks_deferred"] == 0  # nobody else uses the model: every re-check runs
    assert busy["relooks_deferred"] > 0 and busy["embeddings"] < idle["embeddings"]
    assert busy["decided_tracks"] == busy["tracks"] and idle["decided_tracks"] == idle["tracks"]  # all decided
    assert abs(busy["tracks"] - idle["tracks"]) <= 1  # re-checks also refresh the vectors re-identification uses


class _FakeCapture:
    def __init__(self, offered: float) -> None:
        self.offered = offered  # due frames a second its camera delivers
        self.sample_fps: float | None = None
        self.status = SourceStatus.LIVE
        self.frames = self.delivered = self.skipped = self.drops = 0
        self.source = type("S", (), {"fps": 30.0})()

    def stats(self) -> Any:
        return type("St", (), {"frames": self.frames, "delivered": self.delivered, "skipped": self.skipped,
                               "drops": self.drops})()


class _FakeEngine:
    def __init__(self, offered: float) -> None:
        self.capture = _FakeCapture(offered)
        self.metrics = type("M", (), {})()


def test_fair_rates_lower_every_camera_by_one_factor_log_once_and_recover(caplog: pytest.LogCaptureFixture) -> None:
    """Three cameras (5, 5 and 10 fps) on a machine that analyses 12 frames a second in all: every
    camera's rate is lowered by the same factor until they keep up, with one warning; once the
    machine has room again, the rates climb back to the configured ones and it says so once."""
    cpu = [0.0]
    rates = FairRates(cores=2, cpu_time=lambda: cpu[0], warmup=0.0)
    engines = {"a": _FakeEngine(5), "b": _FakeEngine(5), "c": _FakeEngine(10)}
    for name, fps in (("a", 5.0), ("b", 5.0), ("c", 10.0)):
        rates.add(name, engines[name], fps)
    capacity = [12.0]

    def second(t: float) -> None:  # one second of frames: each camera offers its rate, the machine serves capacity
        offered = {n: (e.capture.sample_fps or {"a": 5, "b": 5, "c": 10}[n]) for n, e in engines.items()}
        share = min(1.0, capacity[0] / sum(offered.values()))
        for n, e in engines.items():
            e.capture.frames += round(offered[n])
            e.capture.delivered += round(offered[n] * share)
            e.capture.drops += round(offered[n]) - round(offered[n] * share)
            e.capture.skipped += 30 - round(offered[n])
        cpu[0] += 2 * 0.95 * min(1.0, sum(offered.values()) / capacity[0])

    caplog.set_level(logging.INFO, logger="lookalike_live.rates")
    t = 0.0
    rates.tick(t)
    for _ in range(12):
        t += 1
        second(t)
        rates.tick(t)
    scale = rates.scale
    got = {n: e.capture.sample_fps for n, e in engines.items()}
    assert scale < 0.7 and got["a"] == pytest.approx(5 * scale) and got["c"] == pytest.approx(10 * scale)
    assert sum(got.values()) <= 12.0 * 1.0001  # within what the machine serves
    warnings = [r for r in caplog.records if "cannot keep up" in r.getMessage()]
    assert len(warnings) == 1 and "lowered to" in warnings[0].getMessage()
    assert rates.health("c") == {"detect_fps": 10.0, "analysis_fps": round(10 * scale, 2), "rate_scale": round(scale, 3)}
    capacity[0] = 100.0  # room again
    for _ in range(15):
        t += 1
        second(t)
        rates.tick(t)
    assert rates.scale == 1.0 and engines["a"].capture.sample_fps == 5.0 and engines["c"].capture.sample_fps == 10.0
    assert len([r for r in caplog.records if "keeping up again" in r.getMessage()]) == 1


def test_fair_rates_do_not_judge_a_camera_in_its_first_seconds_live() -> None:
    """A camera that just connected (or reconnected) drops frames while it and the models warm
    up: those drops lower nothing until it has been live for ``warmup`` s; after that, they do."""
    rates = FairRates(cores=2, cpu_time=lambda: 0.0, warmup=4.0)
    eng = _FakeEngine(5)
    rates.add("a", eng, 5.0)
    eng.capture.status = SourceStatus.CONNECTING
    rates.tick(0.0)

    def burst(t: float) -> float:  # 2 s: 10 frames offered, 6 dropped
        eng.capture.frames += 10
        eng.capture.drops += 6
        return rates.tick(t)

    assert burst(2.0) == 1.0  # not live yet
    eng.capture.status = SourceStatus.LIVE
    assert burst(4.0) == 1.0 and burst(6.0) == 1.0  # live for 0 and 2 s: warming up
    assert burst(8.0) < 1.0  # live for 4 s: judged, and short
    low = rates.scale
    eng.capture.status = SourceStatus.RECONNECTING
    burst(10.0)
    eng.capture.status = SourceStatus.LIVE
    assert burst(12.0) >= low and burst(14.0) >= low  # back again: a new warm-up, nothing lowered


@pytest.mark.slow
def test_an_overloaded_monitor_lowers_every_camera_by_the_same_factor(
        live_gallery: LiveGallery, hamilton_clip: Path, tmp_path: Path,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    """Six real cameras (the clip, looped, in real time) with the tiled detector (three detector
    runs a frame): five analysed at every frame, one at detect_fps 5, 155 frames a second in all,
    more than this machine analyses. Every camera's rate is lowered by one factor (logged once):
    the 5 fps camera gets the same share of its rate as the others of theirs. Without the fair
    rates, it keeps its full 5 fps while the others fall to ~70 % of theirs."""
    from lookalike_live.monitor import CameraConfig, Monitor, MonitorConfig

    rates = {"slow": 5.0, **{f"cam{i}": 0.0 for i in range(5)}}
    cfg = MonitorConfig(cameras=tuple(CameraConfig(n, str(hamilton_clip), detect_fps=r) for n, r in rates.items()),
                        events=tmp_path / "events.jsonl")
    caplog.set_level(logging.INFO, logger="lookalike_live.rates")
    mon = Monitor(cfg, live_gallery.settings(threshold=0.15, small_faces="tile"), store=live_gallery.store,
                  capture_options={"loop": True}).start()
    try:
        time.sleep(10.0)  # warm-up and the first lowering steps
        a = {n: mon.cameras[n].engine.metrics.counter("frames") for n in rates}
        time.sleep(8.0)
        b = {n: mon.cameras[n].engine.metrics.counter("frames") for n in rates}
        health = mon.health()
        scale = mon.rates.scale
    finally:
        mon.stop()
    share = {n: (b[n] - a[n]) / 8.0 / (r or CLIP_FPS) for n, r in rates.items()}  # of its configured rate
    print("share of the configured rate per camera:", share, "scale", scale)
    assert scale < 0.9  # it could not keep up ...
    assert min(share.values()) / max(share.values()) >= 0.85, share  # ... and lowered every camera alike
    assert all(h["rate_scale"] == round(scale, 3) for h in health.values())
    assert health["slow"]["detect_fps"] == 5.0 and health["slow"]["analysis_fps"] == round(5.0 * scale, 2)
    assert all(health[n]["detect_fps"] is None and health[n]["analysis_fps"] < 30 for n in rates if n != "slow")
    assert len([r for r in caplog.records if "cannot keep up with 6 camera(s)" in r.getMessage()]) == 1
