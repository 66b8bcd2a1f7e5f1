"""Alignment and quality: exact maths on synthetic points, then real CelebA photos with real
MediaPipe detections (no mocks). The whole file runs in ~3 s on a shared 2-core CPU."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lookalike_live import models
from lookalike_live.align import (
    ARCFACE_TEMPLATE_112,
    MOUTH_CORNER_OFFSET,
    align_faces,
    arcface_template,
    box_transforms,
    face_quality,
    five_points,
    keypoint_centers,
    largest_face,
    roll_angles,
    similarity_transform,
    similarity_transforms,
)
from lookalike_live.detect import FaceDetector
from lookalike_live.errors import ConfigError, ShapeError
from lookalike_live.types import FaceCrops, FaceDetections

log = logging.getLogger(__name__)

FRONTAL = "010801.jpg"  # large frontal face (box ~200 px)
PROFILE = "015190.jpg"  # large profile face (box ~200 px, nose beyond the near eye)


def _transform(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    return points @ m[:, :2].T + m[:, 2]


@pytest.fixture(scope="module")
def detector(model_store: Path):
    with FaceDetector("full", store=model_store, fallback="short") as det:
        yield det


@pytest.fixture(scope="module")
def photos(celeba_dir: Path) -> dict[str, np.ndarray]:
    folder = celeba_dir / "Img" / "img_celeba"
    names = [FRONTAL, PROFILE] + [p.name for p in sorted(folder.glob("*.jpg"))[:40]]
    return {name: cv2.imread(str(folder / name)) for name in dict.fromkeys(names)}


def _largest(det: FaceDetector, image: np.ndarray) -> FaceDetections:
    dets = det.detect(image)
    assert len(dets), "the fixture photo must have a face"
    return dets[largest_face(dets)]


@pytest.fixture(scope="module")
def mobilefacenet() -> models.ModelSpec:
    return models.get_spec("mobilefacenet")


@pytest.fixture(scope="module")
def facenet() -> models.ModelSpec:
    return models.get_spec("facenet-vggface2")


# -- maths -----------------------------------------------------------------------------------


def test_similarity_transform_recovers_a_known_transform_exactly() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        src = rng.uniform(-100, 300, size=(5, 2))
        scale, angle = rng.uniform(0.1, 4), rng.uniform(-np.pi, np.pi)
        m = np.array(
            [
                [scale * np.cos(angle), -scale * np.sin(angle), rng.uniform(-50, 50)],
                [scale * np.sin(angle), scale * np.cos(angle), rng.uniform(-50, 50)],
            ]
        )
        got = similarity_transform(src, _transform(src, m))
        assert got.shape == (2, 3)
        np.testing.assert_allclose(got, m, atol=1e-9)


def test_similarity_transform_is_least_squares_and_never_reflects() -> None:
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 100, size=(6, 2))
    mirrored = src * [-1, 1]
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) >= 0  # a rotation+scale, not a reflection
    # least squares: no nearby similarity (scale/rotation, translation moved) fits better
    noisy = src * 1.5 + rng.normal(0, 2, size=src.shape) + [10, -4]
    best = similarity_transform(src, noisy)
    err = np.sum((_transform(src, best) - noisy) ** 2)
    steps = [[[1, 0, 0], [0, 1, 0]], [[0, -1, 0], [1, 0, 0]], [[0, 0, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 1]]]
    for step in np.array(steps, float):
        for sign in (1e-3, -1e-3):
            assert err < np.sum((_transform(src, best + sign * step) - noisy) ** 2)


def test_similarity_transform_errors() -> None:
    with pytest.raises(ShapeError):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ShapeError, match="all equal"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE_112)


def test_batched_transforms_match_single() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(4, 5, 2))
    batch = similarity_transforms(src, ARCFACE_TEMPLATE_112)
    for i in range(4):
        np.testing.assert_allclose(batch[i], similarity_transform(src[i], ARCFACE_TEMPLATE_112), atol=1e-12)


def test_template_and_five_points() -> None:
    assert ARCFACE_TEMPLATE_112.shape == (5, 2) and ARCFACE_TEMPLATE_112.dtype == np.float32
    np.testing.assert_allclose(ARCFACE_TEMPLATE_112[0], [38.2946, 51.6963])
    np.testing.assert_allclose(arcface_template(224), ARCFACE_TEMPLATE_112 * 2)
    # the template's own mouth-corner ratio is what the offset encodes
    t = ARCFACE_TEMPLATE_112
    assert (t[4, 0] - t[3, 0]) / (t[1, 0] - t[0, 0]) / 2 == pytest.approx(MOUTH_CORNER_OFFSET, abs=1e-3)
    kps = np.array([[[40, 50], [80, 50], [60, 70], [60, 90], [20, 60], [100, 60]]], np.float32)
    pts = five_points(kps)
    assert pts.shape == (1, 5, 2) and pts.dtype == np.float32
    np.testing.assert_allclose(pts[0, :3], kps[0, :3])
    np.testing.assert_allclose(pts[0, 3], [60 - 0.414 * 40, 90], atol=1e-4)
    np.testing.assert_allclose(pts[0, 4], [60 + 0.414 * 40, 90], atol=1e-4)
    np.testing.assert_allclose(five_points(kps, 0.0)[0, 3:], [[60, 90], [60, 90]])
    # a frontal face laid out like the template maps onto it exactly (up to scale)
    template6 = np.concatenate([t[:3], [(t[3] + t[4]) / 2], [[20, 60], [90, 60]]])[None] * 3 + 17
    m = similarity_transforms(five_points(template6.astype(np.float32)), t)[0]
    np.testing.assert_allclose(_transform(five_points(template6.astype(np.float32))[0], m), t, atol=0.2)
    with pytest.raises(ShapeError):
        five_points(np.zeros((2, 6)))


# -- crops on real photos ----------------------------------------------------------------------


def test_crops_have_the_spec_shape_dtype_and_colour(detector, photos, mobilefacenet, facenet) -> None:
    image = photos[FRONTAL]
    dets = detector.detect(image)
    for spec, size in ((mobilefacenet, 112), (facenet, 160)):
        crops = align_faces(image, dets, spec)
        assert isinstance(crops, FaceCrops)
        assert crops.pixels.shape == (len(dets), size, size, 3) and crops.pixels.dtype == np.uint8
        assert crops.color == "RGB" == spec.input.color
        assert crops.det_index.tolist() == list(range(len(dets)))
        assert crops.quality.shape == (len(dets),) and ((crops.quality >= 0) & (crops.quality <= 1)).all()
        # the same spec asking for BGR gives the same pixels with the channels reversed
        bgr_spec = dataclasses.replace(spec, input=dataclasses.replace(spec.input, color="BGR"))
        bgr = align_faces(image, dets, bgr_spec)
        assert bgr.color == "BGR"
        np.testing.assert_array_equal(bgr.pixels, crops.pixels[..., ::-1])


def test_empty_detections_give_an_empty_batch(photos, mobilefacenet, facenet) -> None:
    for spec, size in ((mobilefacenet, 112), (facenet, 160)):
        crops = align_faces(photos[FRONTAL], FaceDetections.empty(), spec)
        assert crops.pixels.shape == (0, size, size, 3) and crops.pixels.dtype == np.uint8
        assert len(crops) == 0 and crops.quality.shape == (0,) and crops.det_index.shape == (0,)


def test_bad_inputs(photos, mobilefacenet) -> None:
    with pytest.raises(ShapeError, match=r"\(H, W, 3\)"):
        align_faces(photos[FRONTAL][..., 0], FaceDetections.empty(), mobilefacenet)
    odd = dataclasses.replace(
        mobilefacenet, alignment=dataclasses.replace(mobilefacenet.alignment, method="mtcnn")
    )
    one = FaceDetections(
        np.array([[10, 10, 60, 60]], np.float32), np.ones(1, np.float32), np.zeros((1, 6, 2), np.float32)
    )
    with pytest.raises(ConfigError, match="alignment.method"):
        align_faces(photos[FRONTAL], one, odd)
    with pytest.raises(ConfigError, match="border"):
        align_faces(photos[FRONTAL], one, mobilefacenet, border="wrap")


def test_transformed_keypoints_land_on_the_template(detector, photos) -> None:
    """The 5 points of real detections, mapped by the fitted transform, sit on the template:
    eyes within a few pixels (a swapped left/right would put them ~35 px off)."""
    errors = []
    for image in photos.values():
        face = _largest(detector, image)
        pts = five_points(face.keypoints)[0]
        m = similarity_transforms(pts[None], ARCFACE_TEMPLATE_112)[0]
        errors.append(np.linalg.norm(_transform(pts, m)[:2] - ARCFACE_TEMPLATE_112[:2], axis=1))
    errors = np.array(errors)
    assert np.median(errors) < 3.0 and np.percentile(errors, 90) < 6.0


def test_aligned_crops_redetect_with_eyes_on_the_template(detector, photos, mobilefacenet) -> None:
    """Independent check: detect again on each 112x112 crop (zero-padded so the face is not the
    whole input) and compare the found eyes with the template's eyes."""
    pad = 56
    errors = []
    for image in photos.values():
        crop = align_faces(image, _largest(detector, image), mobilefacenet).pixels[0]
        canvas = cv2.copyMakeBorder(
            cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), pad, pad, pad, pad, cv2.BORDER_CONSTANT
        )
        again = detector.detect(canvas)
        assert len(again), "the aligned crop still shows a face"
        eyes = again.keypoints[largest_face(again), :2] - pad
        assert eyes[0, 0] < eyes[1, 0], "the image-left eye stays on the left: no mirroring"
        errors.append(np.linalg.norm(eyes - ARCFACE_TEMPLATE_112[:2], axis=1))
    errors = np.array(errors)
    log.info(
        "re-detected eye error on 112 px crops: median %.2f px, p90 %.2f px",
        np.median(errors),
        np.percentile(errors, 90),
    )
    assert np.median(errors) < 4.0  # the template's eyes are 35 px apart
    assert np.percentile(errors, 90) < 8.0


