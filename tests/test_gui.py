"""The PyQt6 app, for real: the main window offscreen (pytest-qt), the engine on the Hamilton clip
with the session's CelebA gallery (Milvus Lite), and the `app` command as a subprocess under Xvfb.

Covers: live overlay, click a face -> top-K panel, photo mode (single and group photo, drop),
snapshot and recording (+ shortcuts), remembered settings, every error banner (unreachable RTSP,
missing webcam, missing model, Milvus down, empty gallery, bad file), display rate and event-loop
stalls, and the CLI's --screenshot automation compared pixel by pixel with the raw frame.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from gui_helpers import app_cli_command, app_parser, clip_frame, far_from_boxes, ring_mask  # noqa: E402
from live_fixtures import (  # noqa: E402, F401
    UNICODE_NAMES,
    LiveGallery,
    gallery_copy,
    live_gallery,
    unicode_gallery,
    unicode_names,
)
from PyQt6.QtCore import QPoint, QSettings, Qt  # noqa: E402

from lookalike_live.config import Settings  # noqa: E402
from lookalike_live.errors import ConfigError  # noqa: E402
from lookalike_live.gui.main_window import AppOptions, MainWindow, Preferences  # noqa: E402
from lookalike_live.gui.widgets import DialogValues, SettingsDialog  # noqa: E402
from lookalike_live.types import TrackState  # noqa: E402

pytestmark = pytest.mark.gui

THRESHOLD = 0.15  # mobilefacenet + 120 gallery photos: low similarities; decide most faces (thumbnails drawn)


@pytest.fixture
def prefs(tmp_path: Path) -> Preferences:
    """QSettings isolated in a temp INI file (never the user's)."""
    return Preferences(QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def make_window(qtbot, prefs: Preferences, tmp_path: Path) -> Iterator[Callable[..., MainWindow]]:  # type: ignore[no-untyped-def]
    windows: list[MainWindow] = []

    def make(settings: Settings, store: Path | None, **opts: object) -> MainWindow:
        options = AppOptions(settings=settings, store=store, output_dir=tmp_path / "out", **opts)  # type: ignore[arg-type]
        w = MainWindow(options, prefs)
        qtbot.addWidget(w)
        w.show()
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.close()  # stops the engine, releases the gallery (bounded wait)


def _wait_frames(qtbot, window: MainWindow, pred: Callable[[], bool], timeout_s: float = 40.0) -> None:  # type: ignore[no-untyped-def]
    qtbot.waitUntil(pred, timeout=int(timeout_s * 1000))


def _click_track(qtbot, window: MainWindow, box: tuple[float, float, float, float]) -> None:  # type: ignore[no-untyped-def]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    p = window.video.from_image(cx, cy)
    qtbot.mouseClick(window.video, Qt.MouseButton.LeftButton, pos=QPoint(int(p.x()), int(p.y())))


# --------------------------------------------------------------------------- live video
def test_live_clip_overlay_click_face_snapshot_record(qtbot, make_window, live_gallery: LiveGallery,  # noqa: F811
                                                      hamilton_clip: Path, tmp_path: Path) -> None:
    w = make_window(live_gallery.settings(threshold=THRESHOLD), live_gallery.store, top_k=10)
    assert w.start(str(hamilton_clip))
    # a frame whose tracks carry several matches (searches answered while the video plays)
    _wait_frames(qtbot, w, lambda: w.result is not None and any(len(t.top_k) >= 3 for t in w.result.tracks))
    info = w.bridge.engine_info
    assert info is not None and info.search and info.gallery_stats["faces"] == live_gallery.faces
    assert "onnx" in w.lbl_backend.text() and "connected" in w.lbl_milvus.text()
    assert f"{live_gallery.faces:,} faces" in w.lbl_gallery.text()
    assert w.banners.keys() == []
    # a status message shows whole, over the source/backend/gallery labels, which come back after it
    w.statusBar().showMessage("A long message that needs the whole status bar to be read: " + "x" * 40)
    qtbot.waitUntil(lambda: not w.lbl_gallery.isVisible(), timeout=2000)
    w.statusBar().clearMessage()
    qtbot.waitUntil(lambda: w.lbl_gallery.isVisible() and w.lbl_source.isVisible(), timeout=2000)

    # the overlay: what is shown is the frame with boxes drawn (pixels changed on every box outline)
    res = w.result
    shown = w.annotated
    assert shown is not None and shown.shape == res.frame.image.shape
    visible = [t for t in res.tracks if t.state is not TrackState.LOST]
    assert visible
    diff = np.abs(shown.astype(int) - res.frame.image.astype(int)).max(axis=2)
    for t in visible:
        assert diff[ring_mask(diff.shape, t.xyxy)].mean() > 30, t
    qimg = w.video.image
    assert qimg is not None and (qimg.width(), qimg.height()) == (res.frame.width, res.frame.height)
    assert "fps" in w.hud_text() and "detect" in w.hud_text()

    # history remembered
    assert str(hamilton_clip) in w.prefs.history()

    # record while it plays
    rec = tmp_path / "rec" / "clip.mp4"
    w.start_recording(rec)
    start_shown = w.frames_shown
    _wait_frames(qtbot, w, lambda: w.frames_shown >= start_shown + 30)
    path, frames = w.stop_recording()
    assert path == rec and frames >= 25
    cap = cv2.VideoCapture(str(rec))
    n, size = 0, None
    while True:
        ok, img = cap.read()
        if not ok:
            break
        n += 1
        size = img.shape
    cap.release()
    assert n >= 25 and size == (360, 640, 3)

    # stop, then click a face with matches: the side panel shows its top-K with photos and scores
    w.stop()
    _wait_frames(qtbot, w, lambda: not w.bridge.is_running and not w.bridge.engine.running, 15)
    assert w.act_start.text() == "Start"
    track = max((t for t in w.result.tracks if t.state is not TrackState.LOST),
                key=lambda t: (len(t.top_k), t.track_id))
    assert len(track.top_k) >= 2
    _click_track(qtbot, w, track.xyxy)
    assert w.panel.isVisible() and w.selected == track.track_id and w.panel.track_id == track.track_id
    rows = w.panel.rows
    assert len(rows) == len(track.top_k) <= 10
    scores = [r.match.score for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert [r.match.identity for r in rows] == [m.identity for m in track.top_k]
    assert all(r.has_thumbnail for r in rows)  # gallery thumbnails arrive with the matches
    assert rows[0].bar.value() == int(round(track.top_k[0].score * 1000))
    assert f"#{track.track_id}" in w.panel.header.text()
    # clicking outside every face changes nothing; Esc closes the panel
    qtbot.mouseClick(w.video, Qt.MouseButton.LeftButton, pos=QPoint(3, 3))
    assert w.selected == track.track_id
    w.activateWindow()
    qtbot.keyClick(w, Qt.Key.Key_Escape)
    assert not w.panel.isVisible() and w.selected is None

    # snapshot: PNG of the annotated frame, by API and by Ctrl+S
    snap = w.snapshot(tmp_path / "snap.png")
    assert snap is not None
    saved = cv2.imread(str(snap))
    assert saved.shape == shown.shape and np.array_equal(saved, w.annotated)
    qtbot.keyClick(w, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    _wait_frames(qtbot, w, lambda: any((tmp_path / "out").glob("lookalike-snapshot-*.png")), 5)


def test_display_rate_and_gui_event_loop_never_stalls(live_gallery: LiveGallery, hamilton_clip: Path,  # noqa: F811
                                                      tmp_path: Path, qapp) -> None:  # type: ignore[no-untyped-def]
    """Display holds >= 25 fps while matches arrive; the GUI event loop never blocks > 50 ms."""
    from lookalike_live.bench.gui import run

    def measure() -> dict:
        res = run(hamilton_clip, settings=live_gallery.settings(threshold=THRESHOLD), store=live_gallery.store,
                  seconds=5.0)
        print("gui bench:", json.dumps(res))
        return res

    res = measure()
    if res["display_fps"] < 25.0 or res["max_stall_ms"] > 50.0:
        res = measure()  # one retry: a shared 2-core runner can preempt the whole process once
    assert res["seconds"] >= 4.5 and res["heartbeat_ticks"] > 300
    assert res["answers_during"] > 0  # matches arrived during the measurement
    assert res["display_fps"] >= 25.0, res
    assert res["max_stall_ms"] <= 50.0, res
    assert res["banners"] == {}


# --------------------------------------------------------------------------- photo mode
def _celeba_items(celeba_dir: Path, n: int):  # type: ignore[no-untyped-def]
    from live_fixtures import GALLERY_PHOTOS

    from lookalike_live.datasets import open_dataset

    items = open_dataset(celeba_dir, "celeba").items[:GALLERY_PHOTOS]
    return items[:n]


def test_photo_mode_single_group_and_drop(qtbot, make_window, live_gallery: LiveGallery,  # noqa: F811
                                          celeba_dir: Path, tmp_path: Path) -> None:
    w = make_window(live_gallery.settings(threshold=THRESHOLD), live_gallery.store, top_k=5)
    items = _celeba_items(celeba_dir, 12)
    # a photo that is in the gallery: its own identity comes first with similarity ~1
    with qtbot.waitSignal(w.bridge.photoReady, timeout=60000) as sig:
        w.open_photo(items[0].path)
    res, name = sig.args
    assert name == Path(items[0].path).name and w.mode == "photo"
    assert len(res.detections) >= 1 and res.tracks
    best = max(res.tracks, key=lambda t: t.best.score if t.best else -1)
    assert best.best is not None and best.best.identity == items[0].identity and best.best.score > 0.98
    assert best.state is TrackState.DECIDED and 1 <= len(best.top_k) <= 5
    assert len({m.identity for m in best.top_k}) == len(best.top_k)  # one row per identity
    assert w.annotated is not None and w.result is res
    _click_track(qtbot, w, best.xyxy)
    assert w.panel.isVisible() and [r.match.identity for r in w.panel.rows] == [m.identity for m in best.top_k]

    # a group photo (two gallery faces side by side), dropped as a file: every face matched
    from lookalike_live.imageio import read_image

    other = next(i for i in items[1:] if i.identity != items[0].identity)
    with qtbot.waitSignal(w.bridge.photoReady, timeout=60000) as sig:
        w.open_photo(other.path)
    other_track = max(sig.args[0].tracks, key=lambda t: t.best.score if t.best else -1)
    assert other_track.best.identity == other.identity

    def face_tile(path: str, box: tuple[float, ...]) -> np.ndarray:
        img = read_image(path)
        cx, cy, side = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 2.2 * max(box[2] - box[0], box[3] - box[1])
        x1, y1 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        crop = img[y1:int(min(img.shape[0], cy + side / 2)), x1:int(min(img.shape[1], cx + side / 2))]
        s = 320 / max(crop.shape[:2])
        crop = cv2.resize(crop, (round(crop.shape[1] * s), round(crop.shape[0] * s)), interpolation=cv2.INTER_AREA)
        tile = np.full((320, 320, 3), 90, np.uint8)
        tile[:crop.shape[0], :crop.shape[1]] = crop
        return tile

    group = tmp_path / "group.png"
    cv2.imwrite(str(group), np.hstack([face_tile(items[0].path, best.xyxy), face_tile(other.path, other_track.xyxy)]))
    with qtbot.waitSignal(w.bridge.photoReady, timeout=60000) as sig:
        w.open_dropped(str(group))
    res2, _ = sig.args
    assert len(res2.tracks) >= 2
    left = min(res2.tracks, key=lambda t: t.xyxy[0])
    right = max(res2.tracks, key=lambda t: t.xyxy[0])
    assert left.best.identity == items[0].identity and right.best.identity == other.identity
    assert left.best.score > 0.7 and right.best.score > 0.7, (left.best, right.best)
    assert not w.panel.isVisible()  # a new photo resets the selection

    # an unreadable photo: a banner, no crash
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with qtbot.waitSignal(w.bridge.photoFailed, timeout=30000):
        w.open_photo(bad)
    assert "bad.jpg" in (w.banners.text("photo") or "")


# --------------------------------------------------------------------------- error banners
def test_unreachable_rtsp_and_missing_webcam_banners(qtbot, make_window, live_gallery: LiveGallery) -> None:  # noqa: F811
    w = make_window(live_gallery.settings(), live_gallery.store)
    assert w.start("rtsp://127.0.0.1:1/cam")
    qtbot.waitUntil(lambda: "Cannot reach" in (w.banners.text("source") or ""), timeout=30000)
    text = w.banners.text("source")
    assert "rtsp://127.0.0.1:1/cam" in text and "Retrying" in text and "URL" in text
    assert "reconnecting" in w.lbl_source.text()
    w.stop()
    qtbot.waitUntil(lambda: not w.bridge.engine.running, timeout=15000)

    # a webcam that is not there (or busy): what to do, and the app keeps going
    assert w.start("webcam:63")
    qtbot.waitUntil(lambda: "Camera webcam:63 cannot be opened" in (w.banners.text("source") or ""), timeout=30000)
    assert "busy" in w.banners.text("source")
    w.stop()

    # a source that is not one: a banner at once, nothing started
    assert not w.start("/no/such/video.mp4")
    assert "not found" in w.banners.text("source")
    assert w.heartbeat.max_gap_ms < 500  # the window kept running through all of it


def test_stream_lost_mid_run_banner_then_recovers(qtbot, make_window, live_gallery: LiveGallery,  # noqa: F811
                                                 hamilton_clip: Path, tmp_path: Path) -> None:
    """A real RTSP stream that dies mid-run: the window says so (and keeps running), then the
    banner goes by itself when the stream is back."""
    from rtsp_server import RtspTestServer, missing_tools

    why = missing_tools()
    if why:
        pytest.skip(why)
    with RtspTestServer(hamilton_clip, log_dir=tmp_path) as server:
        w = make_window(live_gallery.settings(), live_gallery.store)
        assert w.start(server.url)
        qtbot.waitUntil(lambda: w.bridge.engine is not None and w.bridge.engine.latest() is not None, timeout=60000)
        assert w.banners.text("source") is None
        server.stop()  # blocks this (the GUI) thread: the heartbeat is measured from here on
        w.heartbeat.reset()
        qtbot.waitUntil(lambda: w.banners.text("source") is not None, timeout=60000)
        assert w.heartbeat.max_gap_ms < 500  # the window kept running while the stream was gone
        frames_when_lost = w.bridge.engine.latest().frame.index
        server.start()
        w.heartbeat.reset()
        qtbot.waitUntil(lambda: w.banners.text("source") is None
                        and w.bridge.engine.latest().frame.index != frames_when_lost, timeout=90000)
        assert w.heartbeat.max_gap_ms < 500
        w.stop()


def test_missing_model_banner(qtbot, make_window, live_gallery: LiveGallery, hamilton_clip: Path,  # noqa: F811
                              tmp_path: Path) -> None:
    empty_store = tmp_path / "no-models"
    empty_store.mkdir()
    w = make_window(live_gallery.settings(), empty_store)
    assert w.start(str(hamilton_clip))
    qtbot.waitUntil(lambda: w.banners.text("model") is not None, timeout=30000)
    text = w.banners.text("model")
    assert "not installed" in text and "models fetch" in text
    assert set(w.banners.banner("model").buttons) == {"Retry", "Settings…"}
    assert w.act_start.text() == "Start" and not w.bridge.is_running and w.bridge.engine is None
    # Retry with the same (missing) model fails the same way, without a crash
    w.banners.banner("model").buttons["Retry"].click()
    qtbot.waitUntil(lambda: not w.bridge.is_loading, timeout=30000)
    assert "not installed" in (w.banners.text("model") or "")


def test_milvus_down_banner_still_detects(qtbot, make_window, live_gallery: LiveGallery,  # noqa: F811
                                          hamilton_clip: Path) -> None:
    w = make_window(live_gallery.settings(milvus_uri="http://127.0.0.1:1"), live_gallery.store)
    assert w.start(str(hamilton_clip))
    qtbot.waitUntil(lambda: w.banners.text("gallery") is not None, timeout=40000)
    text = w.banners.text("gallery")
    assert "unreachable" in text and "127.0.0.1:1" in text and "docker compose" in text
    assert "unreachable" in w.lbl_milvus.text()
    # the video still plays with every face boxed
    _wait_frames(qtbot, w, lambda: w.result is not None and len(w.result.detections) > 0)
    res, shown = w.result, w.annotated
    assert not w.bridge.engine_info.search
    diff = np.abs(shown.astype(int) - res.frame.image.astype(int)).max(axis=2)
    for box in res.detections.xyxy:
        assert diff[ring_mask(diff.shape, tuple(box))].mean() > 30


def test_empty_gallery_banner_explains_how_to_build(qtbot, make_window, live_gallery: LiveGallery,  # noqa: F811
                                                    hamilton_clip: Path, tmp_path: Path) -> None:
    w = make_window(live_gallery.settings(milvus_uri=str(tmp_path / "empty" / "gallery.db")), live_gallery.store)
    assert w.start(str(hamilton_clip))
    qtbot.waitUntil(lambda: w.banners.text("gallery") is not None, timeout=40000)
    text = w.banners.text("gallery")
    assert "lookalike-live index build" in text and "does not exist" in text
    assert "0 faces" in w.lbl_gallery.text()
    _wait_frames(qtbot, w, lambda: w.result is not None and len(w.result.detections) > 0)
    assert all(t.best is None for t in w.result.tracks)
    diff = np.abs(w.annotated.astype(int) - w.result.frame.image.astype(int)).max(axis=2)
    assert diff[ring_mask(diff.shape, tuple(w.result.detections.xyxy[0]))].mean() > 30


# --------------------------------------------------------------------------- settings
def test_settings_remembered_between_runs(qtbot, tmp_path: Path, prefs: Preferences) -> None:
    base = Settings(model="mobilefacenet", backend="onnx")
    w = MainWindow(AppOptions(settings=base, output_dir=tmp_path), prefs)
    qtbot.addWidget(w)
    dlg = SettingsDialog(base, 10, True, ["mobilefacenet", "facenet-vggface2"], w)
    dlg.detector.setCurrentText("short")
    dlg.threshold.setValue(0.42)
    dlg.max_faces.setValue(5)
    dlg.top_k.setValue(7)
    dlg.uri.setText("http://milvus.example:19530")
    dlg.loop.setChecked(False)
    values = dlg.values()
    assert isinstance(values, DialogValues) and values.settings.detector == "short"
    w.apply_settings(values)
    assert w.bridge.settings == values.settings and w.bridge.top_k == 7
    w.close()

    # a new run (new QSettings object on the same file) finds them; flags still win
    again = Preferences(QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat))
    s = again.resolve({})
    assert (s.detector, s.threshold, s.max_faces, s.milvus_uri, s.model) == (
        "short", 0.42, 5, "http://milvus.example:19530", "mobilefacenet")
    assert again.top_k() == 7 and again.loop_files() is False
    assert again.resolve({"threshold": 0.3, "detector": None}).threshold == 0.3
    # the CLI maps flags the same way
    args = app_parser().parse_args(["app", "--detector", "full", "--top-k", "3"])
    from lookalike_live.gui.cli import options_from_args

    opts = options_from_args(args, again)
    assert opts.settings.detector == "full" and opts.settings.threshold == 0.42 and opts.top_k == 3


def test_secrets_never_reach_the_settings_file(prefs: Preferences, tmp_path: Path) -> None:
    secret = "hunter2"
    prefs.add_history(f"rtsp://admin:{secret}@10.0.0.5/stream?token={secret}&ch=1")
    prefs.save(Settings(milvus_uri=f"http://root:{secret}@milvus:19530"), 10, True)
    assert prefs.history()[0] == "rtsp://admin@10.0.0.5/stream?ch=1"
    text = (tmp_path / "gui.ini").read_text()
    assert secret not in text and "http://root@milvus:19530" in text


def test_app_without_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    args = app_parser().parse_args(["app", "--source", "0"])
    with pytest.raises(ConfigError, match="xvfb-run"):
        args.func(args)
    args = app_parser().parse_args(["app", "--screenshot", "x.png"])
    with pytest.raises(ConfigError, match="--frames"):
        args.func(args)


# --------------------------------------------------------------------------- the real app, as a command
def _check_screenshot(info: dict, shot: Path, clip: Path) -> None:
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (info["screenshot_size"][1], info["screenshot_size"][0])
    assert img.std() > 20  # not blank
    x, y, vw, vh = info["video_rect"]
    iw, ih = info["image_size"]
    crop = img[int(round(y)):int(round(y + vh)), int(round(x)):int(round(x + vw))]
    video = cv2.resize(crop, (iw, ih), interpolation=cv2.INTER_AREA).astype(int)
    raw = clip_frame(clip, info["frame_index"]).astype(int)
    diff = np.abs(video - raw).max(axis=2)
    tracks = [t for t in info["tracks"] if t["state"] != "lost"]
    assert tracks, info
    boxes = [tuple(t["xyxy"]) for t in tracks]
    # the video is there, aligned: away from the overlay it matches the raw frame
    assert np.median(diff[far_from_boxes(diff.shape, boxes, 90)]) < 12
    for t in tracks:  # every box outline drawn
        assert diff[ring_mask(diff.shape, tuple(t["xyxy"]))].mean() > 30, t
    shown_thumbs = 0
    for g in info["tags"]:  # the matched photo where the layout put it: not the video there
        if g["thumb_rect"] is None:
            continue
        x, y, s, _ = g["thumb_rect"]
        if diff[y:y + s, x:x + s].mean() > 25:
            shown_thumbs += 1
    assert shown_thumbs >= 1, info
    labels = {t["id"]: t["label"] for t in tracks}
    assert any(t["identity"] and t["name"] in labels[t["id"]] for t in tracks if t["state"] in ("decided", "unknown"))


def _run_app_cli(prefix: list[str], gallery: LiveGallery, clip: Path, tmp_path: Path, env: dict[str, str]) -> dict:
    shot = tmp_path / "shot.png"
    cmd = prefix + app_cli_command() + [
        "app", "--source", str(clip), "--model", "mobilefacenet", "--backend", "onnx",
        "--milvus-uri", gallery.uri, "--collection", gallery.collection, "--threshold", str(THRESHOLD),
        "--models-dir", str(gallery.store), "--gui-settings", str(tmp_path / "gui.ini"),
        "--output-dir", str(tmp_path / "out"), "--no-hud",
        "--screenshot", str(shot), "--frames", "75", "--quit-after", "90", "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)
    if proc.returncode != 0 and "Could not load the Qt platform plugin" in proc.stderr:
        pytest.skip(f"Qt cannot open the display here: {proc.stderr.strip().splitlines()[0]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["frames_shown"] >= 75 and summary["screenshot"] == str(shot)
    info = json.loads(shot.with_suffix(".json").read_text())
    assert info == summary["capture"] and info["banners"] == {}
    _check_screenshot(info, shot, clip)
    return summary


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")  # never the user's Qt settings
    return env


def test_app_command_screenshot_under_xvfb(gallery_copy: LiveGallery, hamilton_clip: Path,  # noqa: F811
                                           tmp_path: Path) -> None:
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        pytest.skip("xvfb-run not found (apt-get install xvfb): the offscreen variant below still runs the app")
    summary = _run_app_cli([xvfb, "-a", "-s", "-screen 0 1600x1000x24"], gallery_copy, hamilton_clip, tmp_path,
                           _clean_env(tmp_path))
    print("app under xvfb:", {k: summary[k] for k in ("frames_shown", "display_fps", "max_stall_ms")})


def test_app_command_screenshot_offscreen(gallery_copy: LiveGallery, hamilton_clip: Path,  # noqa: F811
                                          tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    env["QT_QPA_PLATFORM"] = "offscreen"
    _run_app_cli([], gallery_copy, hamilton_clip, tmp_path, env)


# --------------------------------------------------------------------------- what the window shows, from its pixels
def _qt_reference(text: str, size: int, bold: bool, family: str, scale: float) -> np.ndarray:
    """``text`` drawn white on black by Qt in this process (its own painter and canvas), at the window's
    scale: the reference the window's pixels are compared with. Gray (H, W) uint8."""
    from PyQt6.QtCore import QRectF
    from PyQt6.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter

    f = QFont(family)
    f.setPixelSize(size)
    f.setBold(bold)
    f.setHintingPreference(QFont.HintingPreference.PreferNoHinting)
    fm = QFontMetricsF(f)
    w, h = fm.horizontalAdvance(text) + 2, max(fm.height(), size * 1.25)
    img = QImage(int(np.ceil(w * scale)) + 2, int(np.ceil(h * scale)) + 2, QImage.Format.Format_RGB32)
    img.fill(QColor(0, 0, 0))
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
    p.scale(scale, scale)
    p.setFont(f)
    p.setPen(QColor(255, 255, 255))
    p.drawText(QRectF(0, 0, w, h), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), text)
    p.end()
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    arr = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)[:, :img.width(), :3]
    gray = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_BGR2GRAY)
    ys, xs = np.nonzero(gray > 40)
    return gray[max(0, ys.min() - 1):ys.max() + 2, max(0, xs.min() - 1):xs.max() + 2]  # the ink, tight


def _find(shot_gray: np.ndarray, ref: np.ndarray, x: float, y: float, slack: int = 10) -> float:
    """Best normalised correlation of ``ref`` within ``slack`` px of (x, y) in the screenshot."""
    h, w = ref.shape
    x0, y0 = max(0, int(x) - slack), max(0, int(y) - slack)
    region = shot_gray[y0:int(y) + h + 2 * slack, x0:int(x) + w + 2 * slack]
    if region.shape[0] < h or region.shape[1] < w:
        return -1.0
    return float(cv2.matchTemplate(region, ref, cv2.TM_CCOEFF_NORMED).max())


def test_window_pixels_show_name_similarity_and_photo_for_every_answered_face(
        unicode_gallery: LiveGallery, hamilton_clip: Path, tmp_path: Path, celeba_dir: Path, qapp) -> None:  # noqa: F811  # type: ignore[no-untyped-def]
    """The real app under Xvfb, on the clip, against a gallery whose names are in four scripts: in the
    X server's pixels of the window, every answered face has its celebrity's photo (the gallery's
    thumbnail), its name (Latin accents, Icelandic, Cyrillic, CJK: drawn, not "?") and its similarity."""
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        pytest.skip("xvfb-run not found (apt-get install xvfb)")
    from lookalike_live.gallery import Gallery

    src = Path(unicode_gallery.uri).parent
    shutil.copytree(src, tmp_path / "g")
    uri = str(tmp_path / "g" / "gallery.db")
    shot = tmp_path / "shot.png"
    cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24"] + app_cli_command() + [
        "app", "--source", str(hamilton_clip), "--model", "mobilefacenet", "--backend", "onnx",
        "--milvus-uri", uri, "--collection", unicode_gallery.collection, "--threshold", str(THRESHOLD),
        "--models-dir", str(unicode_gallery.store), "--gui-settings", str(tmp_path / "gui.ini"),
        "--output-dir", str(tmp_path / "out"), "--detector", "full", "--no-loop",
        "--screenshot", str(shot), "--frames", "225", "--quit-after", "90", "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=_clean_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(shot.with_suffix(".json").read_text())
    assert info["grab"] == "screen"  # the X server's pixels, not a widget render
    img = cv2.imread(str(shot))
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    vx, vy, vw, _ = info["video_rect"]
    scale = vw / info["image_size"][0]
    names = unicode_names(celeba_dir)
    answered = [g for g in info["tags"] if g["look"] in ("strong", "faint")]
    assert len(answered) >= 2, info["tags"]  # a frame of the audience (several faces)
    tracks = {t["id"]: t for t in info["tracks"]}
    with Gallery(uri, collection=unicode_gallery.collection) as gallery:
        thumbs = gallery.thumbnails({tracks[g["track"]]["face_id"] for g in answered})
    scripts = set()
    for g in answered:
        t = tracks[g["track"]]
        expected_name = names[t["identity"]]
        assert g["name"] == expected_name and g["level"] == 0, g  # every answered face: with its photo
        texts = {i["role"]: i for i in g["texts"]}
        # the name, in the window's pixels, reads as the name rendered independently (not as "???")
        item = texts["name"]
        assert item["text"] == expected_name
        at = (vx + item["x"] * scale, vy + item["y"] * scale)
        ref = _qt_reference(expected_name, item["size"], item["bold"], item["family"], scale)
        score = _find(gray, ref, *at)
        wrong = _find(gray, _qt_reference("?" * len(expected_name), item["size"], item["bold"], item["family"],
                                          scale), *at)
        assert score > 0.8 and score > wrong + 0.3, (expected_name, score, wrong)
        scripts.add(UNICODE_NAMES.index(expected_name))
        # the similarity, as a percentage
        item = texts["percent"]
        assert item["text"] == f"{round(min(max(t['score'], 0.0), 1.0) * 100)}%"
        ref = _qt_reference(item["text"], item["size"], item["bold"], item["family"], scale)
        assert _find(gray, ref, vx + item["x"] * scale, vy + item["y"] * scale) > 0.8, item
        # the matched photo: the gallery's thumbnail of the matched face, where the tag puts it
        data = thumbs[t["face_id"]]
        assert data, t
        x, y, s, _ = g["thumb_rect"]
        px, py, ps = int(round(vx + x * scale)), int(round(vy + y * scale)), int(round(s * scale))
        photo = cv2.resize(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), (ps, ps),
                           interpolation=cv2.INTER_AREA)
        shown = img[py + 2:py + ps - 2, px + 2:px + ps - 2].astype(np.float32)
        corr = np.corrcoef(shown.ravel(), photo[2:-2, 2:-2].astype(np.float32).ravel())[0, 1]
        assert corr > 0.8, (t, corr)
    print(f"window: {len(answered)} answered faces checked, scripts {sorted(scripts)}, frame {info['frame_index']}")


# --------------------------------------------------------------------------- habits of a live camera app
def test_pause_keys_card_fullscreen_open_set_and_remembered_view(qtbot, make_window, live_gallery: LiveGallery,  # noqa: F811
                                                                 hamilton_clip: Path, tmp_path: Path,
                                                                 prefs: Preferences) -> None:
    assert prefs.geometry() is None
    w = make_window(live_gallery.settings(threshold=THRESHOLD), live_gallery.store)
    assert w.start(str(hamilton_clip))
    _wait_frames(qtbot, w, lambda: w.result is not None and any(t.best is not None for t in w.result.tracks))
    # first open: the window is sized to the video: a 640x360 clip at 1x-1.5x (960x540 at most), the whole
    # window within 90 % of the screen (the default size before the first frame leaves ~600 px of video)
    avail = w.screen().availableGeometry()
    assert 360 <= w.video.height() <= 541 and w.height() <= avail.height() * 0.9 + 1, (w.size(), avail)
    assert w.video.width() >= w.video.height() * 16 / 9 - 2
    assert w.video.hasFocus()  # single-key shortcuts go to the window, not into the source field

    # Space pauses: the file stops reading (no frame skipped when it resumes), the display freezes
    qtbot.keyClick(w.video, Qt.Key.Key_Space)
    assert w.paused and w.bridge.engine.capture.paused and w.act_pause.text() == "Resume"
    frozen = w.result.frame.index
    qtbot.wait(1500)
    assert w.result.frame.index == frozen
    qtbot.keyClick(w.video, Qt.Key.Key_Space)
    assert not w.paused and not w.bridge.engine.capture.paused
    _wait_frames(qtbot, w, lambda: w.result.frame.index > frozen, 10)
    assert w.result.frame.index - frozen < 20  # resumed where it stopped (1.5 s at 30 fps would be 45)

    # S: snapshot; C: lookalike card (PNG, each face beside its celebrity)
    qtbot.keyClick(w.video, Qt.Key.Key_S)
    _wait_frames(qtbot, w, lambda: any((tmp_path / "out").glob("lookalike-snapshot-*.png")), 5)
    _wait_frames(qtbot, w, lambda: any(t.best is not None and t.state is not TrackState.LOST
                                       for t in w.result.tracks), 20)
    qtbot.keyClick(w.video, Qt.Key.Key_C)
    cards = list((tmp_path / "out").glob("lookalike-card-*.png"))
    assert len(cards) == 1
    card = cv2.imread(str(cards[0]))
    assert card is not None and card.shape[1] == 760 and card.shape[0] > 300

    # F: full screen, Esc leaves it (and a second Esc closes the panel)
    qtbot.keyClick(w.video, Qt.Key.Key_F)
    _wait_frames(qtbot, w, lambda: bool(w.windowState() & Qt.WindowState.WindowFullScreen), 5)
    qtbot.keyClick(w.video, Qt.Key.Key_Escape)
    _wait_frames(qtbot, w, lambda: not w.windowState() & Qt.WindowState.WindowFullScreen, 5)

    # O: open set ("unknown" below the threshold), remembered
    assert not w.annotator.open_set
    qtbot.keyClick(w.video, Qt.Key.Key_O)
    assert w.annotator.open_set and prefs.flag("open_set", False)
    _wait_frames(qtbot, w, lambda: w.result is not None and w.tags is not None, 5)
    assert all(g.look.value != "faint" for g in w.tags)
    w.stop()
    _wait_frames(qtbot, w, lambda: not w.bridge.is_running and not w.bridge.engine.running, 15)
    size = w.size()
    w.close()
    assert prefs.geometry() is not None
    # a second window remembers the size, open set and (M) the mirror choice
    w2 = make_window(live_gallery.settings(threshold=THRESHOLD), live_gallery.store)
    assert abs(w2.width() - size.width()) <= 4 and abs(w2.height() - size.height()) <= 4, (w2.size(), size)
    assert w2.annotator.open_set and w2.mirror_webcam
    w2.toggle_mirror()
    assert not prefs.flag("mirror_webcam", True)


def test_webcam_preview_is_mirrored_with_readable_labels_and_clicks(qtbot, make_window, live_gallery: LiveGallery,  # noqa: F811
                                                                     hamilton_clip: Path) -> None:
    """No camera here: the window shows a real frame of the clip as a webcam source would arrive."""
    from lookalike_live.capture import parse_source
    from lookalike_live.pipeline import Engine
    from lookalike_live.types import Frame

    settings = live_gallery.settings(threshold=THRESHOLD)
    with Engine.from_settings(settings, store=live_gallery.store) as engine:
        res = engine.process(Frame("webcam:0", 0, 0.0, clip_frame(hamilton_clip, 200)))
    assert res.tracks
    w = make_window(settings, live_gallery.store, mirror=True)
    w.mode = "live"
    w.bridge._source = parse_source("webcam:0")  # noqa: SLF001 - what start() records for a webcam
    w.show_result(res)
    assert w.mirrored
    raw = res.frame.image
    assert np.array_equal(w.shown_image, raw[:, ::-1])
    track = max(res.tracks, key=lambda t: t.xyxy[2] - t.xyxy[0])
    tag = next(g for g in w.tags if g.track_id == track.track_id)
    x1, _, x2, _ = track.xyxy
    assert tag.box[0] == pytest.approx(640 - x2, abs=1) and tag.box[2] == pytest.approx(640 - x1, abs=1)
    # a click on the face as shown (mirrored) selects it
    _click_track(qtbot, w, tag.box)
    assert w.selected == track.track_id
    # M: the plain view again
    w.toggle_mirror()
    assert not w.mirrored and np.array_equal(w.shown_image, raw)


def test_qt_painter_bad_input_and_a_crowd(qapp) -> None:  # type: ignore[no-untyped-def]
    """Qt paints a broken photo as a grey square, 16 faces and 200-character names without error."""
    from lookalike_live.gallery import GalleryMatch
    from lookalike_live.gui.painter import QtOverlay, render_bgr
    from lookalike_live.overlay import Annotator
    from lookalike_live.types import FaceDetections, Frame, FrameResult, Track

    tracks = [Track(k, (10.0 + (k % 8) * 80, 20.0 + (k // 8) * 170, 60.0 + (k % 8) * 80, 70.0 + (k // 8) * 170),
                    GalleryMatch(str(k), "Ж" * 200 if k % 3 else "李小龙", 0.5, "x.jpg", k, "celeba",
                                 b"\xff\xd8 broken"), state=TrackState.DECIDED) for k in range(16)]
    image = np.full((360, 640, 3), 50, np.uint8)
    dets = FaceDetections(np.array([t.xyxy for t in tracks], np.float32), np.ones(16, np.float32),
                          np.zeros((16, 6, 2), np.float32))
    res = FrameResult(Frame("t", 0, 0.0, image), dets, tuple(tracks))
    overlay = QtOverlay(Annotator())
    tags = overlay.annotator.layout(res, overlay.measure)
    out = render_bgr(image, tags, overlay)
    assert out.shape == image.shape
    assert all(g.rect is not None for g in tags)
    one = FrameResult(res.frame, dets[np.array([0])], tracks[:1])
    tags = overlay.annotator.layout(one, overlay.measure)
    out = render_bgr(image, tags, overlay)
    with_photo = [g for g in tags if g.thumb_rect is not None]
    assert with_photo
    for g in with_photo:
        x, y, s, _ = g.thumb_rect
        assert tuple(out[y + s // 2, x + s // 2]) == (90, 90, 90)


def test_gallery_problems_by_type_and_a_dropped_photo_search_says_why(live_gallery: LiveGallery,  # noqa: F811
                                                                       hamilton_clip: Path, tmp_path: Path) -> None:
    import concurrent.futures

    from lookalike_live.errors import GalleryError
    from lookalike_live.gallery import Gallery
    from lookalike_live.gui.session import PhotoMatcher, load_engine

    other = str(tmp_path / "other.db")
    with Gallery(other, collection="faces") as g:  # a gallery built with another model
        g.ensure(dim=128, model="some-other-model")
        g.upsert_faces([1], np.ones((1, 128), np.float32), ["7"], ["A"], "ds", ["a.jpg"])
        g.flush()
    loaded = load_engine(live_gallery.settings(milvus_uri=other), store=live_gallery.store)
    try:
        assert loaded.gallery_problem is not None and loaded.gallery_problem.kind == "mismatch"
        assert "some-other-model" in loaded.gallery_problem.message
    finally:
        loaded.close()
    loaded = load_engine(live_gallery.settings(), store=live_gallery.store)
    matcher = PhotoMatcher(loaded, store=live_gallery.store)
    try:
        class Dropping:  # the matcher's queue overflowed: its future comes back cancelled
            def submit(self, *a, **k):  # type: ignore[no-untyped-def]
                f: concurrent.futures.Future = concurrent.futures.Future()
                f.cancel()
                return f

        loaded.engine.matcher = Dropping()
        with pytest.raises(GalleryError, match="dropped"):
            matcher.match(clip_frame(hamilton_clip, 100))
    finally:
        matcher.close()
        loaded.engine.matcher = None
        loaded.close()


def test_window_draws_names_in_every_script(qtbot, make_window, live_gallery: LiveGallery, tmp_path: Path,  # noqa: F811
                                            qapp) -> None:  # type: ignore[no-untyped-def]
    """The window's own pixels (app.capture_window) hold each name as Qt renders it, for Latin with
    accents, Icelandic, Cyrillic and CJK at once (the Xvfb test above sees whichever of them the clip's
    faces match)."""
    from lookalike_live.gallery import GalleryMatch
    from lookalike_live.gui.app import capture_window
    from lookalike_live.types import FaceDetections, Frame, FrameResult, Track

    thumb = cv2.imencode(".jpg", np.full((96, 96, 3), 120, np.uint8))[1].tobytes()
    boxes = [(40.0, 40.0, 110.0, 110.0), (360.0, 40.0, 430.0, 110.0), (40.0, 220.0, 110.0, 290.0),
             (360.0, 220.0, 430.0, 290.0)]
    tracks = tuple(Track(i + 1, b, GalleryMatch(str(i), name, 0.6, "x.jpg", i, "celeba", thumb),
                         state=TrackState.DECIDED) for i, (b, name) in enumerate(zip(boxes, UNICODE_NAMES, strict=True)))
    image = np.full((360, 640, 3), 40, np.uint8)
    dets = FaceDetections(np.array(boxes, np.float32), np.ones(4, np.float32), np.zeros((4, 6, 2), np.float32))
    w = make_window(live_gallery.settings(), live_gallery.store)
    w.mode = "photo"
    w.show_result(FrameResult(Frame("photo", 0, 0.0, image), dets, tracks))
    qtbot.wait(50)
    info = capture_window(w, tmp_path / "w.png")
    gray = cv2.cvtColor(cv2.imread(str(tmp_path / "w.png")), cv2.COLOR_BGR2GRAY)
    vx, vy, vw, _ = info["video_rect"]
    scale = vw / 640
    seen = set()
    for g in info["tags"]:
        item = next(i for i in g["texts"] if i["role"] == "name")
        ref = _qt_reference(item["text"], item["size"], item["bold"], item["family"], scale)
        # what OpenCV's putText would have shown: every non-ASCII letter as "?"
        ascii_text = item["text"].encode("ascii", "replace").decode()
        wrong = _qt_reference(ascii_text, item["size"], item["bold"], item["family"], scale)
        at = (vx + item["x"] * scale, vy + item["y"] * scale)
        score, bad = _find(gray, ref, *at), _find(gray, wrong, *at)
        print(item["text"], round(score, 3), "as ASCII:", round(bad, 3))
        assert score > 0.85 and score > bad + 0.05, (item["text"], score, bad)
        seen.add(next(n for n in UNICODE_NAMES if n.startswith(item["text"].rstrip("…"))))  # long ones elided
    assert seen == set(UNICODE_NAMES)
