"""Offline gallery build: dataset photos -> one aligned face each -> embeddings -> Milvus.

Design (for throughput on few cores and safety under interruption):

* ``workers`` threads read, decode and detect (one MediaPipe detector per thread; OpenCV and
  MediaPipe release the GIL) and hand over one aligned crop per photo, in order;
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .config import data_dir
from .datasets import Dataset, GalleryItem
from .errors import LookalikeError
from .imageio import read_image
from .parallel import prefetch_map
from .types import FaceDetections

log = logging.getLogger(__name__)

THUMB_SIZE = 96


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
    IMAGE-mode FaceDetector per worker thread. Returns the summary; never raises for a bad photo."""
    from .align import align_faces
    from .gallery import encode_thumbnail, face_id

    opts = options or BuildOptions()
    spec = embedder.spec
    embedder.prepare()
    gallery.ensure(dim=embedder.dim, model=spec.name)
    items = list(dataset.items[: opts.limit] if opts.limit else dataset.items)
    summary = BuildSummary(dataset=dataset.name, images=len(items), identities=len({i.identity for i in items}))
    t_start = time.perf_counter()

    ids = np.array([face_id(dataset.name, it.rel_path, 0) for it in items], dtype=np.int64)
    existing = gallery.existing_ids(ids.tolist())
    state = _StateFile(state_file_for(gallery.uri, gallery.collection, dataset.name))
    old_skips = {} if opts.retry_skipped else state.load()
    todo = [(it, int(i)) for it, i in zip(items, ids, strict=True)
            if int(i) not in existing and it.rel_path not in old_skips]
    summary.already_indexed = len(existing)
    summary.previously_skipped = sum(
        1 for it, i in zip(items, ids, strict=True) if int(i) not in existing and it.rel_path in old_skips
    )
    if summary.already_indexed:
        log.info("resuming: %d of %d photos already indexed", summary.already_indexed, len(items))

    local = threading.local()
    detectors: list[Any] = []

    def prepare(entry: tuple[GalleryItem, int]) -> PreparedFace | None:
        item, _ = entry
        det = getattr(local, "detector", None)
        if det is None:
            det = local.detector = make_detector()
            detectors.append(det)
        image = read_image(item.path)
        dets = det.detect(image)
        if len(dets) == 0:
            return None
        row = choose_face(dets, item.bbox)
        one = dets[[row]]
        crops = align_faces(image, one, spec)
        return PreparedFace(item, crops.pixels[0], float(crops.quality[0]), tuple(float(v) for v in one.xyxy[0]),
                            encode_thumbnail(image, one.xyxy[0], size=THUMB_SIZE))

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
            t0 = time.perf_counter()
            gallery.upsert_rows(rows)
            summary.insert_seconds += time.perf_counter() - t0
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
        for det in detectors:
            det.close()
    gallery.flush()
    if summary.faces:
        gallery.rebuild_centroids()
    summary.seconds = time.perf_counter() - t_start
    summary.gallery = gallery.stats()
    return summary