def test_box_crop_padding_outside_the_image(photos, facenet) -> None:  # type: ignore[no-untyped-def]
    image = photos[FRONTAL]
    h, w = image.shape[:2]
    square = dataclasses.replace(facenet, alignment=dataclasses.replace(facenet.alignment, aspect=1.0))
    # a face box at the top-left corner: the enlarged square leaves the image up and left
    box = FaceDetections(
        np.array([[0, 0, 100, 100]], np.float32), np.ones(1, np.float32), np.zeros((1, 6, 2), np.float32)
    )
    zero = align_faces(image, box, square, border="zero").pixels[0]
    rep = align_faces(image, box, square, border="replicate").pixels[0]
    # margin 0.2 -> side 120 px: 10 px outside on top and left = 160 * 10/120 = 13 crop px
    assert (zero[:12] == 0).all() and (zero[:, :12] == 0).all()
    assert zero[20:, 20:].any()
    assert not (rep[:12] == 0).all()
    # inside the image the border mode changes nothing (OpenCV 5 rounds a few interior pixels of
    # its two border paths 1 apart; a padding leak would differ by far more)
    diff = np.abs(rep[20:, 20:].astype(np.int16) - zero[20:, 20:].astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.05
    # inside the image the box crop is the region resized: compare with a direct resize, for the
    # square region and for the spec's own (taller than wide, squeezed into the square input)
    face = FaceDetections(
        np.array([[w / 2 - 60, h / 2 - 60, w / 2 + 60, h / 2 + 60]], np.float32),
        np.ones(1, np.float32),
        np.zeros((1, 6, 2), np.float32),
    )
    assert facenet.alignment.aspect > 1.0
    for spec in (square, facenet):
        crop = align_faces(image, face, spec, antialias=False).pixels[0]
        side_w, side_h = 120 * 1.2, 120 * 1.2 * spec.alignment.aspect
        x0, y0 = int(round(w / 2 - side_w / 2)), int(round(h / 2 - side_h / 2))
        ref = cv2.cvtColor(
            cv2.resize(image[y0 : y0 + int(side_h), x0 : x0 + int(side_w)], (160, 160)), cv2.COLOR_BGR2RGB
        )
        assert np.abs(crop.astype(int) - ref.astype(int)).mean() < 6, spec.alignment
        assert np.abs(crop.astype(int) - align_faces(image, face, square if spec is facenet else facenet,
                                                     antialias=False).pixels[0]).mean() > 3


def test_keypointless_faces_fall_back_to_the_box(photos, mobilefacenet) -> None:
    box = FaceDetections(
        np.array([[100, 100, 200, 200]], np.float32), np.ones(1, np.float32), np.zeros((1, 6, 2), np.float32)
    )
    crops = align_faces(photos[FRONTAL], box, mobilefacenet)
    assert crops.pixels.shape == (1, 112, 112, 3) and crops.pixels.std() > 0


def test_alignment_is_cheap(detector, photos, mobilefacenet, facenet) -> None:
    image = photos[FRONTAL]
    five = _largest(detector, image)[np.zeros(5, int)]
    for spec in (mobilefacenet, facenet):
        align_faces(image, five, spec)
        t0 = time.perf_counter()
        for _ in range(20):
            align_faces(image, five, spec)
        ms = (time.perf_counter() - t0) * 1000 / 20
        log.info("%s: %.3f ms per 5-face frame (%.3f ms/face) with quality", spec.name, ms, ms / 5)
        assert ms < 25  # measured ~0.7-1.1 ms on a shared 2-core CPU: a generous bound


# -- quality -----------------------------------------------------------------------------------


def test_quality_prefers_a_sharp_large_frontal_face(detector, photos) -> None:
    frontal = photos[FRONTAL]
    face = _largest(detector, frontal)
    sharp = float(face_quality(frontal, face)[0])

    side = float(face.xyxy[0, 2] - face.xyxy[0, 0])
    blurred = cv2.GaussianBlur(frontal, (0, 0), side / 40)
    q_blur = float(face_quality(blurred, _largest(detector, blurred))[0])

    small = cv2.resize(frontal, None, fx=0.2, fy=0.2, interpolation=cv2.INTER_AREA)
    small = cv2.copyMakeBorder(small, 100, 100, 100, 100, cv2.BORDER_REPLICATE)  # keep it findable
    q_small = float(face_quality(small, _largest(detector, small))[0])

    profile = photos[PROFILE]
    q_profile = float(face_quality(profile, _largest(detector, profile))[0])

    log.info(
        "quality: sharp frontal %.3f, blurred %.3f, small %.3f, profile %.3f",
        sharp,
        q_blur,
        q_small,
        q_profile,
    )
    assert sharp > 0.8
    assert sharp > q_blur + 0.1
    assert sharp > q_small + 0.1
    assert sharp > q_profile + 0.1


def test_quality_pose_terms(detector, photos) -> None:
    image = photos[FRONTAL]
    face = _largest(detector, image)
    base = face_quality(image, face)[0]
    kps = face.keypoints.copy()
    kps[0, 2] = kps[0, 1]  # nose on the image-right eye: a profile's keypoints
    turned = face_quality(image, FaceDetections(face.xyxy, face.score, kps))[0]
    assert turned < base - 0.3
    out = face_quality(image, FaceDetections.empty())
    assert out.shape == (0,) and out.dtype == np.float32


def test_largest_face() -> None:
    dets = FaceDetections(
        np.array([[0, 0, 10, 10], [0, 0, 30, 20], [5, 5, 20, 20]], np.float32),
        np.array([0.9, 0.5, 0.7], np.float32),
        np.zeros((3, 6, 2), np.float32),
    )
    assert largest_face(dets) == 1
    with pytest.raises(ShapeError, match="empty"):
        largest_face(FaceDetections.empty())


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Pixel-centre points (K,2) through a (2,3) warpAffine matrix."""
    return pts @ m[:, :2].T + m[:, 2]


def test_box_crop_options_aspect_centre_and_upright() -> None:
    box = np.array([[100.0, 50.0, 160.0, 170.0]])  # 60 x 120
    # the box's own aspect, no margin: its first and last pixels land on the crop's first and last
    # (OpenCV's pixel indices: pixel i spans [i, i+1); 2x wide, so pixel 100 covers crop [0, 2))
    m = box_transforms(box, 120, 0.0, square=False)[0]
    corners = np.array([[100.0, 50.0], [159.0, 169.0]])
    np.testing.assert_allclose(_apply(m, corners), [[0.5, 0.0], [118.5, 119.0]], atol=1e-9)
    # square (the default): the longer side decides both scales
    m = box_transforms(box, 120, 0.0)[0]
    assert m[0, 0] == pytest.approx(1.0) and m[1, 1] == pytest.approx(1.0)
    # centred elsewhere: that point lands on the crop centre
    m = box_transforms(box, 120, 0.2, centers=np.array([[140.0, 90.0]]))[0]
    np.testing.assert_allclose(_apply(m, np.array([[139.5, 89.5]])), [[59.5, 59.5]], atol=1e-9)
    # upright: a face rolled by 30 degrees comes out with a level eye line, the centre still centred
    theta = np.radians(30)
    c = np.array([130.0, 110.0])
    eyes = c + 20 * np.array([[-np.cos(theta), -np.sin(theta)], [np.cos(theta), np.sin(theta)]])
    kps = np.concatenate([eyes, c[None] + [0, 10], c[None] + [0, 30], eyes + [0, 5]])[None].astype(np.float32)
    angle = roll_angles(kps)
    assert angle[0] == pytest.approx(theta)
    m = box_transforms(box, 120, 0.0, angles=angle)[0]
    out = _apply(m, eyes - 0.5)
    assert out[0, 1] == pytest.approx(out[1, 1]) and out[1, 0] > out[0, 0]
    np.testing.assert_allclose(_apply(m, c[None] - 0.5), [[59.5, 59.5]], atol=1e-9)
    assert keypoint_centers(kps)[0] == pytest.approx(kps[0, :4].mean(axis=0))


def test_a_taller_box_crop_is_squeezed_into_the_square_input(photos, facenet) -> None:  # type: ignore[no-untyped-def]
    box = np.array([[100.0, 50.0, 160.0, 170.0]])  # 60 x 120: the square region is 120 x 120
    m = box_transforms(box, 120, 0.0, aspect=1.5)[0]
    # the region is 120 wide and 180 tall (y 20..200), centred on the box: its top and bottom edges
    # land on the crop's (edges in pixel-centre coordinates: edge y sits at y - 0.5)
    assert m[0, 0] == pytest.approx(1.0) and m[1, 1] == pytest.approx(120 / 180)
    np.testing.assert_allclose(_apply(m, np.array([[129.5, 19.5], [129.5, 199.5]])), [[59.5, -0.5], [59.5, 119.5]],
                               atol=1e-9)
    # through align_faces: the spec's aspect reaches the crop, and a senseless one is refused by name
    from lookalike_live.types import FaceDetections

    one = FaceDetections(np.array([[40.0, 30.0, 120.0, 110.0]], np.float32), np.ones(1, np.float32),
                         np.zeros((1, 6, 2), np.float32))
    image = photos[FRONTAL]
    plain = dataclasses.replace(facenet, alignment=dataclasses.replace(facenet.alignment, aspect=1.0))
    taller = dataclasses.replace(facenet, alignment=dataclasses.replace(facenet.alignment, aspect=1.3))
    a, b = align_faces(image, one, plain).pixels[0], align_faces(image, one, taller).pixels[0]
    assert a.shape == b.shape and np.abs(a.astype(np.int16) - b).mean() > 1
    assert "aspect=1.3" in taller.alignment.describe() and "aspect=1 " in plain.alignment.describe()
    for bad in (0.2, 3.0):
        wrong = dataclasses.replace(facenet, alignment=dataclasses.replace(facenet.alignment, aspect=bad))
        with pytest.raises(ConfigError, match="alignment.aspect must be between 0.5 and 2"):
            align_faces(image, one, wrong)


def test_alignment_options_reach_the_crops(detector, photos, facenet, mobilefacenet) -> None:  # type: ignore[no-untyped-def]
    image = photos[FRONTAL]
    one = _largest(detector, image)
    base = align_faces(image, one, facenet).pixels[0].astype(np.int16)
    for change in ({"upright": True}, {"center": "keypoints"}, {"margin": 0.5}):
        spec = dataclasses.replace(facenet, alignment=dataclasses.replace(facenet.alignment, **change))
        assert np.abs(align_faces(image, one, spec).pixels[0].astype(np.int16) - base).mean() > 1, change
    bad = dataclasses.replace(facenet, alignment=dataclasses.replace(facenet.alignment, center="nose"))
    with pytest.raises(ConfigError, match="alignment.center must be 'box' or 'keypoints'"):
        align_faces(image, one, bad)
    # a 5-point template scaled below 1 puts the eyes nearer the crop centre
    small = dataclasses.replace(mobilefacenet, alignment=dataclasses.replace(mobilefacenet.alignment,
                                                                            template_scale=0.7))
    wide, tight = align_faces(image, one, small).pixels[0], align_faces(image, one, mobilefacenet).pixels[0]
    assert wide.shape == tight.shape and np.abs(wide.astype(np.int16) - tight).mean() > 1
