"""Offline gallery build: dataset photos -> one aligned face each -> embeddings -> Milvus.

Design (for throughput on few cores and safety under interruption):

* ``workers`` threads read, decode and detect (one MediaPipe detector per thread; OpenCV and
  MediaPipe release the GIL) and hand over one aligned crop per photo, in order
  (:func:`prepare_face`): big JPEGs are decoded at a reduced scale, and the short-range detector's
  face is kept when it is big and sure (:func:`gallery_detector`), because on 2 cores every
  core-millisecond a photo costs outside the embedder slows the build;
* the calling thread embeds crops in batches of ``batch_size`` and upserts rows in batches of
  ``insert_batch``; each row's primary key is a stable hash of (dataset, relative path, face
  index), so a re-run never duplicates and a killed run resumes: photos whose id is already in
  the collection are skipped before any work, and photos that failed before (no face, unreadable)
  are remembered in a small state file next to the embedded gallery and skipped on resume;
* one face per photo: the face that best overlaps the dataset's annotated box when there is
  one, else the largest (gallery photos are portraits; bystanders are not the labelled identity).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import faults
from .config import data_dir
from .datasets import Dataset, GalleryItem
from .errors import (
    BackendUnavailableError,
    ConfigError,
    LookalikeError,
    ModelFormatError,
    ModelNotInstalledError,
    UnknownModelError,
)
from .imageio import read_image_scaled
from .parallel import prefetch_map
from .types import FaceDetections

log = logging.getLogger(__name__)

THUMB_SIZE = 96
#: Big JPEGs are decoded at 1/2, 1/4 or 1/8 scale while their longer side stays >= WORK_SIDE px
#: (the detector sees 128-192 px anyway); a chosen face whose box is then smaller than
#: ALIGN_MIN_FRACTION of the embedder's input is read again at a larger scale, so a crop never
#: has fewer source pixels than it needs. (CelebA: decode 1.5 -> 1.0 core-ms a photo.)
WORK_SIDE = 640
ALIGN_MIN_FRACTION = 0.8
#: quick detection (:func:`gallery_detector`): the short-range model's face is kept when it spans at
#: least QUICK_MIN_SIZE of the photo's longer side and scores at least QUICK_MIN_SCORE. Looser rules
#: are faster but wrong too often: at (0.15, any score) 43 of the CelebA fixture's 1,000 gallery
#: crops came out unlike the full-range crop (cosine < 0.6), the full-range one nearer the person's
#: other photos in 38; at (0.2, 0.9) 2 of the 683 photos kept.
QUICK_MIN_SIZE = 0.2
QUICK_MIN_SCORE = 0.9
#: errors that no other photo would escape: they stop the build (after saving what is embedded)
#: instead of skipping photo after photo
FATAL_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, UnknownModelError, ModelNotInstalledError, ModelFormatError, BackendUnavailableError,
)
#: errors that are a bug or a broken install, never a bad photo: they stop the build (what is embedded
#: is saved) instead of skipping, and remembering as skipped, every photo after them
INTERNAL_ERRORS: tuple[type[BaseException], ...] = (
    ImportError, NameError, AttributeError, TypeError, AssertionError, NotImplementedError,
)


@dataclass(frozen=True, eq=False)
class PreparedFace:
    item: GalleryItem
    crop: np.ndarray  # (S,S,3) uint8 in the embedder's colour order
    quality: float
    bbox: tuple[float, float, float, float]
    thumbnail: bytes  # JPEG of the face, THUMB_SIZE square


@dataclass
class BuildOptions:
    batch_size: int = 32
    insert_batch: int = 256
    workers: int = 2
    limit: int | None = None
    retry_skipped: bool = False
    progress: bool = True


@dataclass
class BuildSummary:
    dataset: str
    images: int = 0  # photos in the dataset (after --limit)
    already_indexed: int = 0
    processed: int = 0
    faces: int = 0  # rows inserted by this run
    identities: int = 0  # identities in the dataset
    skipped: dict[str, str] = field(default_factory=dict)  # rel_path -> reason
    previously_skipped: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    insert_seconds: float = 0.0
    gallery: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["images_per_second"] = round(self.processed / self.seconds, 2) if self.seconds > 0 else None
        d["seconds"] = round(self.seconds, 3)
        d["embed_seconds"] = round(self.embed_seconds, 3)
        d["insert_seconds"] = round(self.insert_seconds, 3)
        return d


def choose_face(dets: FaceDetections, annotated: tuple[float, float, float, float] | None) -> int:
    """Row of the face to index: best IoU with the annotated box if given (and > 0), else the largest."""
    if annotated is not None and len(dets):
        a = np.asarray(annotated, np.float32)
        x1 = np.maximum(dets.xyxy[:, 0], a[0])
        y1 = np.maximum(dets.xyxy[:, 1], a[1])
        x2 = np.minimum(dets.xyxy[:, 2], a[2])
        y2 = np.minimum(dets.xyxy[:, 3], a[3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        iou = inter / (dets.area + (a[2] - a[0]) * (a[3] - a[1]) - inter + 1e-9)
        if iou.max() > 0:
            return int(np.argmax(iou))
    return int(np.argmax(dets.area))


def gallery_detector(model: str = "full", *, store: Path | None = None, min_score: float = 0.5,
                     small_faces: str = "off", quick: bool = True) -> Any:
    """The detector ``index build`` uses on gallery photos: ``model`` with the short-range model as
    fallback (close-ups the full-range model misses) and, when ``quick`` and ``model`` is full
    range, the short-range model first, its face kept when it is big and sure (QUICK_MIN_SIZE,
    QUICK_MIN_SCORE: 68 % of the CelebA fixture's photos), so detection costs ~2 instead of
    ~4.6 core-ms there. Gallery and queries need not come from the same detector: on the CelebA
    fixture (MobileFaceNet, gallery built so, queries detected full range as the live app does)
    top-1 is the same as with a full-range gallery (`eval identify --no-quick-detect` compares)."""
    from .detect import FaceDetector

    first = "short" if quick and model in ("full", "blazeface-full") else None
    return FaceDetector(model, store=store, min_score=min_score, small_faces=small_faces,  # type: ignore[arg-type]
                        running_mode="image", fallback="short", first=first, first_min_size=QUICK_MIN_SIZE,
                        first_min_score=QUICK_MIN_SCORE)


def locate_face(item: GalleryItem, detector: Any, spec: Any, work_side: int = WORK_SIDE
                ) -> tuple[np.ndarray, float, FaceDetections] | None:
    """Read one gallery photo (see WORK_SIDE) and pick its face (:func:`choose_face`): (image,
    scale, the one face in that image's pixels), the photo re-read larger when the face has too few
    pixels for the embedder ``spec``'s crop; None when the photo has no face. Raises
    LookalikeError (e.g. ImageReadError) for an unreadable photo."""
    image, scale = read_image_scaled(item.path, work_side)
    dets = detector.detect(image)
    if len(dets) == 0:
        return None
    annotated = None if item.bbox is None else tuple(v / scale for v in item.bbox)
    one = dets[[choose_face(dets, annotated)]]  # type: ignore[arg-type]
    side = float(one.side[0])
    need = ALIGN_MIN_FRACTION * float(spec.input.size)
    if scale > 1.0 and side < need:  # too few pixels for the crop at this scale: read it bigger
        bigger, bigger_scale = read_image_scaled(item.path, math.ceil(max(image.shape[:2]) * need / max(side, 1.0)))
        one = one.scaled(scale / bigger_scale)
        image, scale = bigger, bigger_scale
    return image, scale, one


def prepare_face(item: GalleryItem, detector: Any, spec: Any, work_side: int = WORK_SIDE) -> PreparedFace | None:
    """:func:`locate_face`, then the face aligned for the embedder ``spec``; None when the photo has
    no face. ``bbox`` comes back in the photo's own pixels."""
    from .align import align_faces
    from .gallery import encode_thumbnail

    found = locate_face(item, detector, spec, work_side)
    if found is None:
        return None
    image, scale, one = found
    crops = align_faces(image, one, spec)
    return PreparedFace(item, crops.pixels[0], float(crops.quality[0]),
                        tuple(float(v) * scale for v in one.xyxy[0]),  # type: ignore[arg-type]
                        encode_thumbnail(image, one.xyxy[0], size=THUMB_SIZE))


class _StateFile:
    """Append-only JSON lines of photos that could not be indexed, so a resumed build skips them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    def load(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    out[rec["path"]] = rec["reason"]
                except (ValueError, KeyError):
                    continue  # a line cut by a kill: ignore it
        return out

    def add(self, records: dict[str, str]) -> None:
        if not records:
            return
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                for path, reason in records.items():
                    fh.write(json.dumps({"path": path, "reason": reason}) + "\n")


def state_file_for(uri: str, collection: str, dataset: str) -> Path:
    key = hashlib.sha1(f"{uri}|{collection}|{dataset}".encode()).hexdigest()[:16]
    return data_dir() / "builds" / f"{dataset}-{collection}-{key}.skipped.jsonl"


def build_index(
    dataset: Dataset,
    make_detector: Callable[[], Any],
    embedder: Any,
    gallery: Any,
    options: BuildOptions | None = None,
) -> BuildSummary:
    """Index ``dataset`` into ``gallery`` (see the module doc). ``make_detector()`` builds one
    IMAGE-mode FaceDetector per worker thread. Returns the summary; never raises for a bad photo
    (skipped and listed), raises for what would fail every photo (FATAL_ERRORS: a model missing or
    broken) after saving what is embedded."""
    from .gallery import face_id

    t_start = time.perf_counter()
    opts = options or BuildOptions()
    spec = embedder.spec
    items = list(dataset.items[: opts.limit] if opts.limit else dataset.items)
    summary = BuildSummary(dataset=dataset.name, images=len(items), identities=len({i.identity for i in items}))
    # the first detector loads (MediaPipe's import and models: ~0.6 s) while the embedder and the
    # gallery get ready, instead of after them; a detector model that is missing fails here, at once
    first_detector = make_detector()

    def load_first() -> None:
        try:
            getattr(first_detector, "prepare", lambda: None)()
        except Exception:  # noqa: BLE001 - its first detect() prepares again and raises it there
            log.debug("loading the face detector failed", exc_info=True)

    warm = threading.Thread(target=load_first, name="warm-detector", daemon=True)
    warm.start()
    try:
        embedder.prepare()
        gallery.ensure(dim=embedder.dim, model=spec.name)
        ids = np.array([face_id(dataset.name, it.rel_path, 0) for it in items], dtype=np.int64)
        existing = gallery.existing_ids(ids.tolist())
    except BaseException:
        warm.join()
        first_detector.close()
        raise
    state = _StateFile(state_file_for(gallery.uri, gallery.collection, dataset.name))
    old_skips = {} if opts.retry_skipped else state.load()
    todo = [(it, int(i)) for it, i in zip(items, ids, strict=True)
            if int(i) not in existing and it.rel_path not in old_skips]
    # never one id twice in a build (the dataset readers already drop a photo listed twice)
    first: dict[int, tuple[GalleryItem, int]] = {}
    for it, fid in todo:
        first.setdefault(fid, (it, fid))
    todo = list(first.values())
    summary.already_indexed = len(existing)
    summary.previously_skipped = sum(
        1 for it, i in zip(items, ids, strict=True) if int(i) not in existing and it.rel_path in old_skips
    )
    if summary.already_indexed:
        log.info("resuming: %d of %d photos already indexed", summary.already_indexed, len(items))

    local = threading.local()
    detectors: list[Any] = []
    spare = [first_detector]
    spare_lock = threading.Lock()

    def prepare(entry: tuple[GalleryItem, int]) -> PreparedFace | None:
        item, _ = entry
        det = getattr(local, "detector", None)
        if det is None:
            with spare_lock:
                det = spare.pop() if spare else None
            if det is None:
                det = make_detector()
            else:
                warm.join()
            local.detector = det
            detectors.append(det)
        return prepare_face(item, det, spec)

    batch: list[tuple[PreparedFace, int]] = []
    rows: list[dict[str, Any]] = []
    new_skips: dict[str, str] = {}

    def embed_batch() -> None:
        if not batch:
            return
        t0 = time.perf_counter()
        vecs = embedder.embed_array(np.stack([p.crop for p, _ in batch]))
        summary.embed_seconds += time.perf_counter() - t0
        for (p, fid), v in zip(batch, vecs, strict=True):
            rows.append({
                "id": fid, "vector": v, "identity": p.item.identity, "name": p.item.name,
                "dataset": dataset.name, "image_path": p.item.rel_path, "bbox": p.bbox,
                "quality": p.quality, "thumbnail": p.thumbnail,
            })
        batch.clear()

    def insert_rows() -> None:
        if rows:
            faults.point("build:before-upsert")
            t0 = time.perf_counter()
            gallery.upsert_rows(rows)
            summary.insert_seconds += time.perf_counter() - t0
            faults.point("build:after-upsert")
            summary.faces += len(rows)
            log.info("saved %d faces (%d this run)", len(rows), summary.faces)
            rows.clear()
        state.add(new_skips)  # after the rows: a skip is remembered only once what came before is saved
        new_skips.clear()

    bar = tqdm(total=len(todo), unit="img", desc=f"index {dataset.name}", disable=not opts.progress,
               dynamic_ncols=True, smoothing=0.1)
    try:
        for (item, fid), prepared, err in prefetch_map(prepare, todo, workers=opts.workers, ahead=4 * opts.batch_size):
            bar.update(1)
            summary.processed += 1
            if isinstance(err, FATAL_ERRORS + INTERNAL_ERRORS):
                raise err
            if err is not None:
                reason = str(err) if isinstance(err, LookalikeError) else f"{type(err).__name__}: {err}"
                new_skips[item.rel_path] = summary.skipped[item.rel_path] = reason
                log.warning("skipped %s: %s", item.rel_path, reason)
            elif prepared is None:
                new_skips[item.rel_path] = summary.skipped[item.rel_path] = "no face found"
                log.debug("no face in %s", item.rel_path)
            else:
                batch.append((prepared, fid))
                if len(batch) >= opts.batch_size:
                    embed_batch()
                if len(rows) >= opts.insert_batch:
                    insert_rows()
        embed_batch()
        insert_rows()
    except BaseException:
        # interrupted (Ctrl-C) or a fatal gallery error: keep what is already embedded
        try:
            embed_batch()
            insert_rows()
            gallery.flush()
        except Exception:  # noqa: BLE001 - the original error matters more
            log.warning("could not save the last %d embedded faces", len(rows) + len(batch), exc_info=True)
        raise
    finally:
        bar.close()
        warm.join()
        for det in detectors + spare:
            det.close()
    faults.point("build:after-last-upsert")
    gallery.flush()
    gallery.warm_local_index()  # a resumed or added-to gallery: its in-process copy made and saved now
    # also when this run added nothing: a build killed before its centroids left them missing or stale
    if summary.faces or (gallery.count() and not gallery.centroids_current()):
        gallery.rebuild_centroids()
    summary.seconds = time.perf_counter() - t_start
    summary.gallery = gallery.stats()
    return summary
