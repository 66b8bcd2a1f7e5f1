"""Frame sources on real components: the Hamilton clip through OpenCV/FFmpeg, real sockets on
127.0.0.1, and a real RTSP server (rtsp-server-perl fed by ffmpeg, see tests/rtsp_server.py).

The RTSP tests skip with the reason when ``rtsp-server-perl`` or ``ffmpeg`` is missing
(Debian/Ubuntu: ``apt-get install rtsp-server-perl ffmpeg``). Timing checks are loose on
purpose (the machine is a shared 2-core CPU). Whole file: ~21 s there, of which the RTSP and
HTTP stream tests ~16 s; the HTTP MJPEG test needs only ffmpeg (it serves with ``-listen 1``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lookalike_live.capture import (
    Backoff,
    CaptureThread,
    FileSource,
    FrameSource,
    LatestFrameSlot,
    SourceStatus,
    StatusEvent,
    StreamSource,
    list_webcams,
    open_source,
    parse_source,
    redact_url,
)
from lookalike_live.errors import ConfigError, SourceError
from lookalike_live.types import Frame

log = logging.getLogger(__name__)

CLIP_FRAMES = 275
CLIP_FPS = 29.97


def _closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _frame(i: int) -> Frame:
    return Frame("t", i, float(i), np.zeros((2, 2, 3), np.uint8))


class _Recorder:
    """A status subscriber that keeps every event (thread-safe)."""

    def __init__(self) -> None:
        self.events: list[StatusEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: StatusEvent) -> None:
        with self._lock:
            self.events.append(event)

    @property
    def statuses(self) -> list[str]:
        with self._lock:
            return [e.status.value for e in self.events]


# ------------------------------------------------------------------------------------------
# parse_source
# ------------------------------------------------------------------------------------------


def test_parse_source_forms(hamilton_clip: Path) -> None:
    assert parse_source("0").kind == "webcam" and parse_source("0").index == 0
    assert parse_source(2).index == 2
    assert parse_source("webcam").index == 0
    assert parse_source("webcam:3").index == 3
    assert parse_source("/dev/video1").index == 1
    for url in ("rtsp://cam.local:8554/stream1", "rtsps://cam/x", "http://cam/video.mjpg", "https://h/x.m3u8"):
        spec = parse_source(url)
        assert (spec.kind, spec.target, spec.live) == ("stream", url, True)
    spec = parse_source(str(hamilton_clip))
    assert (spec.kind, spec.live, Path(spec.target)) == ("file", False, hamilton_clip.resolve())
    assert parse_source(f"file://{hamilton_clip}").target == str(hamilton_clip.resolve())
    secret = parse_source("rtsp://admin:hunter2@10.0.0.5:554/live")
    assert "hunter2" not in secret.display_name and "admin:***@10.0.0.5:554" in secret.display_name
    assert redact_url("rtsp://cam/x") == "rtsp://cam/x"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("/no/such/dir/clip.mp4", "/no/such/dir/clip.mp4"),
        ("rtsp://", "has no host"),
        ("rtsp://:554/live", "has no host"),
        ("rtsp://cam:port/live", "malformed"),
        ("ftp://cam/x", "unsupported source URL scheme 'ftp'"),
        ("   ", "empty frame source"),
    ],
)
def test_parse_source_errors_name_the_input(text: str, needle: str) -> None:
    with pytest.raises(SourceError) as err:
        parse_source(text)
    assert needle in str(err.value)


def test_missing_file_fails_at_open_source(tmp_path: Path) -> None:
    missing = tmp_path / "gone.mp4"
    with pytest.raises(SourceError) as err:
        open_source(str(missing))
    assert str(missing) in str(err.value) and "not found" in str(err.value)
    with pytest.raises(SourceError, match="is a folder"):
        parse_source(str(tmp_path))


# ------------------------------------------------------------------------------------------
# Latest-frame slot and backoff (plain objects)
# ------------------------------------------------------------------------------------------


def test_latest_frame_slot_keeps_newest_and_counts_drops() -> None:
    slot = LatestFrameSlot()
    assert slot.poll() is None and slot.get(timeout=0.01) is None
    assert slot.put(_frame(0)) is False
    assert slot.put(_frame(1)) is True and slot.put(_frame(2)) is True
    got = slot.get(timeout=0)
    assert got is not None and got.index == 2
    assert (slot.put_count, slot.dropped, slot.delivered) == (3, 2, 1)
    assert slot.get(timeout=0.01) is None  # each frame is returned once

    # a blocked reader wakes up on put and on close
    results: list[Frame | None] = []
    reader = threading.Thread(target=lambda: results.append(slot.get(timeout=5)))
    reader.start()
    time.sleep(0.05)
    slot.put(_frame(3))
    reader.join(2)
    assert results and results[0] is not None and results[0].index == 3
    reader = threading.Thread(target=lambda: results.append(slot.get(timeout=5)))
    reader.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    slot.close()
    reader.join(2)
    assert results[-1] is None and time.monotonic() - t0 < 1.0


def test_slot_of_depth_two_lets_the_reader_be_one_frame_late() -> None:
    """A sampled camera's slot (depth 2): a reader late by one frame gets both, in order; only a
    third unread frame drops the oldest."""
    slot = LatestFrameSlot(depth=2)
    assert slot.put(_frame(0)) is False and slot.put(_frame(1)) is False
    assert [slot.get(0).index, slot.get(0).index] == [0, 1]  # type: ignore[union-attr]
    for i in (2, 3, 4):
        slot.put(_frame(i))
    assert slot.dropped == 1 and slot.latest().index == 4  # type: ignore[union-attr]
    assert [slot.get(0).index, slot.get(0).index] == [3, 4] and slot.get(0) is None  # type: ignore[union-attr]
    assert slot.put_count == slot.delivered + slot.dropped == 5


def test_lossless_put_waits_for_the_reader() -> None:
    slot = LatestFrameSlot()
    slot.put(_frame(0), wait=True)
    done = threading.Event()

    def producer() -> None:
        slot.put(_frame(1), wait=True)
        done.set()

    threading.Thread(target=producer, daemon=True).start()
    assert not done.wait(0.2)  # the slot is full: the producer waits instead of dropping
    assert slot.get(0).index == 0  # type: ignore[union-attr]
    assert done.wait(2) and slot.dropped == 0


def test_backoff_grows_with_cap_and_jitter() -> None:
    b = Backoff(initial=0.5, factor=2.0, maximum=4.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    j = Backoff(initial=1.0, maximum=1.0, jitter=0.2)
    delays = [j.delay(3) for _ in range(50)]
    assert all(0.8 <= d <= 1.2 for d in delays) and len(set(delays)) > 1
    with pytest.raises(ConfigError):
        Backoff(initial=0)
    with pytest.raises(ConfigError):
        Backoff(jitter=1.5)


# ------------------------------------------------------------------------------------------
# File source on the real clip
# ------------------------------------------------------------------------------------------


def test_file_as_fast_as_possible_yields_every_frame(hamilton_clip: Path) -> None:
    rec = _Recorder()
    t0 = time.monotonic()
    cap = open_source(hamilton_clip, realtime=False, on_status=rec)
    frames = list(cap.frames(timeout=10))
    elapsed = time.monotonic() - t0
    assert cap.join(5)
    assert len(frames) == CLIP_FRAMES
    assert [f.index for f in frames] == list(range(CLIP_FRAMES))
    ts = np.array([f.ts_ms for f in frames])
    assert np.all(np.diff(ts) > 0)
    assert ts[0] == pytest.approx(0.0, abs=1.0)
    assert ts[-1] == pytest.approx((CLIP_FRAMES - 1) * 1000 / CLIP_FPS, rel=0.02)
    assert all(f.image.shape == (360, 640, 3) and f.image.dtype == np.uint8 for f in frames)
    assert rec.statuses == ["connecting", "live", "ended"]
    assert cap.status is SourceStatus.ENDED
    stats = cap.stats()
    assert (stats.frames, stats.drops, stats.delivered, stats.corrupt) == (CLIP_FRAMES, 0, CLIP_FRAMES, 0)
    assert cap.read(timeout=0.1) is None  # finished: readers are not left waiting
    log.info("file as fast as possible: %d frames in %.2f s", len(frames), elapsed)
    assert elapsed < 9.0, "as fast as possible must beat real time (9.2 s) by far"


def test_file_realtime_pacing_holds_the_file_rate(hamilton_clip: Path) -> None:
    with open_source(hamilton_clip, realtime=True) as cap:
        first = cap.read(timeout=5)
        assert first is not None
        t0 = time.monotonic()
        frames = [first]
        while time.monotonic() - t0 < 1.5:
            f = cap.read(timeout=1)
            if f is not None:
                frames.append(f)
        wall = time.monotonic() - t0
        fps = (len(frames) - 1) / wall
        media_s = (frames[-1].ts_ms - first.ts_ms) / 1000
        measured = cap.stats().fps
    log.info("real-time file: %.1f fps delivered, media/wall %.2f, stats fps %.1f", fps, media_s / wall, measured)
    assert 20 <= fps <= 40, fps
    assert 0.75 <= media_s / wall <= 1.25
    assert 20 <= measured <= 40


def test_slow_reader_gets_newest_frames_and_drops_are_counted(hamilton_clip: Path) -> None:
    with open_source(hamilton_clip, realtime=True) as cap:
        got = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.2:
            f = cap.read(timeout=2)
            assert f is not None
            got.append(f)
            time.sleep(0.2)  # a reader at ~5 fps against a 30 fps source
        cap.stop()
        stats = cap.stats()
    idx = [f.index for f in got]
    assert idx == sorted(set(idx)) and max(np.diff(idx)) >= 3  # newest frames, skipping stale ones
    assert stats.drops >= 10
    pending = 1 if cap.slot.pending else 0
    assert stats.frames == stats.delivered + stats.drops + pending
    assert stats.delivered == len(got)


def test_file_loop_keeps_indices_and_timestamps_increasing(hamilton_clip: Path) -> None:
    with open_source(hamilton_clip, realtime=False, loop=True) as cap:
        frames = [f for _, f in zip(range(CLIP_FRAMES + 40), cap.frames(timeout=5), strict=False)]
    assert len(frames) == CLIP_FRAMES + 40
    assert [f.index for f in frames] == list(range(CLIP_FRAMES + 40))
    assert np.all(np.diff([f.ts_ms for f in frames]) > 0)
    assert cap.source.passes >= 2  # type: ignore[attr-defined]
    assert cap.status is SourceStatus.STOPPED


def test_file_that_is_not_a_video_reports_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_bytes(b"this is not a video\n" * 100)
    cap = open_source(bad, realtime=False)
    assert cap.read(timeout=5) is None
    assert cap.join(5) and cap.status is SourceStatus.ERROR
    event = cap.last_event
    assert event is not None and str(bad) in event.message and "cannot open video file" in event.message
    assert cap.stats().last_error == event.message


class _GlitchySource(FileSource):
    """The real file source, with a broken frame now and then: no image, wrong dtype, wrong shape."""

    def retrieve(self):  # type: ignore[override]
        image = super().retrieve()
        if image is not None and self._pass_frames % 10 == 5:
            return [None, image.astype(np.float32), image[:, :, :2], np.zeros((0, 0, 3), np.uint8)][
                (self._pass_frames // 10) % 4
            ]
        return image


def test_corrupt_frames_are_counted_and_skipped(hamilton_clip: Path) -> None:
    source = _GlitchySource(parse_source(hamilton_clip))
    cap = open_source(source, realtime=False)
    frames = list(cap.frames(timeout=5))
    assert cap.join(5) and cap.status is SourceStatus.ENDED
    stats = cap.stats()
    assert stats.corrupt == 28  # reads 5, 15, ..., 275 of 275
    assert len(frames) == CLIP_FRAMES - 28 and stats.frames == len(frames)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert "corrupt frame skipped" in stats.last_error


def test_gray_and_bgra_frames_become_bgr(hamilton_clip: Path) -> None:
    class _Formats(FileSource):
        def read(self):  # type: ignore[override]
            ok, image, ts = super().read()
            if ok and image is not None:
                image = image[:, :, 0] if self._pass_frames % 2 else np.dstack([image, image[:, :, :1]])
            return ok, image, ts

    cap = open_source(_Formats(parse_source(hamilton_clip)), realtime=False)
    frames = list(cap.frames(timeout=5))
    assert len(frames) == CLIP_FRAMES and cap.stats().corrupt == 0
    assert all(f.image.shape == (360, 640, 3) and f.image.dtype == np.uint8 for f in frames)


# ------------------------------------------------------------------------------------------
# Live sources without a server: unreachable camera, backend that blocks, settings
# ------------------------------------------------------------------------------------------


def test_unreachable_camera_reconnects_with_backoff_and_stops_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    rec = _Recorder()
    backoff = Backoff(initial=0.2, factor=2.0, maximum=0.8, jitter=0.0)
    cap = open_source(f"rtsp://127.0.0.1:{port}/cam", backoff=backoff, open_timeout=2, on_status=rec)
    assert cap.wait_for("reconnecting", timeout=5)
    time.sleep(1.8)  # attempts at ~0, 0.2, 0.6, 1.4 s
    assert cap.status is SourceStatus.RECONNECTING and cap.running
    t0 = time.monotonic()
    assert cap.stop(timeout=2)
    assert time.monotonic() - t0 < 1.0
    retries = [e for e in rec.events if e.status is SourceStatus.RECONNECTING]
    assert len(retries) >= 3
    assert [e.attempt for e in retries] == list(range(1, len(retries) + 1))
    assert [e.retry_in for e in retries][:4] == [0.2, 0.4, 0.8, 0.8][: len(retries)]
    assert "connection refused" in retries[0].message and f"127.0.0.1:{port}" in retries[0].message
    assert rec.statuses[0] == "connecting" and rec.statuses[-1] == "stopped"
    stats = cap.stats()
    assert stats.reconnects >= 2 and "connection refused" in stats.last_error and stats.frames == 0


@contextlib.contextmanager
def _silent_server() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections (kernel backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def test_stop_is_bounded_while_the_backend_blocks() -> None:
    with _silent_server() as port:
        cap = open_source(f"rtsp://127.0.0.1:{port}/cam", open_timeout=2.5, rtsp_transport="tcp")
        time.sleep(0.3)  # the thread is now inside the blocking open
        assert cap.status is SourceStatus.CONNECTING
        t0 = time.monotonic()
        finished = cap.stop(timeout=0.3)
        assert time.monotonic() - t0 < 0.8
        assert not finished  # still in the bounded open call ...
        assert cap.join(5), "... which returns within open_timeout, and the thread exits"
    assert cap.status is SourceStatus.STOPPED
    assert cap.read(timeout=0.1) is None


class _StuckCamera(FrameSource):
    """A live source whose reads deliver frames until ``stuck`` is set, then block in the
    "driver" until ``release`` is set (as OpenCV's V4L2 read does on a webcam that stopped)."""

    live = True

    def __init__(self) -> None:
        super().__init__(parse_source("0"))
        self.stuck, self.release = threading.Event(), threading.Event()
        self.opens = 0

    def open(self) -> None:
        self.opens += 1

    def read(self):  # type: ignore[no-untyped-def]
        if self.stuck.is_set():
            self.release.wait(30)
            return False, None, None
        time.sleep(0.02)
        return True, np.zeros((24, 32, 3), np.uint8), None

    def close(self) -> None:
        pass


@pytest.mark.race
def test_a_read_blocked_in_the_backend_is_reported_stalled_while_it_blocks() -> None:
    cam = _StuckCamera()
    rec = _Recorder()
    cap = CaptureThread(cam, stall_timeout=0.6, backoff=Backoff(initial=0.1, jitter=0.0))
    cap.subscribe(rec)
    cap.start()
    try:
        assert cap.wait_for("live", timeout=5)
        cam.stuck.set()
        t0 = time.monotonic()
        assert cap.wait_for("stalled", timeout=3), cap.events  # while the read still blocks
        seen_after = time.monotonic() - t0
        assert cap.running and not cam.release.is_set()
        assert "read is blocked in the backend" in cap.last_event.message  # type: ignore[union-attr]
        cam.stuck.clear()
        cam.release.set()  # the driver returns: the watchdog reconnects and the camera is live again
        assert cap.wait_for("live", timeout=5) and cam.opens >= 2
        assert rec.statuses.count("stalled") == 1  # said once, not again when the read returned
    finally:
        cam.release.set()
        cap.stop()
    assert 0.4 < seen_after < 1.5


def test_live_sources_refuse_lossless_and_bad_settings() -> None:
    spec = parse_source("rtsp://127.0.0.1:9/x")
    with pytest.raises(ConfigError, match="lossless"):
        CaptureThread(StreamSource(spec), lossless=True)
    with pytest.raises(ConfigError, match="rtsp_transport"):
        StreamSource(spec, rtsp_transport="quic")
    with pytest.raises(ConfigError):
        CaptureThread(StreamSource(spec), stall_timeout=0)


def test_list_webcams_is_fast_and_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    found = list_webcams(max_index=4)
    assert isinstance(found, list) and all(isinstance(i, int) and 0 <= i < 4 for i in found)
    assert time.monotonic() - t0 < 10
    if not found:
        out, err = capfd.readouterr()
        assert out == "" and err == ""


# ------------------------------------------------------------------------------------------
# A real RTSP server on loopback
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rtsp_server(hamilton_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from rtsp_server import RtspTestServer, missing_tools

    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    server = RtspTestServer(hamilton_clip, log_dir=tmp_path_factory.mktemp("rtsp-logs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


FAST_BACKOFF = Backoff(initial=0.25, factor=2.0, maximum=1.0, jitter=0.1)


@pytest.mark.timeout(90)
def test_rtsp_goes_live_survives_server_restart(rtsp_server) -> None:  # type: ignore[no-untyped-def]
    rtsp_server.start()
    rec = _Recorder()
    cap = open_source(
        rtsp_server.url, stall_timeout=2.0, open_timeout=4.0, read_timeout=2.0, backoff=FAST_BACKOFF, on_status=rec
    )
    try:
        t0 = time.monotonic()
        assert cap.wait_for("live", timeout=15), cap.events
        first_live_s = time.monotonic() - t0
        got = [cap.read(timeout=3) for _ in range(10)]
        assert all(f is not None for f in got)
        assert all(f.image.shape == (360, 640, 3) and f.image.dtype == np.uint8 for f in got)  # type: ignore[union-attr]
        assert np.all(np.diff([f.index for f in got]) > 0)  # type: ignore[union-attr]
        assert "over UDP" in cap.last_event.message  # type: ignore[union-attr]  # the server is UDP-only
        before = cap.stats().frames
        last_index = got[-1].index  # type: ignore[union-attr]

        rtsp_server.stop()  # the camera goes away mid-stream
        t_down = time.monotonic()
        assert cap.wait_for("stalled", "reconnecting", timeout=8), cap.events
        detect_s = time.monotonic() - t_down
        cap.poll()  # drop what was captured before the loss
        time.sleep(1.5)
        assert cap.status is SourceStatus.RECONNECTING and cap.running
        assert cap.poll() is None  # no frames while the server is down

        rtsp_server.start()  # the camera comes back on the same URL
        t_up = time.monotonic()
        assert cap.wait_for("live", timeout=20), cap.events
        resume_s = time.monotonic() - t_up
        fresh = cap.read(timeout=3)
        assert fresh is not None and fresh.index > last_index
        time.sleep(0.5)
        stats = cap.stats()
        assert stats.frames > before + 5 and stats.reconnects >= 1
        statuses = rec.statuses
        assert statuses[0] == "connecting" and statuses.count("live") == 2
        assert statuses.index("reconnecting") > statuses.index("live")
    finally:
        t0 = time.monotonic()
        cap.stop()
        stop_s = time.monotonic() - t0
    log.info(
        "RTSP: first live %.2f s; loss detected %.2f s after the server stopped; live again %.2f s "
        "after it came back; stop %.3f s; stats %s",
        first_live_s, detect_s, resume_s, stop_s, stats,
    )  # fmt: skip
    assert stop_s < 2.5


@pytest.mark.timeout(90)
def test_rtsp_frozen_camera_stalls_then_recovers(rtsp_server) -> None:  # type: ignore[no-untyped-def]
    rtsp_server.start()
    cap = open_source(
        rtsp_server.url, rtsp_transport="udp", stall_timeout=1.5, open_timeout=3.0, backoff=FAST_BACKOFF
    )
    try:
        assert cap.wait_for("live", timeout=15), cap.events
        assert cap.read(timeout=3) is not None
        rtsp_server.freeze()  # server up, no packets: a hung camera
        t0 = time.monotonic()
        assert cap.wait_for("stalled", timeout=8), cap.events
        stalled_after = time.monotonic() - t0
        assert "no frame for" in cap.last_event.message  # type: ignore[union-attr]
        rtsp_server.thaw()
        t1 = time.monotonic()
        assert cap.wait_for("live", timeout=20), cap.events
        recovered_after = time.monotonic() - t1
        assert cap.read(timeout=3) is not None
    finally:
        rtsp_server.thaw()
        cap.stop()
    log.info("RTSP freeze: stalled after %.2f s, live again %.2f s after thaw", stalled_after, recovered_after)


def test_rtsp_open_failures_explain_why(rtsp_server) -> None:  # type: ignore[no-untyped-def]
    rtsp_server.start()
    messages = {}
    for key, url, transport in (
        ("tcp-only", rtsp_server.url, "tcp"),  # this server plays over UDP only
        ("wrong-path", rtsp_server.url + "-typo", "auto"),
    ):
        cap = open_source(url, rtsp_transport=transport, open_timeout=3.0, backoff=FAST_BACKOFF)
        try:
            assert cap.wait_for("reconnecting", timeout=10), cap.events
            messages[key] = cap.last_event.message  # type: ignore[union-attr]
        finally:
            cap.stop()
    assert "stream exists (DESCRIBE 200) but could not be played over TCP" in messages["tcp-only"]
    assert "rtsp_transport='udp'" in messages["tcp-only"]
    assert "no stream at path '/live-typo' (404" in messages["wrong-path"]


def test_rtsp_options_are_per_open_and_never_touch_the_environment(rtsp_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Four cameras open at once, each with its own transport: the UDP ones go live, the TCP ones
    are refused by this UDP-only server and say so; nobody writes the process environment (the
    OpenCV backend needed OPENCV_FFMPEG_CAPTURE_OPTIONS, set from capture threads)."""
    rtsp_server.start()
    writes: list[str] = []
    putenv, unsetenv = os.putenv, os.unsetenv
    monkeypatch.setattr(os, "putenv", lambda key, value: (writes.append(key), putenv(key, value)))
    monkeypatch.setattr(os, "unsetenv", lambda key: (writes.append(key), unsetenv(key)))
    transports = ("tcp", "udp", "tcp", "udp")
    caps = [open_source(rtsp_server.url, rtsp_transport=t, open_timeout=3.0, backoff=FAST_BACKOFF, source_id=f"cam{i}")
            for i, t in enumerate(transports)]
    try:
        for cap, transport in zip(caps, transports, strict=True):
            if transport == "udp":
                assert cap.wait_for("live", timeout=15), cap.events
                assert cap.read(timeout=3) is not None
            else:
                assert cap.wait_for("reconnecting", timeout=15), cap.events
                assert "could not be played over TCP" in cap.last_event.message  # type: ignore[union-attr]
    finally:
        for cap in caps:
            cap.stop()
    assert writes == []


# ------------------------------------------------------------------------------------------
# An HTTP MJPEG stream (ffmpeg as the server)
# ------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_http_mjpeg_stream_goes_live_and_reconnects(hamilton_clip: Path, tmp_path: Path) -> None:
    import shutil

    from rtsp_server import HttpMjpegTestServer

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not found: install the package 'ffmpeg' to run the HTTP stream test")
    server = HttpMjpegTestServer(hamilton_clip, log_dir=tmp_path).start()
    cap = open_source(server.url, stall_timeout=2.0, open_timeout=3.0, backoff=FAST_BACKOFF)
    try:
        assert cap.wait_for("live", timeout=10), cap.events
        frame = cap.read(timeout=3)
        assert frame is not None and frame.image.shape == (360, 640, 3) and frame.image.dtype == np.uint8
        server.stop()
        assert cap.wait_for("stalled", "reconnecting", timeout=6), cap.events
        server.start()
        t0 = time.monotonic()
        assert cap.wait_for("live", timeout=15), cap.events
        log.info("HTTP MJPEG: live again %.2f s after the server came back", time.monotonic() - t0)
        again = cap.read(timeout=3)
        assert again is not None and again.index > frame.index
    finally:
        cap.stop()
        server.stop()
