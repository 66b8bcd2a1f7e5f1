"""Batch jobs over image files: ``lookalike-live embed``."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .analyzer import FaceAnalyzer
from .errors import LookalikeError, OutputError
from .imageio import iter_image_files, read_image
from .parallel import prefetch_map

log = logging.getLogger(__name__)


def embed_files(
    paths: Sequence[str | Path], analyzer: FaceAnalyzer, out: Path | None = None, workers: int = 2,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Embed every face of every image under ``paths``.

    Returns the arrays (also written to ``out`` as .npz when given): ``paths`` (one per face),
    ``face_index``, ``boxes`` (N,4 xyxy pixels), ``scores``, ``quality``, ``embeddings``
    (N,D float32, L2-normalised); and a summary with the unreadable images and why. A broken
    model stops the job at once (it would fail every image), before any image is read.
    """
    from .indexing import FATAL_ERRORS, INTERNAL_ERRORS

    files = iter_image_files(paths)
    analyzer.prepare()
    dim = analyzer.embedder.dim
    rows: dict[str, list] = {k: [] for k in ("paths", "face_index", "boxes", "scores", "quality", "embeddings")}
    skipped: dict[str, str] = {}
    no_face: list[str] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(files), unit="img", desc="embed", disable=not progress, dynamic_ncols=True)
    for path, image, err in prefetch_map(read_image, files, workers=workers):
        bar.update(1)
        if err is not None or image is None:
            skipped[str(path)] = str(err)
            log.warning("skipped %s", err)
            continue
        try:
            res = analyzer.analyze(image)
        except FATAL_ERRORS + INTERNAL_ERRORS:
            raise  # the model or the install, not this image
        except LookalikeError as exc:
            skipped[str(path)] = str(exc)
            log.warning("skipped %s: %s", path, exc)
            continue
        if len(res.embeddings) == 0:
            no_face.append(str(path))
            continue
        idx = res.embeddings.det_index
        n = len(idx)
        rows["paths"].extend([str(path)] * n)
        rows["face_index"].append(np.arange(n, dtype=np.int32))
        rows["boxes"].append(res.detections.xyxy[idx])
        rows["scores"].append(res.detections.score[idx])
        rows["quality"].append(res.crops.quality)
        rows["embeddings"].append(res.embeddings.vectors)
    bar.close()
    seconds = time.perf_counter() - t0

    def cat(key: str, empty: np.ndarray) -> np.ndarray:
        return np.concatenate(rows[key]) if rows[key] else empty

    arrays = {
        "paths": np.asarray(rows["paths"], dtype=str),
        "face_index": cat("face_index", np.zeros(0, np.int32)),
        "boxes": cat("boxes", np.zeros((0, 4), np.float32)),
        "scores": cat("scores", np.zeros(0, np.float32)),
        "quality": cat("quality", np.zeros(0, np.float32)),
        "embeddings": cat("embeddings", np.zeros((0, dim), np.float32)),
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part.npz")
        payload: dict[str, Any] = {"model": np.asarray(analyzer.spec.name), **arrays}
        try:
            np.savez(tmp, **payload)
            tmp.replace(out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"cannot write --out {out}: {exc.strerror or exc}") from exc
    summary = {
        "images": len(files),
        "faces": int(len(arrays["paths"])),
        "images_with_faces": len(files) - len(skipped) - len(no_face),
        "no_face": no_face,
        "skipped": skipped,
        "seconds": round(seconds, 3),
        "images_per_second": round(len(files) / seconds, 2) if seconds > 0 else None,
        "model": analyzer.spec.name,
        "backend": getattr(analyzer.embedder, "backend", "?"),
        "out": str(out) if out else None,
    }
    return arrays, summary
