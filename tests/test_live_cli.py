"""`lookalike-live run` on the real clip with a real gallery; clear errors for bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import pytest
from live_fixtures import LiveGallery, gallery_copy, live_gallery, live_main, live_parser  # noqa: F401

CLIP_FRAMES = 275


@pytest.fixture
def models_env(live_gallery: LiveGallery, monkeypatch: pytest.MonkeyPatch) -> LiveGallery:  # noqa: F811
    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(live_gallery.store))
    return live_gallery


def test_register_adds_run_and_monitor_with_shared_options() -> None:
    parser = live_parser()
    args = parser.parse_args(["run", "--source", "x.mp4", "--headless", "--model", "m", "--backend", "onnx",
                              "--detector", "short", "--small-faces", "tile", "--milvus-uri", "g.db",
                              "--token", "t", "--collection", "c", "--json", "--realtime"])
    assert (args.model, args.backend, args.detector, args.small_faces, args.milvus_uri, args.collection) == \
        ("m", "onnx", "short", "tile", "g.db", "c")
    assert args.json and args.realtime and args.headless
    args = parser.parse_args(["monitor", "--camera", "a=rtsp://h/x", "--camera", "b=rtsp://h/y", "--events", "e.jsonl"])
    assert args.camera == ["a=rtsp://h/x", "b=rtsp://h/y"]


def test_run_writes_playable_mp4_events_and_json_summary(models_env: LiveGallery, hamilton_clip: Path,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, events = tmp_path / "annotated.mp4", tmp_path / "events.jsonl"
    code = live_main(["run", "--source", str(hamilton_clip), "--headless", "--out", str(out), "--events", str(events),
                      "--model", "mobilefacenet", "--backend", "onnx", "--milvus-uri", models_env.uri, "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("frames", "seconds", "fps", "faces", "tracks", "decided_tracks", "median_decision_latency_ms", "drops"):
        assert key in summary, key
    assert summary["frames"] == CLIP_FRAMES and summary["drops"] == 0
    assert summary["fps"] == pytest.approx(summary["frames"] / summary["seconds"], rel=0.02) and summary["fps"] > 5
    assert summary["faces"] > CLIP_FRAMES and 0 < summary["tracks"] < summary["faces"]
    assert 0 < summary["decided_tracks"] <= summary["tracks"]
    assert 0 < summary["median_decision_latency_ms"] < 2000

    cap = cv2.VideoCapture(str(out))
    try:
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == CLIP_FRAMES
        ok, frame = cap.read()
        assert ok and frame.shape == (360, 640, 3)
    finally:
        cap.release()

    lines = events.read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    kinds = [r["event"] for r in recs]
    assert kinds[0] == "camera_status" and {"track_started", "identity_decided", "track_ended"} <= set(kinds)
    assert kinds.count("track_started") == summary["tracks"] == kinds.count("track_ended")
    for r in recs:
        assert r["camera"] == "short_hamilton_clip.mp4" and isinstance(r["time"], float)
        if r["event"] == "identity_decided":
            assert len(r["bbox"]) == 4 and isinstance(r["score"], float)
            assert (r["match"] is None) == (r["state"] == "unknown")


def test_run_errors_are_clear(models_env: LiveGallery, hamilton_clip: Path, tmp_path: Path,  # noqa: F811
                              caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.ERROR, logger="lookalike_live")
    base = ["--model", "mobilefacenet", "--backend", "onnx", "--milvus-uri", models_env.uri]

    def error(argv: list[str]) -> str:
        caplog.clear()
        assert live_main(argv) == 2
        return caplog.records[-1].getMessage()

    assert "video file not found" in error(["run", "--source", str(tmp_path / "nope.mp4"), "--headless", *base])
    assert "--headless" in error(["run", "--source", str(hamilton_clip), *base])
    assert "unsupported source URL scheme" in error(["run", "--source", "ftp://cam/x", "--headless", *base])
    msg = error(["run", "--source", "rtsp://127.0.0.1:9/none", "--headless", "--connect-timeout", "2", *base])
    assert "no frame from rtsp://127.0.0.1:9/none" in msg and "within 2 s" in msg
    # a gallery without the collection names the command that builds it
    msg = error(["run", "--source", str(hamilton_clip), "--headless", "--model", "mobilefacenet", "--backend", "onnx",
                 "--milvus-uri", str(tmp_path / "empty.db")])
    assert "index build" in msg or "does not exist" in msg
    # a missing model names the install command
    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(tmp_path / "no-models"))
    assert "lookalike-live models fetch" in error(["run", "--source", str(hamilton_clip), "--headless", *base])
