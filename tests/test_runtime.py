"""The Runtime: one embedder, gallery and matcher shared by every engine it builds, a detector per
engine, ordered and idempotent close, gallery problems tolerated for the app; the monitor and `run`
get their engines from it (so the monitor now honours flip TTA like everyone else)."""

from __future__ import annotations

from pathlib import Path

import pytest
from live_fixtures import LiveGallery, live_gallery  # noqa: F401

from lookalike_live.errors import ConfigError
from lookalike_live.pipeline import Engine
from lookalike_live.runtime import Runtime


def test_engines_share_the_embedder_and_searcher_and_close_in_order(live_gallery: LiveGallery) -> None:  # noqa: F811
    rt = Runtime(live_gallery.settings(flip_tta=True), store=live_gallery.store)
    a, b = rt.engine("a"), rt.engine("b")
    assert a.analyzer.embedder is b.analyzer.embedder is rt.shared_embedder and rt.shared_embedder.embedder is rt.embedder
    assert rt.embedder.flip_tta
    assert a.matcher is b.matcher is rt.matcher is not None
    assert a.analyzer.detector is not b.analyzer.detector  # MediaPipe detectors are per thread
    a.close()
    assert rt.embedder.prepared  # one engine closing leaves the shared parts alone
    rt.close()
    assert not rt.embedder.prepared and b._closed  # noqa: SLF001 - the engines first, then the shared parts
    rt.close()  # idempotent
    with pytest.raises(ConfigError, match="closed"):
        rt.engine("c")


def test_engine_from_settings_is_a_runtime_with_one_engine(live_gallery: LiveGallery) -> None:  # noqa: F811
    engine = Engine.from_settings(live_gallery.settings(), store=live_gallery.store)
    runtime = engine._owned[-1]  # noqa: SLF001
    assert isinstance(runtime, Runtime) and engine.analyzer.embedder.embedder is runtime.embedder
    engine.close()
    assert not runtime.embedder.prepared and runtime._closed  # noqa: SLF001


def test_the_app_runtime_tolerates_gallery_problems(live_gallery: LiveGallery, tmp_path: Path) -> None:  # noqa: F811
    rt = Runtime(live_gallery.settings(milvus_uri=str(tmp_path / "none.db")), store=live_gallery.store,
                 tolerate_gallery=True)
    try:
        assert rt.matcher is None and rt.gallery_problem is not None and rt.gallery_problem.kind == "empty"
        assert "index build" in rt.gallery_problem.message
        assert rt.engine("app").matcher is None  # the video still runs: detected and tracked
    finally:
        rt.close()


def test_monitor_cameras_share_one_runtime_with_the_settings_flip_tta(live_gallery: LiveGallery,  # noqa: F811
                                                                       hamilton_clip: Path, tmp_path: Path) -> None:
    from lookalike_live.monitor import CameraConfig, Monitor, MonitorConfig

    cfg = MonitorConfig(cameras=(CameraConfig("a", str(hamilton_clip)), CameraConfig("b", str(hamilton_clip))),
                        events=tmp_path / "e.jsonl")
    mon = Monitor(cfg, live_gallery.settings(flip_tta=True), store=live_gallery.store).start()
    try:
        ea, eb = mon.cameras["a"].engine, mon.cameras["b"].engine
        assert ea.analyzer.embedder is eb.analyzer.embedder and ea.analyzer.embedder.flip_tta  # was always off
    finally:
        mon.stop()
    assert not ea.analyzer.embedder.prepared
