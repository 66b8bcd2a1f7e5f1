"""CelebA-layout trees for tests and benchmarks, made from the 1,000-photo sample.

The sample has CelebA's photos and identity file but not its landmark or box files. These
helpers write files in exactly CelebA's formats, with landmarks from **our own detector**
(BlazeFace full range on the whole photo, mouth corners placed as ``align.five_points`` does,
rounded to whole pixels like CelebA's): a stand-in that exercises the annotation path, never
CelebA's own annotations.

* :func:`annotated_sample`: the sample (photos linked, not copied) with ``Anno/list_landmarks_celeba.txt``
  and ``Anno/list_bbox_celeba.txt``;
* :func:`synthetic_celeba`: a tree of N photos for the scale benchmark: real sample photos
  re-encoded with a small jitter (shift, brightness, contrast, JPEG quality), identities with
  CelebA's spread of photos per identity (CelebA: 202,599 photos of 10,177 identities, 19.9 each,
  at most 35), each synthetic identity drawn from one sample identity's photos, landmarks and
  boxes moved with the shift.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LANDMARK_HEADER = ("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
                   "leftmouth_x leftmouth_y rightmouth_x rightmouth_y")
BBOX_HEADER = "image_id x_1 y_1 width height"
#: photos per identity in the synthetic tree: CelebA's mean and its cap
PER_IDENTITY_MEAN = 19.9
PER_IDENTITY_MAX = 35


def write_annotations(anno: Path, marks: dict[str, np.ndarray], boxes: dict[str, np.ndarray],
                      landmark_name: str = "list_landmarks_celeba.txt") -> None:
    """CelebA's landmark and box files: a count line, a header line, one line a photo (whole pixels)."""
    anno.mkdir(parents=True, exist_ok=True)
    lines = [str(len(marks)), LANDMARK_HEADER]
    lines += [f"{name} " + " ".join(f"{int(round(float(v))):d}" for v in np.ravel(p)) for name, p in marks.items()]
    (anno / landmark_name).write_text("\n".join(lines) + "\n")
    lines = [str(len(boxes)), BBOX_HEADER]
    for name, b in boxes.items():
        x1, y1, x2, y2 = (int(round(float(v))) for v in b)
        lines.append(f"{name} {x1} {y1} {x2 - x1} {y2 - y1}")
    (anno / "list_bbox_celeba.txt").write_text("\n".join(lines) + "\n")


