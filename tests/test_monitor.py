"""The headless monitor: config parsing, the events writer, and a real RTSP camera (rtsp-server-perl +
ffmpeg on loopback) that goes away and comes back while `lookalike-live monitor` runs in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live_fixtures import LiveGallery, gallery_copy, live_cli_command, live_gallery  # noqa: F401

from lookalike_live.errors import ConfigError
from lookalike_live.monitor import (
    EventWriter,
    MonitorConfig,
    load_monitor_config,
    parse_camera,
    track_event_record,
)
from lookalike_live.tracking import TrackEvent
from lookalike_live.types import Match, Track, TrackState

TESTS = Path(__file__).resolve().parent


def test_camera_and_config_parsing(tmp_path: Path) -> None:
    cam = parse_camera("door=rtsp://user:pw@10.0.0.5:554/stream1")
    assert cam.name == "door" and cam.url == "rtsp://user:pw@10.0.0.5:554/stream1"
    for bad in ("door", "=rtsp://x/y", "door="):
        with pytest.raises(ConfigError, match="NAME=URL"):
            parse_camera(bad)
    with pytest.raises(ConfigError, match="not valid"):
        parse_camera("front door=rtsp://x/y")
    for escaping in ("..", ".", "..."):  # the name becomes a folder under --snapshots: never its parent
        with pytest.raises(ConfigError, match="not only dots"):
            parse_camera(f"{escaping}=rtsp://x/y")
    assert parse_camera("hall.2=rtsp://x/y").name == "hall.2"
    with pytest.raises(ConfigError, match="unique"):
        MonitorConfig(cameras=(parse_camera("a=rtsp://x/1"), parse_camera("a=rtsp://x/2")))
    with pytest.raises(ConfigError, match="no camera"):
        MonitorConfig(cameras=())
    cfg_file = tmp_path / "monitor.toml"
    cfg_file.write_text('events = "out/events.jsonl"\nmetrics_port = 0\n[[camera]]\nname = "door"\n'
                        'url = "rtsp://10.0.0.5/s"\nrtsp_transport = "tcp"\n[[camera]]\nname = "yard"\nurl = "rtsp://10.0.0.6/s"\n')
    cfg = load_monitor_config(cfg_file, snapshots=tmp_path / "snaps")
    assert [c.name for c in cfg.cameras] == ["door", "yard"] and cfg.cameras[0].rtsp_transport == "tcp"
    assert cfg.events == tmp_path / "out" / "events.jsonl" and cfg.metrics_port == 0
    assert cfg.snapshots == tmp_path / "snaps"
    (tmp_path / "bad.toml").write_text('cameraz = 1\n')
    with pytest.raises(ConfigError, match="unknown keys cameraz"):
        load_monitor_config(tmp_path / "bad.toml")


@pytest.mark.race
def test_event_writer_lines_stay_whole_under_concurrency(tmp_path: Path) -> None:
    path = tmp_path / "ev.jsonl"
    w = EventWriter(path)

    def burst(k: int) -> None:
        for i in range(200):
            w.write({"event": "x", "k": k, "i": i, "pad": "y" * (i % 50)})

    threads = [threading.Thread(target=burst, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    w.write({"event": "after close"})  # ignored, no error
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(recs) == 800 == w.count and {r["k"] for r in recs} == {0, 1, 2, 3}


@pytest.mark.race
def test_output_queue_writes_off_the_producer_thread_bounded_and_reports_its_failure() -> None:
    from lookalike_live.errors import OutputError
    from lookalike_live.events import OutputQueue

    q = OutputQueue(maxsize=3, name="writer-under-test")
    ran: list[tuple[int, str]] = []
    gate, writing = threading.Event(), threading.Event()
    q.submit(lambda: (writing.set(), gate.wait(10)))  # a slow disk
    assert writing.wait(5)
    t0 = time.monotonic()
    for i in range(6):
        q.submit(lambda i=i: ran.append((i, threading.current_thread().name)))
    assert time.monotonic() - t0 < 0.5  # the producer never waited for the writer
    gate.set()
    q.close()
    assert ran == [(3, "writer-under-test"), (4, "writer-under-test"), (5, "writer-under-test")]
    assert q.dropped == 3  # the oldest waiting jobs made room, counted
    bad = OutputQueue()
    bad.submit(lambda: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    deadline = time.monotonic() + 5
    while bad.failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(OutputError, match="No space left on device"):
        bad.submit(lambda: None)
    bad.close()


def test_track_event_record_fields() -> None:
    t = Track(4, (1.0, 2.0, 3.0, 4.0), Match("2880", "Ada", 0.61, "000123.jpg"), {"2880": 0.5}, TrackState.DECIDED)
    rec = track_event_record("door", TrackEvent("identity_decided", t, 1000.0, 30, None, 900.0), wall_time=5.0)
    assert rec == {"event": "identity_decided", "camera": "door", "time": 5.0, "ts_ms": 1000.0, "track": 4,
                   "bbox": [1.0, 2.0, 3.0, 4.0], "state": "decided", "score": 0.61, "decision": "match",
                   "match": {"identity": "2880", "name": "Ada", "score": 0.61, "image": "000123.jpg"},
                   "nearest": {"identity": "2880", "name": "Ada", "score": 0.61, "image": "000123.jpg"}}
    unknown = Track(4, (1.0, 2.0, 3.0, 4.0), Match("7", "", 0.2), {}, TrackState.UNKNOWN)
    rec = track_event_record("door", TrackEvent("identity_changed", unknown, 1.0, 1, t.best, 0.0))
    assert rec["match"] is None and rec["score"] == 0.2 and rec["decision"] == "unknown"
    assert rec["nearest"]["identity"] == "7" and "resemblance" not in rec  # open set (the monitor)
    assert rec["previous"]["identity"] == "2880"
    # a lookalike run (`run` without --open-set): the same answers, plus how strong the resemblance is
    rec = track_event_record("clip", TrackEvent("identity_changed", unknown, 1.0, 1, None, 0.0), open_set=False)
    assert rec["nearest"]["identity"] == "7" and rec["decision"] == "unknown" and rec["resemblance"] == "faint"
    pending = Track(5, (1.0, 2.0, 3.0, 4.0), None)
    rec = track_event_record("door", TrackEvent("track_started", pending, 1.0, 1, None, 0.0))
    assert rec["decision"] == "pending" and rec["nearest"] is None and rec["match"] is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines()[: text.count("\n")]]  # whole lines only


def _wait(pred, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc.poll() is not None:
            raise AssertionError(f"monitor exited ({proc.returncode}) while waiting for {what}:\n"
                                 f"{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def test_monitor_rtsp_camera_goes_away_and_comes_back(gallery_copy: LiveGallery, hamilton_clip: Path,  # noqa: F811
                                                       tmp_path: Path) -> None:
    from rtsp_server import RtspTestServer, missing_tools

    why = missing_tools()
    if why:
        pytest.skip(why)
    events, snaps, log = tmp_path / "events.jsonl", tmp_path / "snaps", tmp_path / "monitor.log"
    port = _free_port()
    dead = f"rtsp://127.0.0.1:{_free_port()}/nothing"
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(gallery_copy.store), "PYTHONUNBUFFERED": "1"}
    (tmp_path / "rtsp").mkdir()
    with RtspTestServer(hamilton_clip, log_dir=tmp_path / "rtsp") as server:
        cmd = [*live_cli_command(TESTS), "monitor", "--camera", f"stage={server.url}", "--camera", f"dead={dead}",
               "--events", str(events), "--snapshots", str(snaps), "--metrics-port", str(port),
               "--health-interval", "1", "--model", "mobilefacenet", "--backend", "onnx",
               "--milvus-uri", gallery_copy.uri, "--threshold", "0.2", "--json"]
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
        try:
            def has(pred) -> bool:  # type: ignore[no-untyped-def]
                return any(pred(r) for r in _events(events))

            _wait(lambda: has(lambda r: r["camera"] == "stage" and r["event"] == "identity_decided"), 90,
                  "a decision on the RTSP camera", proc, log)
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            assert 'lookalike_frames_total{camera="stage"}' in body and 'camera="dead"' in body

            server.stop()  # the camera goes away ...
            _wait(lambda: has(lambda r: r["camera"] == "stage" and r.get("status") == "reconnecting"), 30,
                  "the monitor to notice and reconnect", proc, log)
            n_before = len(_events(events))
            server.start()  # ... and comes back on the same URL
            _wait(lambda: any(r["camera"] == "stage" and r.get("status") == "live" for r in _events(events)[n_before:]),
                  60, "the camera to be live again", proc, log)
            _wait(lambda: any(r["camera"] == "stage" and r["event"] == "track_started"
                              for r in _events(events)[n_before:]), 30, "faces after the reconnect", proc, log)
            assert proc.poll() is None  # no crash
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                raise
    assert proc.returncode == 0, log.read_text()[-3000:]
    summary = json.loads(out)
    stage_summary = summary["cameras"]["stage"]
    assert stage_summary["frames"] >= 2 and stage_summary["reconnects"] >= 1
    # the default detect_fps 5 of a 30 fps camera: the frames between were decoded, not analysed
    assert stage_summary["detect_fps"] == 5.0 and stage_summary["skipped"] > 3 * stage_summary["frames"]

    text = events.read_text()
    assert text.endswith("\n")
    recs = [json.loads(line) for line in text.splitlines()]  # every line is valid JSON
    assert summary["event_count"] == len(recs)
    dead_status = [r["status"] for r in recs if r["camera"] == "dead"]
    assert "reconnecting" in dead_status and "live" not in dead_status
    assert any(r["camera"] == "dead" and r.get("message") for r in recs if r.get("status") == "reconnecting")
    stage = [r for r in recs if r["camera"] == "stage"]
    for r in stage:
        assert {"event", "camera", "time"} <= set(r)
        if r["event"] in ("track_started", "identity_decided", "identity_changed", "track_ended"):
            assert len(r["bbox"]) == 4 and "match" in r and "score" in r
    started = {r["track"] for r in stage if r["event"] == "track_started"}
    ended = {r["track"] for r in stage if r["event"] == "track_ended"}
    assert started == ended  # clean shutdown ends every track
    shots = [r["snapshot"] for r in stage if "snapshot" in r]
    assert shots and all(Path(p).is_file() and Path(p).read_bytes()[:2] == b"\xff\xd8" for p in shots)


def test_snapshot_shows_the_face_with_its_open_set_overlay(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from lookalike_live.gallery import GalleryMatch
    from lookalike_live.monitor import save_snapshot
    from lookalike_live.overlay import Annotator
    from lookalike_live.types import FaceDetections, Frame, FrameResult

    photo = np.zeros((96, 96, 3), np.uint8)
    photo[:, :48] = (255, 0, 0)
    photo[:, 48:] = (0, 0, 255)
    thumb = cv2.imencode(".jpg", photo)[1].tobytes()
    image = np.full((360, 640, 3), 60, np.uint8)
    known = Track(1, (100.0, 100.0, 160.0, 170.0), GalleryMatch("7", "Björk", 0.7, "a.jpg", 3, "celeba", thumb),
                  state=TrackState.DECIDED)
    unknown = Track(2, (400.0, 100.0, 460.0, 170.0), GalleryMatch("8", "Ada", 0.2, "b.jpg", 4, "celeba", thumb),
                    state=TrackState.UNKNOWN)
    dets = FaceDetections(np.array([known.xyxy, unknown.xyxy], np.float32), np.ones(2, np.float32),
                          np.zeros((2, 6, 2), np.float32))
    res = FrameResult(Frame("door", 5, 0.0, image), dets, (known, unknown))
    shot = cv2.imread(str(save_snapshot(tmp_path, "door", res, known)))
    tag = Annotator(open_set=True).layout(FrameResult(res.frame, dets, (known,)))[0]
    assert shot.shape[1] >= tag.rect[0] + tag.rect[2] - 100 + 18  # the crop holds the tag beside the face
    s = tag.thumb_rect[2]
    ref = cv2.resize(photo, (s, s))[3:-3, 3:-3]
    assert cv2.matchTemplate(shot, ref, cv2.TM_CCOEFF_NORMED).max() > 0.9  # with the matched photo
    shot = cv2.imread(str(save_snapshot(tmp_path, "door", res, unknown)))
    assert cv2.matchTemplate(shot, ref, cv2.TM_CCOEFF_NORMED).max() < 0.6  # open set: "unknown", no photo
    assert shot.shape[0] > 0 and len(list((tmp_path / "door").glob("*.jpg"))) == 2


def test_four_cameras_one_flooding_every_camera_still_gets_its_answers(live_gallery: LiveGallery,  # noqa: F811
                                                                        hamilton_clip: Path, tmp_path: Path) -> None:
    """Four cameras share the monitor's one matcher. One floods it: besides its own queries, its
    source keeps sending its latest query vectors in bursts, far more than the matcher serves.
    The other three still get an answer to every query they make; only the flood's own oldest
    queries are dropped. (With one queue for all sources, the calm cameras' queries are evicted.)"""
    from lookalike_live.monitor import CameraConfig, Monitor, MonitorConfig

    names = ("door", "gate", "hall", "flood")
    cfg = MonitorConfig(cameras=tuple(CameraConfig(n, str(hamilton_clip)) for n in names), events=tmp_path / "e.jsonl",
                        snapshots=tmp_path / "snaps")
    import lookalike_live.monitor as monitor_module

    shot_on: set[str] = set()
    real_save = monitor_module.save_snapshot

    def save(*a: Any, **kw: Any) -> Any:
        shot_on.add(threading.current_thread().name)
        return real_save(*a, **kw)

    monitor_module.save_snapshot = save  # type: ignore[assignment]
    # looped: the calm cameras keep asking (while the shared model is busy, their re-checks wait)
    mon = Monitor(cfg, live_gallery.settings(threshold=0.15), store=live_gallery.store,
                  capture_options={"loop": True}).start()
    stop = threading.Event()
    try:
        engine = mon.cameras["flood"].engine
        matcher = engine.matcher
        latest: list[np.ndarray] = []

        class FloodingCamera:  # the flood camera's engine submits through this: its queries are kept
            def __getattr__(self, name: str) -> Any:
                return getattr(matcher, name)

            def submit(self, source: str, vectors: np.ndarray, k: int = 1, **kw: Any) -> Any:
                latest[:] = [vectors]
                return matcher.submit(source, vectors, k, **kw)

        engine.matcher = FloodingCamera()

        def flooding() -> None:  # bursts of 50 every 10 ms: up to 5,000 searches/s, several times what it serves
            while not stop.is_set():
                if latest:
                    for _ in range(50):
                        matcher.submit("flood", latest[0], 3)
                time.sleep(0.01)

        flooder = threading.Thread(target=flooding, name="flood", daemon=True)
        flooder.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            by = matcher.stats()["by_source"]
            if all(by.get(n, {}).get("answered", 0) >= 15 for n in names[:3]) and by.get("flood", {}).get("dropped", 0) > 500:
                break
            time.sleep(0.5)
        stop.set()
        flooder.join()
        time.sleep(1.0)  # the calm cameras' last queries come back
        by = matcher.stats()["by_source"]
    finally:
        stop.set()
        mon.stop()
        monitor_module.save_snapshot = real_save  # type: ignore[assignment]
    assert shot_on == {"monitor-outputs"}, shot_on  # snapshots never on a camera's inference thread
    # of each camera's queries: answered, failed, dropped, or still out (queued or running now)
    out = {n: by[n]["submitted"] - by[n]["answered"] - by[n]["failed"] - by[n]["dropped"] for n in names}
    rates = {n: round(by[n]["answered"] / max(1, by[n]["submitted"] - out[n]), 3) for n in names}
    print("per-camera answer rate:", rates, {n: by[n] for n in names})
    for n in names[:3]:
        assert by[n]["answered"] >= 15, by  # each calm camera asked enough to measure
        assert by[n]["dropped"] == 0 and by[n]["failed"] == 0 and rates[n] == 1.0, (n, by)
        assert out[n] <= 2, (n, by)  # at most the searches running at that instant: none was lost
    assert by["flood"]["dropped"] > 500, by  # the flood paid for itself


def test_a_bad_camera_is_refused_at_start_and_a_failed_one_is_reported(live_gallery: LiveGallery,  # noqa: F811
                                                                       hamilton_clip: Path, tmp_path: Path) -> None:
    from lookalike_live.monitor import CameraConfig, Monitor, MonitorConfig

    settings = live_gallery.settings(threshold=0.15)
    bad = MonitorConfig(cameras=(CameraConfig("door", str(hamilton_clip)), CameraConfig("gate", "rtsp://")),
                        events=tmp_path / "e.jsonl")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="camera gate: .*host"):
        Monitor(bad, settings, store=live_gallery.store).start()
    assert time.monotonic() - t0 < 2  # refused before any model loads
    # a camera whose run fails later (its events cannot be written: a full disk) is "failed", with why
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full not available")
    cfg = MonitorConfig(cameras=(CameraConfig("door", str(hamilton_clip)),), events=Path("/dev/full"))
    mon = Monitor(cfg, settings, store=live_gallery.store).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and mon.health()["door"]["status"] != "failed":
            time.sleep(0.2)
        h = mon.health()["door"]
        assert h["status"] == "failed" and "No space left on device" in h["error"], h
    finally:
        mon.stop()
