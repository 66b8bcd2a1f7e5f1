"""`lookalike-live run` on the real clip with a real gallery; clear errors for bad input."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_fixtures import (  # noqa: F401
    UNICODE_NAMES,
    LiveGallery,
    gallery_copy,
    live_gallery,
    live_main,
    live_parser,
    unicode_gallery,
)

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
    # a refused port and a missing webcam: said at once (3 attempts, not --connect-timeout), with the
    # cause the watchdog saw, naming only flags that exist
    for source, cause in (("rtsp://127.0.0.1:9/none", "connection refused by 127.0.0.1:9"),
                          ("webcam:7", "no camera at that index")):
        t0 = time.monotonic()
        msg = error(["run", "--source", source, "--headless", *base])
        assert time.monotonic() - t0 < 10 and f"no frame from {source} (3 attempts" in msg and cause in msg, msg
        flags = set(re.findall(r"--[a-z][a-z-]+", msg))
        assert flags <= {"--connect-timeout", "--rtsp-transport"}, flags
        help_text = subprocess.run([sys.executable, "-m", "lookalike_live.cli", "run", "--help"], capture_output=True,
                                   text=True, timeout=60).stdout
        assert all(f in help_text for f in flags)
    # a gallery that does not exist is named, with the command that builds it, and not created
    msg = error(["run", "--source", str(hamilton_clip), "--headless", "--model", "mobilefacenet", "--backend", "onnx",
                 "--milvus-uri", str(tmp_path / "empty.db")])
    assert "index build" in msg and not (tmp_path / "empty.db").exists()
    # a missing model names the install command
    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(tmp_path / "no-models"))
    assert "lookalike-live models fetch" in error(["run", "--source", str(hamilton_clip), "--headless", *base])


def _pillow_reference(text: str, size: int) -> np.ndarray:
    """``text`` white on black with Pillow and the first installed font holding all of it (independent
    of the overlay's per-character runs), tight around the ink. Gray uint8."""
    from PIL import Image, ImageDraw, ImageFont

    from lookalike_live.text import _cmap, font_chain

    fonts = [p for p in font_chain() if all(ord(c) in _cmap(p) for c in text if not c.isspace())]
    if not fonts:
        pytest.skip(f"no installed font holds {text!r} (Debian: fonts-dejavu-core, fonts-wqy-microhei)")
    font = ImageFont.truetype(fonts[0], size)
    img = Image.new("L", (int(font.getlength(text)) + 8, size * 2), 0)
    ImageDraw.Draw(img).text((4, size), text, font=font, fill=255, anchor="lm")
    arr = np.asarray(img)
    ys, xs = np.nonzero(arr > 40)
    return np.ascontiguousarray(arr[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


@pytest.mark.slow
def test_run_out_video_shows_non_ascii_names(unicode_gallery: LiveGallery, hamilton_clip: Path,  # noqa: F811
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`run --headless --out` (lookalike mode, the default) on a gallery named in four scripts: each
    name the events announce is drawn in the video as a reference rendering of the same text draws it
    (Latin accents, Icelandic, Cyrillic, CJK), not as OpenCV's "?"."""
    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(unicode_gallery.store))
    out, events = tmp_path / "annotated.mp4", tmp_path / "events.jsonl"
    code = live_main(["run", "--source", str(hamilton_clip), "--headless", "--out", str(out), "--events", str(events),
                      "--model", "mobilefacenet", "--backend", "onnx", "--milvus-uri", unicode_gallery.uri,
                      "--detector", "full", "--json"])
    assert code == 0
    capsys.readouterr()
    recs = [json.loads(line) for line in events.read_text().splitlines()]
    decided = [r for r in recs if r["event"] == "identity_decided"]
    assert decided
    for r in decided:  # both answers: the nearest always, and the open-set decision with its strength
        assert r["nearest"]["name"] in UNICODE_NAMES and r["decision"] in ("match", "unknown")
        assert r["resemblance"] == ("strong" if r["decision"] == "match" else "faint")
        assert (r["match"] is None) == (r["decision"] == "unknown")
    names = {r["nearest"]["name"] for r in decided}
    refs = {n: _pillow_reference(n, 14) for n in names}
    wrong = {n: _pillow_reference("?" * len(n), 14) for n in names}
    best = dict.fromkeys(names, -1.0)
    best_wrong = dict.fromkeys(names, -1.0)
    cap = cv2.VideoCapture(str(out))
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            for n in names:
                best[n] = max(best[n], float(cv2.matchTemplate(gray, refs[n], cv2.TM_CCOEFF_NORMED).max()))
                best_wrong[n] = max(best_wrong[n],
                                    float(cv2.matchTemplate(gray, wrong[n], cv2.TM_CCOEFF_NORMED).max()))
    finally:
        cap.release()
    print("label vs reference (best over frames):", {n: round(v, 3) for n, v in best.items()},
          "as '?':", {n: round(v, 3) for n, v in best_wrong.items()})
    for n in names:
        assert best[n] > 0.8 and best[n] > best_wrong[n] + 0.2, (n, best[n], best_wrong[n])
    assert len(names) >= 2


def test_run_output_failures_stop_the_run_with_a_clear_error(models_env: LiveGallery, hamilton_clip: Path,  # noqa: F811
                                                             tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    argv = ["run", "--source", str(hamilton_clip), "--headless", "--model", "mobilefacenet", "--backend", "onnx",
            "--milvus-uri", models_env.uri]
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    # refused before any work
    assert live_main([*argv, "--out", str(blocker / "out.mp4")]) == 2
    assert "--out" in caplog.text and "cannot create its folder" in caplog.text
    caplog.clear()
    assert live_main([*argv, "--events", str(tmp_path)]) == 2
    assert "--events" in caplog.text and "is a folder" in caplog.text
    # an output that fails while the video plays (a full disk: /dev/full) stops the run, reported once
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full not available")
    caplog.clear()
    assert live_main([*argv, "--events", "/dev/full"]) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "No space left on device" in errors[0].getMessage(), caplog.text
    assert "an output of the run failed, so it stopped" in errors[0].getMessage()