def detect_landmarks(sample: Path, store: Path | None = None, limit: int | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """{photo: (5,2) landmarks}, {photo: xyxy box} of the largest face BlazeFace (full range, on the
    whole photo) finds in each sample photo (the first ``limit`` by name); photos without a face
    are left out."""
    from ..align import five_points
    from ..detect import FaceDetector
    from ..imageio import read_image

    marks: dict[str, np.ndarray] = {}
    boxes: dict[str, np.ndarray] = {}
    with FaceDetector("full", store=store, running_mode="image", fallback="short") as det:
        for path in sorted((sample / "Img" / "img_celeba").glob("*.jpg"))[:limit]:
            dets = det.detect(read_image(path))
            if len(dets):
                one = dets[[int(np.argmax(dets.area))]]
                marks[path.name] = five_points(one.keypoints)[0]
                boxes[path.name] = one.xyxy[0]
    return marks, boxes


def annotated_sample(sample: Path, dst: Path, store: Path | None = None) -> Path:
    """``dst``: the sample with landmark and box files from our detector (see the module doc);
    reused when ``dst`` has them already."""
    if (dst / "Anno" / "list_landmarks_celeba.txt").is_file() and (dst / "Img" / "img_celeba").exists():
        return dst
    (dst / "Img").mkdir(parents=True, exist_ok=True)
    link = dst / "Img" / "img_celeba"
    if not link.exists():
        link.symlink_to((sample / "Img" / "img_celeba").resolve(), target_is_directory=True)
    (dst / "Anno").mkdir(parents=True, exist_ok=True)
    (dst / "Anno" / "identity_CelebA.txt").write_bytes((sample / "Anno" / "identity_CelebA.txt").read_bytes())
    marks, boxes = detect_landmarks(sample, store)
    write_annotations(dst / "Anno", marks, boxes)
    return dst


def _per_identity(n: int, rng: np.random.Generator) -> list[int]:
    """Photo counts per identity summing to ``n``, spread like CelebA's (mean 19.9, 1..35)."""
    counts: list[int] = []
    while sum(counts) < n:
        counts.append(int(np.clip(round(rng.normal(PER_IDENTITY_MEAN + 2, 7)), 1, PER_IDENTITY_MAX)))
    counts[-1] -= sum(counts) - n
    return [c for c in counts if c > 0]


def _jitter_one(args: tuple[str, list[tuple[str, int]], np.ndarray, np.ndarray, str]
                ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Write the jittered copies of one source photo; their landmark lines."""
    import cv2

    src, outs, marks, box, out_dir = args
    image = cv2.imread(src, cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read {src}")
    lines = []
    for name, seed in outs:
        rng = np.random.default_rng(seed)
        dx, dy = rng.integers(-6, 7, 2)
        gain, bias = rng.uniform(0.9, 1.1), rng.uniform(-12, 12)
        m = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
        moved = cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REFLECT)
        moved = cv2.convertScaleAbs(moved, alpha=gain, beta=bias)
        cv2.imwrite(os.path.join(out_dir, name), moved, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(85, 96))])
        p = marks + np.array([dx, dy], np.float32)
        b = box + np.array([dx, dy, dx, dy], np.float32)
        lines.append((name, p, b))
    return lines


def synthetic_celeba(annotated: Path, dst: Path, n: int, seed: int = 0, workers: int | None = None) -> Path:
    """A CelebA tree of ``n`` photos at ``dst`` made from ``annotated`` (:func:`annotated_sample`);
    reused when ``dst`` already holds one of that size. See the module doc."""
    from concurrent.futures import ProcessPoolExecutor

    from ..datasets import open_dataset

    done = dst / "Anno" / "identity_CelebA.txt"
    if done.is_file() and sum(1 for _ in done.open()) == n:
        return dst
    ds = open_dataset(annotated, "celeba")
    by_id: dict[str, list[Any]] = {}
    for it in ds.items:
        if it.landmarks is not None and it.bbox is not None:
            by_id.setdefault(it.identity, []).append(it)
    sources = [by_id[k] for k in sorted(by_id)]
    rng = np.random.default_rng(seed)
    img_dir = dst / "Img" / "img_celeba"
    img_dir.mkdir(parents=True, exist_ok=True)
    plan: dict[str, list[tuple[str, int]]] = {}  # source photo -> its copies
    src_of: dict[str, Any] = {}
    ident_lines = []
    k = 0
    for ident, count in enumerate(_per_identity(n, rng), 1):
        photos = sources[(ident - 1) % len(sources)]
        for j in range(count):
            k += 1
            item = photos[j % len(photos)]
            name = f"{k:06d}.jpg"
            plan.setdefault(str(item.path), []).append((name, int(rng.integers(2**31))))
            src_of[str(item.path)] = item
            ident_lines.append(f"{name} {ident}")
    jobs = [(src, outs, np.asarray(src_of[src].landmarks, np.float32).reshape(5, 2),
             np.asarray(src_of[src].bbox, np.float32), str(img_dir)) for src, outs in plan.items()]
    marks: dict[str, np.ndarray] = {}
    boxes: dict[str, np.ndarray] = {}
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        for lines in pool.map(_jitter_one, jobs, chunksize=8):
            for name, p, b in lines:
                marks[name], boxes[name] = p, b
    order = sorted(marks)
    write_annotations(dst / "Anno", {k: marks[k] for k in order}, {k: boxes[k] for k in order})
    done.write_text("\n".join(ident_lines) + "\n")  # last: a tree cut short is made again
    log.info("synthetic CelebA tree: %d photos of %d identities at %s", n, len({line.split()[1] for line in ident_lines}), dst)
    return dst
