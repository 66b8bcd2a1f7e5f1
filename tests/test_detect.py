"""FaceDetector on real MediaPipe BlazeFace models, real photos (CelebA fixture) and real video.

Run times on a shared 2-core CPU: the whole file ~14 s, of which the 1,000-photo CelebA
yield ~8 s and the Hamilton clip comparison ~6 s (neither is marked slow).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lookalike_live.detect import FaceDetector, merge_passes, nms, plausible_keypoints, same_face, tile_layout
from lookalike_live.errors import ConfigError, ModelNotInstalledError, ShapeError
from lookalike_live.types import FaceDetections

log = logging.getLogger(__name__)

FRONTAL = "010801.jpg"  # one large frontal face


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, path
    return img


def _clip_frames(path: Path, limit: int | None = None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert frames, f"cannot decode {path}"
    return frames


@pytest.fixture(scope="module")
def frontal(celeba_dir: Path) -> np.ndarray:
    return _read(celeba_dir / "Img" / "img_celeba" / FRONTAL)


@pytest.fixture(scope="module")
def detector(model_store: Path):
    with FaceDetector("full", store=model_store) as det:
        yield det


@pytest.fixture(scope="module")
def clip_frames(hamilton_clip: Path) -> list[np.ndarray]:
    return _clip_frames(hamilton_clip)


# -- construction and settings ---------------------------------------------------------------


def test_missing_model_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalledError, match="lookalike-live models fetch blazeface-full"):
        FaceDetector("full", store=tmp_path)
    with pytest.raises(ModelNotInstalledError, match="blazeface-short"):
        FaceDetector("blazeface-short", store=tmp_path)


def test_embedder_is_not_a_detector(model_store: Path) -> None:
    with pytest.raises(ConfigError, match="not a face detector"):
        FaceDetector("mobilefacenet", store=model_store)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_score": 1.5},
        {"min_suppression": -0.1},
        {"running_mode": "stream"},
        {"small_faces": "zoom"},
        {"max_faces": 0},
        {"tile_grid": (0, 1)},
        {"tile_overlap": 1.0},
        {"tile_min_score": 2.0},
        {"first": "short", "first_min_size": 1.5},
        {"first": "short", "first_min_score": -0.5},
    ],
)
def test_invalid_settings_raise_config_error(model_store: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        FaceDetector("full", store=model_store, **kwargs)


def test_construction_is_cheap_and_close_is_idempotent(model_store: Path, frontal: np.ndarray) -> None:
    t0 = time.perf_counter()
    det = FaceDetector("short", store=model_store, small_faces="tile", fallback="full")
    assert time.perf_counter() - t0 < 0.5  # no MediaPipe task yet
    det.close()  # closing before any use is fine
    assert len(det.detect(frontal)) >= 1  # detect prepares lazily
    det.close()
    det.close()
    assert len(det.detect(frontal)) >= 1  # and prepares again after close


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((64, 64, 3), np.float32),
        np.zeros((0, 64, 3), np.uint8),
        [[0, 0, 0]],
    ],
    ids=["grey", "bgra", "float", "empty", "list"],
)
def test_rejects_non_bgr_uint8(detector: FaceDetector, image) -> None:
    with pytest.raises(ShapeError, match=r"BGR uint8 image of shape \(H, W, 3\)"):
        detector.detect(image)


# -- detections on real images ---------------------------------------------------------------


def test_detects_real_face_with_keypoints_in_mediapipe_order(
    detector: FaceDetector, frontal: np.ndarray
) -> None:
    dets = detector.detect(frontal)
    assert isinstance(dets, FaceDetections)
    assert len(dets) >= 1
    assert dets.xyxy.dtype == dets.score.dtype == dets.keypoints.dtype == np.float32
    assert dets.keypoints.shape == (len(dets), 6, 2)
    h, w = frontal.shape[:2]
    assert (dets.xyxy[:, [0, 2]] >= 0).all() and (dets.xyxy[:, [0, 2]] <= w).all()
    assert (dets.xyxy[:, [1, 3]] >= 0).all() and (dets.xyxy[:, [1, 3]] <= h).all()
    assert np.all(np.diff(dets.score) <= 0), "best score first"
    x0, y0, x1, y1 = dets.xyxy[0]
    kp = dets.keypoints[0]
    # eyes, nose, mouth inside the box; subject's right eye (index 0) on the image's left
    assert (
        (kp[:4, 0] > x0).all()
        and (kp[:4, 0] < x1).all()
        and (kp[:4, 1] > y0).all()
        and (kp[:4, 1] < y1).all()
    )
    assert kp[0, 0] < kp[2, 0] < kp[1, 0]
    assert max(kp[0, 1], kp[1, 1]) < kp[2, 1] < kp[3, 1]  # eyes above nose above mouth
    # ears (indices 4, 5) on the outside of the eyes
    assert kp[4, 0] < kp[0, 0] and kp[5, 0] > kp[1, 0]


def test_mirrored_image_swaps_the_eyes(detector: FaceDetector, frontal: np.ndarray) -> None:
    a = detector.detect(frontal)
    b = detector.detect(np.ascontiguousarray(frontal[:, ::-1]))
    w = frontal.shape[1]
    # the same physical eye (subject's right) lands at the mirror position of keypoint 0
    assert abs((w - b.keypoints[0, 0, 0]) - a.keypoints[0, 1, 0]) < 0.05 * w
    assert abs((w - b.keypoints[0, 1, 0]) - a.keypoints[0, 0, 0]) < 0.05 * w


def test_boxes_are_clipped_to_the_image(detector: FaceDetector, frontal: np.ndarray) -> None:
    box = detector.detect(frontal).xyxy[0]
    # cut the photo through the middle of the face: the face now leaves the image
    cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
    for part in (frontal[:, cx - 10 :], frontal[cy - 10 :, :]):
        part = np.ascontiguousarray(part)
        dets = detector.detect(part)
        h, w = part.shape[:2]
        assert (dets.xyxy >= 0).all()
        assert (dets.xyxy[:, [0, 2]] <= w).all() and (dets.xyxy[:, [1, 3]] <= h).all()


def test_no_face_gives_empty_detections(detector: FaceDetector) -> None:
    dets = detector.detect(np.full((240, 320, 3), 128, np.uint8))
    assert len(dets) == 0
    assert dets.xyxy.shape == (0, 4) and dets.keypoints.shape == (0, 6, 2)


def test_max_faces_keeps_the_best(model_store: Path, clip_frames: list[np.ndarray]) -> None:
    with (
        FaceDetector("full", store=model_store) as det_all,
        FaceDetector("full", store=model_store, max_faces=1) as det1,
    ):
        for frame in clip_frames[210:230]:
            everything, one = det_all.detect(frame), det1.detect(frame)
            assert len(one) == min(1, len(everything))
            if len(everything):
                assert one.score[0] == pytest.approx(everything.score.max())


def test_short_range_model(model_store: Path, frontal: np.ndarray) -> None:
    with FaceDetector("short", store=model_store) as det:
        assert det.model_spec.name == "blazeface-short"
        assert len(det.detect(frontal)) >= 1


def _same(a: FaceDetections, b: FaceDetections) -> bool:
    return len(a) == len(b) and np.allclose(a.xyxy, b.xyxy) and np.allclose(a.keypoints, b.keypoints)


def test_first_pass_keeps_a_big_sure_face_and_leaves_the_rest_to_the_main_model(
    model_store: Path, frontal: np.ndarray, clip_frames: list[np.ndarray]
) -> None:
    """``first``: the short-range model's faces when its best face is big and sure, else the main model's."""
    with (FaceDetector("short", store=model_store) as short, FaceDetector("full", store=model_store) as full,
          FaceDetector("full", store=model_store, fallback="short", first="short") as quick):
        assert set(quick._tasks) == {"main", "first"}  # the fallback is the first model: no second copy
        big = short.detect(frontal)
        assert len(big) and big.side.max() >= 0.2 * max(frontal.shape[:2]) and big.score.max() >= 0.9
        assert _same(quick.detect(frontal), big) and not _same(big, full.detect(frontal))
        # video frames with small faces: the main (full-range) model's answer
        for frame in clip_frames[::40]:
            assert _same(quick.detect(frame), full.detect(frame))
        # a black image: neither finds a face, and the fallback reuses the first pass's (empty) answer
        assert len(quick.detect(np.zeros((300, 300, 3), np.uint8))) == 0
    # a face that must fill more of the photo, or score higher, than it does: the main model
    with FaceDetector("full", store=model_store, first="short", first_min_size=0.99) as strict:
        assert _same(strict.detect(frontal), full.detect(frontal))
    with FaceDetector("full", store=model_store, first="short", first_min_score=1.0) as strict:
        assert _same(strict.detect(frontal), full.detect(frontal))
        assert "first='blazeface-short'" in repr(strict)


def test_video_mode_survives_bad_timestamps(model_store: Path, clip_frames: list[np.ndarray]) -> None:
    frames = clip_frames[:8]
    stamps = [0.0, 0.0, -5.0, None, 33.4, 33.3, float("nan"), 1e3]
    with (
        FaceDetector("full", store=model_store, running_mode="video", small_faces="tile") as vid,
        FaceDetector("full", store=model_store, small_faces="tile") as img,
    ):
        for frame, ts in zip(frames, stamps, strict=True):
            v, i = vid.detect(frame, ts), img.detect(frame)
            assert len(v) == len(i)
            np.testing.assert_allclose(v.xyxy, i.xyxy, atol=2.0)
        # timestamps keep increasing across many calls without any
        for frame in clip_frames[8:20]:
            vid.detect(frame)


# -- tiling and merging helpers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("h", "w", "grid"), [(360, 640, (2, 1)), (360, 640, (3, 2)), (1080, 1920, (4, 3)), (640, 360, (2, 1))]
)
def test_tile_layout_covers_the_frame_with_overlapping_squares(h: int, w: int, grid: tuple[int, int]) -> None:
    tiles = tile_layout(h, w, grid, overlap=0.2)
    cols, rows = grid if w >= h else grid[::-1]
    assert len(tiles) == cols * rows
    covered = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in tiles:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert x1 - x0 == y1 - y0, "square tiles"
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    xs = sorted({t[0] for t in tiles})
    side = tiles[0][2] - tiles[0][0]
    if len(xs) > 1:
        assert all(b - a <= 0.8 * side + 1 for a, b in zip(xs, xs[1:], strict=False)), "overlap >= 20 %"


def test_same_face_and_nms() -> None:
    boxes = np.array(
        [
            [100, 100, 150, 150],  # face A
            [102, 101, 152, 149],  # A again (IoU high)
            [125, 95, 190, 160],  # A boxed differently: IoU 0.23, but A's centre lies inside it
            [110, 110, 130, 130],  # a fragment inside A (IoMin 1)
            [300, 100, 350, 150],  # face B
            [20, 20, 400, 400],  # a huge box around everything: different size, not the same face
        ],
        np.float32,
    )
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.85, 0.95], np.float32)
    assert same_face(boxes[0], boxes[1:4]).all()
    assert not same_face(boxes[0], boxes[4:]).any()
    keep = nms(boxes, score)
    assert keep.tolist() == [5, 0, 4]


def test_merge_passes_only_adds_faces() -> None:
    main = np.array([[100, 100, 150, 150], [200, 100, 260, 160]], np.float32)
    extra = np.array(
        [[101, 99, 151, 151], [400, 50, 420, 70], [401, 51, 421, 71], [180, 90, 280, 170]], np.float32
    )
    score = np.array([0.99, 0.7, 0.6, 0.99], np.float32)
    # duplicates of main faces are dropped even with higher scores; duplicates among extras merged
    assert merge_passes(main, extra, score).tolist() == [1]
    assert merge_passes(np.zeros((0, 4), np.float32), extra[1:3], score[1:3]).tolist() == [0]
    assert merge_passes(main, extra[:0], score[:0]).shape == (0,)


def test_plausible_keypoints(detector: FaceDetector, frontal: np.ndarray) -> None:
    dets = detector.detect(frontal)
    assert plausible_keypoints(dets.xyxy, dets.keypoints).all()
    flat = dets.keypoints.copy()
    flat[:, 3, 1] = flat[:, 0, 1]  # mouth on the eye line: not a face
    assert not plausible_keypoints(dets.xyxy, flat).any()


# -- done-when criteria ----------------------------------------------------------------------


@pytest.mark.slow
def test_celeba_yield_at_least_99_percent(model_store: Path, celeba_dir: Path) -> None:
    """>= 99 % of the 1,000 in-the-wild CelebA photos yield a face (full range, short-range fallback)."""
    files = sorted((celeba_dir / "Img" / "img_celeba").glob("*.jpg"))
    assert len(files) == 1000
    found = 0
    t0 = time.perf_counter()
    with FaceDetector("full", store=model_store, fallback="short") as det:
        for path in files:
            found += len(det.detect(_read(path))) > 0
    log.info("CelebA yield %d/%d in %.1f s", found, len(files), time.perf_counter() - t0)
    assert found / len(files) >= 0.99


@pytest.mark.slow
def test_tiling_finds_at_least_as_many_faces_on_the_clip(
    model_store: Path, clip_frames: list[np.ndarray]
) -> None:
    """On the Hamilton clip (640x360, 275 frames) small_faces='tile' finds >= the full-range faces/frame."""
    assert len(clip_frames) == 275 and clip_frames[0].shape == (360, 640, 3)
    with (
        FaceDetector("full", store=model_store, running_mode="video") as full,
        FaceDetector("full", store=model_store, running_mode="video", small_faces="tile") as tiled,
    ):
        n_full, n_tile = [], []
        for i, frame in enumerate(clip_frames):
            ts = i * 1000 / 29.97
            n_full.append(len(full.detect(frame, ts)))
            n_tile.append(len(tiled.detect(frame, ts)))
    log.info("faces/frame: full %.3f, full+tiles %.3f", np.mean(n_full), np.mean(n_tile))
    assert np.mean(n_tile) >= np.mean(n_full)
    # the tile passes only add faces: never fewer on any frame
    assert all(t >= f for t, f in zip(n_tile, n_full, strict=True))
    assert np.mean(n_tile) > np.mean(n_full) + 0.1  # and they do find the audience's small faces


def test_bench_runs_and_is_json_serialisable(model_store: Path, hamilton_clip: Path) -> None:
    import json

    from lookalike_live.bench.detect import run

    report = run(model_store, hamilton_clip, frames=12, align_repeats=3)
    json.dumps(report)
    assert report["frames"] == 12 and report["frame_size"] == [640, 360]
    assert set(report["detection"]) == {"short", "full", "full+tile", "full_upscaled_2x"}
    for entry in report["detection"].values():
        assert entry["ms_mean"] > 0 and entry["faces_per_frame"] >= 0
    assert report["detection"]["full+tile"]["tiles_xyxy"] == [[0, 0, 360, 360], [280, 0, 640, 360]]
    for name in ("mobilefacenet", "facenet-casia-webface"):
        assert report["alignment"][name]["faces_per_frame"] == 5
        assert report["alignment"][name]["align_ms_per_face"] > 0
