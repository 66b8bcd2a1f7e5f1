"""The live Engine on the real clip with a real gallery (Milvus Lite file; Milvus server for the
fault test): every frame, stable ids, fast decisions, realtime mode, corrupt input, gallery down."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from live_fixtures import LiveGallery, build_gallery, gallery_copy, live_gallery  # noqa: F401

from lookalike_live.capture import FileSource, parse_source
from lookalike_live.metrics import Metrics
from lookalike_live.pipeline import Engine, EngineConfig
from lookalike_live.tracking import TrackerConfig, TrackEvent, iou_matrix
from lookalike_live.types import FrameResult, TrackState

CLIP_FRAMES = 275
FRAME_MS = 1000.0 / 29.97


def _collect(engine: Engine) -> tuple[list[FrameResult], list[TrackEvent]]:
    """Subscribe fresh lists (dropping earlier subscribers of this helper)."""
    for unsub in getattr(engine, "_test_unsubs", []):
        unsub()
    results: list[FrameResult] = []
    events: list[TrackEvent] = []
    engine._test_unsubs = [engine.subscribe(results.append),  # type: ignore[attr-defined]
                           engine.subscribe_events(lambda ev, res: events.append(ev))]
    return results, events


def _signature(results: list[FrameResult]) -> list[tuple]:
    return [tuple((t.track_id, t.state.value, t.best.identity if t.best else None) for t in r.tracks)
            for r in results]


def test_engine_on_the_clip_every_frame_stable_ids_fast_decisions(live_gallery: LiveGallery) -> None:  # noqa: F811
    settings = live_gallery.settings()
    with Engine.from_settings(settings, store=live_gallery.store) as engine:
        results, events = _collect(engine)
        summary = engine.run(parse_source(str(_clip())))
        assert engine.latest() is results[-1]
        metrics = engine.metrics.as_dict()
        prom = engine.metrics.prometheus()
        # determinism: a second run gives the same tracks and decisions, frame by frame
        again, _ = _collect(engine)
        engine.run(str(_clip()))

    # every frame of the file yields one FrameResult, in order
    assert [r.frame.index for r in results] == list(range(CLIP_FRAMES))
    assert summary["frames"] == CLIP_FRAMES and summary["drops"] == 0
    assert summary["faces"] == sum(len(r.detections) for r in results) > CLIP_FRAMES
    assert _signature(again) == _signature(results)

    # only faces that need it are embedded: far fewer than faces
    assert 0 < summary["embeddings"] < summary["faces"] / 4
    assert summary["tracks"] < 40 and summary["decided_tracks"] <= summary["tracks"]

    # ids are stable: a face in consecutive frames (IoU >= 0.5) keeps its track id
    same = switched = 0
    for prev, cur in zip(results, results[1:], strict=False):
        p = [t for t in prev.tracks if t.state is not TrackState.LOST]
        c = [t for t in cur.tracks if t.state is not TrackState.LOST]
        if not p or not c:
            continue
        iou = iou_matrix(np.array([t.xyxy for t in p]), np.array([t.xyxy for t in c]))
        for i, j in zip(*np.nonzero(iou >= 0.5), strict=True):
            if p[i].track_id == c[j].track_id:
                same += 1
            else:
                switched += 1
    assert same > 300 and switched == 0

    # every face visible for 0.5 s gets a decision within 0.5 s (video time) of its first frame
    seen: dict[int, list[float]] = defaultdict(list)
    size: dict[int, float] = defaultdict(float)
    for r in results:
        for t in r.tracks:
            if t.state is not TrackState.LOST:
                seen[t.track_id].append(r.frame.ts_ms)
                size[t.track_id] = max(size[t.track_id], max(t.xyxy[2] - t.xyxy[0], t.xyxy[3] - t.xyxy[1]))
    decided = {e.track.track_id: e.ts_ms - e.first_seen_ms for e in events if e.kind == "identity_decided"}
    long_lived = [tid for tid, ts in seen.items() if ts[-1] - ts[0] >= 500 and size[tid] >= TrackerConfig().min_face_px]
    assert len(long_lived) >= 3
    for tid in long_lived:
        assert tid in decided, f"track {tid} visible {seen[tid][-1] - seen[tid][0]:.0f} ms got no decision"
        assert decided[tid] <= 500, f"track {tid} decided {decided[tid]:.0f} ms after it appeared"
    assert summary["median_decision_latency_video_ms"] <= 500
    assert summary["median_decision_latency_ms"] is not None and summary["median_decision_latency_ms"] > 0

    # events: each track starts once, ends once; decisions carry a match
    starts = [e.track.track_id for e in events if e.kind == "track_started"]
    ends = [e.track.track_id for e in events if e.kind == "track_ended"]
    assert len(starts) == len(set(starts)) == summary["tracks"] and sorted(ends) == sorted(starts)
    for e in events:
        if e.kind == "identity_decided":
            assert e.track.best is not None and e.track.state in (TrackState.DECIDED, TrackState.UNKNOWN)
            assert e.track.best.identity and -1 <= e.track.best.score <= 1

    # timings and metrics
    assert {"detect", "frame", "latency"} <= set(results[0].timings)
    assert any("embed" in r.timings for r in results)
    for stage in ("decode", "detect", "align", "embed", "search", "latency"):
        assert metrics["stages"][stage]["count"] > 0, stage
    assert metrics["counters"]["frames"] == CLIP_FRAMES
    assert 'lookalike_fps{camera="short_hamilton_clip.mp4"}' in prom
    assert 'quantile="0.5",stage="embed"' in prom


def test_threshold_decides_matches_with_thumbnails(live_gallery: LiveGallery) -> None:  # noqa: F811
    """A low threshold turns the clip's closest lookalikes into decisions carrying the gallery photo."""
    settings = live_gallery.settings(threshold=0.15)
    cfg = EngineConfig.from_settings(settings, top_k=3)
    with Engine.from_settings(settings, store=live_gallery.store, config=cfg) as engine:
        results, _ = _collect(engine)
        engine.run(str(_clip()), max_frames=60)
    assert len(results) == 60
    decided = [t for r in results for t in r.tracks if t.state is TrackState.DECIDED]
    assert decided
    t = decided[-1]
    assert getattr(t.best, "thumbnail", None) and t.best.thumbnail[:2] == b"\xff\xd8"
    assert 1 <= len(t.top_k) <= 3 and t.top_k[0].score >= t.top_k[-1].score


