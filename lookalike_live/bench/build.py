"""Index-build throughput next to the bare embedder's throughput, measured in the same run.

The build runs the whole path (read, decode, detect, align, embed, thumbnail, upsert into a
fresh Milvus Lite file); the reference embeds the same number of pre-aligned crops with the same
embedder object in batches of the same size, nothing else.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def run(dataset_dir: Path, store: Path | None = None, model: str = "facenet-casia-webface", limit: int | None = None,
        batch_size: int = 32, workers: int | None = None, milvus_uri: str | None = None, quick_detect: bool = True,
        annotations: str = "auto") -> dict[str, Any]:
    """One build of ``dataset_dir`` (CelebA layout) into a fresh gallery next to the bare embedder.
    ``quick_detect``: as `index build --quick-detect` (the default) or `--no-quick-detect`;
    ``annotations`` and ``workers`` (None: the default) as `index build --annotations`, `--workers`."""
    from ..datasets import open_dataset
    from ..embed import create_embedder
    from ..gallery import Gallery
    from ..indexing import BuildOptions, DetectorConfig, build_index

    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        scratch = Path(tmp)
        from .live import model_store  # detectors + the model (FaceNet: random weights if absent)

        mstore, note = model_store(model, scratch, store, shared_models=None)
        embedder = create_embedder(model, backend="onnx", store=mstore, spin=False)  # as `index build`
        spec = embedder.spec
        dataset = open_dataset(dataset_dir, "celeba", annotations=annotations)
        uri = milvus_uri or str(scratch / "bench.db")

        detector = DetectorConfig("full", store=mstore, quick=quick_detect)  # as `index build`
        with Gallery(uri, collection="bench_build") as gallery:
            summary = build_index(dataset, detector, embedder, gallery,
                                  BuildOptions(batch_size=batch_size, workers=workers, limit=limit, progress=False))
            faces = summary.faces
            # the bare embedder on as many crops, same batch size, same object
            crops = np.random.default_rng(0).integers(0, 256, (batch_size, spec.input.size, spec.input.size, 3),
                                                      dtype=np.uint8)
            embedder.embed_array(crops)  # warm-up
            t0 = time.perf_counter()
            done = 0
            while done < max(faces, batch_size):
                embedder.embed_array(crops)
                done += batch_size
            bare_ips = done / (time.perf_counter() - t0)
        embedder.close()
    build_ips = summary.processed / summary.seconds if summary.seconds else 0.0
    return {
        "model": spec.name,
        "weights": note,
        "photos": summary.processed,
        "faces": faces,
        "skipped": len(summary.skipped),
        "build_seconds": round(summary.seconds, 2),
        "build_images_per_second": round(build_ips, 2),
        "bare_embedder_images_per_second": round(bare_ips, 2),
        "build_vs_bare": round(build_ips / bare_ips, 3) if bare_ips else None,
        "embed_seconds": round(summary.embed_seconds, 2),
        "insert_seconds": round(summary.insert_seconds, 2),
        "batch_size": batch_size,
        "workers": summary.workers,
        "quick_detect": quick_detect,
        "aligned_by": summary.aligned_by,
        "landmark_fallbacks": summary.landmark_fallbacks,
    }
