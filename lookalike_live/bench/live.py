"""Live engine throughput: the Hamilton clip processed headless (every frame, deterministic file mode)
with a real gallery, tracking on (faces queried when the tracker asks) vs off (every face of every
frame embedded and searched).

FaceNet without installed weights runs with seeded random weights (``facenet.export_random_onnx``:
the real graph, so the real cost; ~45 ms per face on a 2-core CPU). The gallery is a Milvus Lite
temp file filled with ``gallery_faces`` random unit vectors (search cost only; identities are
meaningless with random weights). Run: ``python -m lookalike_live.bench.live [--clip PATH]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..errors import ModelNotInstalledError

log = logging.getLogger(__name__)

__all__ = ["run", "main"]


def model_store(model: str, scratch: Path, store: Path | None, shared_models: Path | None) -> tuple[Path, str]:
    """A model store holding the detectors and ``model`` (FaceNet: random weights if not installed)."""
    from .. import models
    from ..models import get_spec, is_facenet

    out = scratch / "models"
    out.mkdir(parents=True, exist_ok=True)
    src = store or models.models_dir()
    for name in ("blazeface-short", "blazeface-full", model):
        spec = get_spec(name, src)
        if spec.is_installed(src):
            models.install_file(spec.path(src), spec.path(out), None)
        elif shared_models is not None and (shared_models / spec.file).is_file():
            models.fetch(name, store=out, from_dir=shared_models)
        elif is_facenet(spec):
            from ..facenet import export_random_onnx

            export_random_onnx(spec.path(out), seed=0, size=spec.input.size)
            log.info("%s is not installed: using seeded random weights (real graph, real cost)", name)
        else:
            raise ModelNotInstalledError(f"model {name!r} is not installed: {spec.install_hint()}")
    weights = "installed" if get_spec(model, src).is_installed(src) else "random weights (seed 0)"
    return out, weights


def fill_random_gallery(gallery: Any, model: str, store: Path, faces: int = 2000) -> None:
    """``faces`` random unit vectors in ``gallery``, tagged with ``model`` (search cost only)."""
    from ..embed import create_embedder
    from ..gallery import face_id

    emb = create_embedder(model, backend="onnx", store=store)
    dim, spec_name = emb.dim, emb.spec.name
    emb.close()
    vecs = np.random.default_rng(0).standard_normal((faces, dim)).astype(np.float32)
    gallery.ensure(dim=dim, model=spec_name)
    paths = [f"bench/{i:06d}.jpg" for i in range(faces)]
    gallery.upsert_faces([face_id("bench", p, 0) for p in paths], vecs, [str(i % 200) for i in range(faces)],
                         [f"id {i % 200}" for i in range(faces)], "bench", paths)
    gallery.flush()


def random_gallery(uri: str, model: str, store: Path, faces: int = 2000) -> None:
    """A Milvus Lite file at ``uri`` holding :func:`fill_random_gallery`'s vectors."""
    from ..gallery import Gallery

    with Gallery(uri) as g:
        fill_random_gallery(g, model, store, faces)


def run(clip: str | Path, *, model: str = "facenet-casia-webface", store: Path | None = None,
        shared_models: Path | None = None, gallery_faces: int = 2000, max_frames: int | None = None,
        modes: Sequence[str] = ("tracking", "no-tracking")) -> dict[str, Any]:
    """Process ``clip`` once per mode; returns fps, embeddings per frame, faces, tracks, decision
    latency and stage timings for each, plus the speed-up of tracking over embedding every face."""
    from ..gallery import Gallery
    from ..pipeline import Engine, EngineConfig

    out: dict[str, Any] = {"clip": str(clip), "model": model, "gallery_faces": gallery_faces, "modes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        scratch = Path(tmp)
        mstore, weights = model_store(model, scratch, store, shared_models)
        out["weights"] = weights
        settings = Settings(model=model, backend="onnx", milvus_uri=str(scratch / "gallery.db"))
        with Gallery(settings.milvus_uri) as g:
            fill_random_gallery(g, model, mstore, gallery_faces)
            for mode in modes:
                cfg = EngineConfig.from_settings(settings, tracking=(mode == "tracking"), with_thumbnails=False)
                with Engine.from_settings(settings, store=mstore, gallery=g, config=cfg) as engine:
                    t0 = time.perf_counter()
                    summary = engine.run(str(clip), max_frames=max_frames)
                    wall = time.perf_counter() - t0
                    stages = engine.metrics.as_dict()["stages"]
                    frame_ms = engine.metrics.samples("frame")
                out["modes"][mode] = {
                    **{k: summary[k] for k in ("frames", "fps", "faces", "tracks", "decided_tracks", "embeddings",
                                                "embeddings_per_frame", "median_decision_latency_ms",
                                                "median_decision_latency_video_ms", "drops")},
                    "wall_s": round(wall, 2),
                    "faces_per_frame": round(summary["faces"] / max(summary["frames"], 1), 3),
                    "stage_p50_ms": {k: v["p50_ms"] for k, v in stages.items() if v["count"]},
                    "frame_ms_samples": [round(x, 3) for x in frame_ms],
                }
                log.info("%s: %s", mode, out["modes"][mode])
    m = out["modes"]
    if "tracking" in m and "no-tracking" in m and m["no-tracking"]["fps"]:
        out["speedup"] = round(m["tracking"]["fps"] / m["no-tracking"]["fps"], 2)
        out["embedding_reduction"] = round(m["no-tracking"]["embeddings"] / max(m["tracking"]["embeddings"], 1), 1)
    return out


def clip_parser(doc: str | None, model: str = "facenet-casia-webface") -> argparse.ArgumentParser:
    """The options every clip benchmark's ``main`` shares: --clip, --model, --shared-models."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", type=Path, default=Path("../shared/testdata/video/short_hamilton_clip.mp4"))
    p.add_argument("--model", default=model)
    p.add_argument("--shared-models", type=Path, default=Path("../shared/models"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = clip_parser(__doc__)
    p.add_argument("--gallery-faces", type=int, default=2000)
    p.add_argument("--max-frames", type=int)
    p.add_argument("--modes", nargs="+", default=["tracking", "no-tracking"], choices=["tracking", "no-tracking"])
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    res = run(a.clip, model=a.model, shared_models=a.shared_models if a.shared_models.is_dir() else None,
              gallery_faces=a.gallery_faces, max_frames=a.max_frames, modes=a.modes)
    sys.stdout.write(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