def test_realtime_mode_runs_in_the_background(live_gallery: LiveGallery) -> None:  # noqa: F811
    with Engine.from_settings(live_gallery.settings(), store=live_gallery.store) as engine:
        results, events = _collect(engine)
        t0 = time.monotonic()
        engine.start(str(_clip()), realtime=True)
        first = engine.wait_result(timeout=10)
        assert first is not None and engine.running
        assert engine.wait(timeout=30)
        wall = time.monotonic() - t0
        summary = engine.summary()
    assert wall >= 0.8 * CLIP_FRAMES / 29.97  # paced at the clip's rate
    assert summary["frames"] + summary["drops"] >= CLIP_FRAMES - 5
    assert summary["frames"] >= CLIP_FRAMES // 3
    assert summary["decided_tracks"] >= 3
    assert summary["median_decision_latency_ms"] < 500
    assert engine.latest() is results[-1]


def test_corrupt_video_keeps_running(live_gallery: LiveGallery, tmp_path: Path) -> None:  # noqa: F811
    data = bytearray(_clip().read_bytes())
    rng = np.random.default_rng(0)
    for start in (len(data) // 3, len(data) * 2 // 3):  # garble two spots of the H.264 stream
        data[start : start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    with Engine.from_settings(live_gallery.settings(), store=live_gallery.store) as engine:
        summary = engine.run(str(bad))
    # FFmpeg conceals or drops the damaged pictures; the engine processes what decodes and ends cleanly
    assert summary["frames"] >= CLIP_FRAMES // 3
    assert summary["faces"] > 0 and summary["tracks"] > 0
    assert engine.capture.status.value == "ended"


class _GarbageEvery(FileSource):
    """The real clip with an unusable picture (2-channel float) instead of every 10th frame."""

    def read(self):  # type: ignore[no-untyped-def]
        ok, image, ts = super().read()
        if ok and self._pass_frames % 10 == 0:
            return True, np.zeros((4, 4, 2), np.float32), ts
        return ok, image, ts


def test_unusable_frames_are_skipped_and_counted(live_gallery: LiveGallery) -> None:  # noqa: F811
    with Engine.from_settings(live_gallery.settings(), store=live_gallery.store) as engine:
        summary = engine.run(_GarbageEvery(parse_source(str(_clip()))))
    assert summary["corrupt"] == CLIP_FRAMES // 10
    assert summary["frames"] == CLIP_FRAMES - CLIP_FRAMES // 10


def test_no_gallery_tracks_without_search(live_gallery: LiveGallery) -> None:  # noqa: F811
    with Engine.from_settings(live_gallery.settings(), store=live_gallery.store, search=False) as engine:
        summary = engine.run(str(_clip()), max_frames=30)
        last = engine.latest()
    assert summary["frames"] == 30 and summary["queries"] == 0
    assert last is not None and all(t.best is None for t in last.tracks)


def test_metrics_unit() -> None:
    m = Metrics("cam")
    for v in (1.0, 2.0, 3.0, 4.0):
        m.record("detect", v)
    m.incr("faces", 3)
    for k in range(5):
        m.frame_done(100.0 + k * 0.1)
    d = m.as_dict()
    assert d["stages"]["detect"]["p50_ms"] == pytest.approx(2.5) and d["stages"]["detect"]["count"] == 4
    assert d["counters"]["faces"] == 3 and d["counters"]["frames"] == 5
    assert m.overall_fps() == pytest.approx(10.0)
    text = m.prometheus()
    assert "# TYPE lookalike_faces_total counter" in text and 'lookalike_faces_total{camera="cam"} 3' in text


@pytest.mark.milvus_server
def test_gallery_down_frames_flow_then_matching_resumes(milvus_server, live_gallery: LiveGallery,  # noqa: F811
                                                         celeba_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Milvus server stopped mid-run: frames keep flowing, tracks show search unavailable; after the
    restart matching resumes by itself."""
    g = build_gallery(milvus_server.uri, live_gallery.store, celeba_dir, limit=40, collection="live_fault")
    tcfg = TrackerConfig(recheck_ms=300, retry_ms=200, max_attempts=1000)
    settings = g.settings()
    cfg = EngineConfig(tracker=tcfg, with_thumbnails=False)
    with Engine.from_settings(settings, store=g.store, config=cfg) as engine:
        engine.matcher.timeout = 2.0
        engine.matcher.reconnect_interval = 0.5
        search_status: list[bool] = []
        engine.subscribe_search(lambda ok, msg: search_status.append(ok))
        engine.start(str(_clip()), realtime=True, loop=True)

        def wait_for(pred, timeout: float, what: str) -> FrameResult:  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + timeout
            idx = -1
            while time.monotonic() < deadline:
                r = engine.wait_result(idx, timeout=1.0)
                if r is not None:
                    idx = r.frame.index
                    if pred(r):
                        return r
            raise AssertionError(f"timed out waiting for {what}; summary {engine.summary()}; "
                                 f"matcher {engine.matcher.stats() if engine.matcher else None}")

        def answered(r: FrameResult) -> bool:
            return any(t.state in (TrackState.DECIDED, TrackState.UNKNOWN) for t in r.tracks)

        wait_for(answered, 30, "a first answer")
        milvus_server.stop()
        t_down = time.monotonic()
        down = wait_for(lambda r: any(t.state is TrackState.SEARCH_UNAVAILABLE for t in r.tracks), 30,
                        "tracks showing search unavailable")
        took_down = time.monotonic() - t_down
        assert took_down < 15, f"tracks showed search unavailable only after {took_down:.1f} s"
        frames_at_down = down.frame.index
        time.sleep(2.0)
        frames_after = engine.latest().frame.index
        assert frames_after > frames_at_down + 20, (frames_at_down, frames_after)  # video keeps flowing
        assert engine.metrics.search_available is False
        milvus_server.start()  # a failure above leaves it down: the milvus_server fixture starts it for the next test
        wait_for(lambda r: answered(r) and engine.metrics.search_available, 90, "matching to resume")
        summary = engine.stop()
    assert search_status[:1] == [False] and search_status[-1] is True
    assert summary["search_failures"] > 0 and summary["frames"] > 100


def _clip() -> Path:
    from conftest import shared_path

    return shared_path("testdata", "video", "short_hamilton_clip.mp4")


@pytest.mark.race
def test_close_never_releases_the_models_under_a_running_inference_thread(live_gallery: LiveGallery) -> None:  # noqa: F811
    """close() while the inference thread is inside a slow model call: the embedder must not be
    freed under it (it would silently load itself again); it is released once the thread ends."""
    engine = Engine.from_settings(live_gallery.settings(), store=live_gallery.store)
    emb = engine.analyzer.embedder.embedder  # the model behind the runtime's shared embedder
    emb.prepare()
    inside, go_on = threading.Event(), threading.Event()
    real_embed, real_prepare = emb.embed_array, emb.prepare
    reloads: list[int] = []

    def slow_embed(*a, **k):  # type: ignore[no-untyped-def]
        inside.set()
        go_on.wait(20)  # the slow call: close() comes now
        return real_embed(*a, **k)

    emb.embed_array = slow_embed  # type: ignore[method-assign]
    emb.prepare = lambda: (reloads.append(1), real_prepare())[1]  # type: ignore[method-assign]
    engine.start(str(_clip()), realtime=False)
    assert inside.wait(30)
    engine.close(timeout=0.3)  # the thread cannot stop yet
    assert engine.running and emb.prepared  # nothing released under it
    go_on.set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (engine.running or emb.prepared):
        time.sleep(0.05)
    assert not engine.running and not emb.prepared  # released once the thread ended
    assert reloads == []  # and never loaded again behind the caller's back


def test_counters_mean_one_thing_each(live_gallery: LiveGallery) -> None:  # noqa: F811
    """A frame the stages refuse is counted as refused, not as corrupt (which counts frames the
    capture could not decode); drops are frames, search_dropped are queries."""
    from lookalike_live.errors import ShapeError

    with Engine.from_settings(live_gallery.settings(), store=live_gallery.store) as engine:
        real = engine.analyzer.detect
        calls: list[int] = []

        def refusing(image, ts_ms=None):  # type: ignore[no-untyped-def]
            calls.append(1)
            if len(calls) == 5:
                raise ShapeError("a frame the detector refuses (injected)")
            return real(image, ts_ms)

        engine.analyzer.detect = refusing  # type: ignore[method-assign]
        summary = engine.run(str(_clip()))
    assert summary["frames_refused"] == 1 and summary["corrupt"] == 0, summary
    assert summary["frames"] == CLIP_FRAMES - 1 and summary["drops"] == 0 and summary["search_dropped"] == 0
