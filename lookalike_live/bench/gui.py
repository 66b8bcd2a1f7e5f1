"""Desktop app smoothness: the real main window (offscreen unless a display is set) plays the clip
in real time while matches arrive, and we measure

* ``display_fps``: frames the window drew per second (each a new engine result, annotated);
* ``max_stall_ms``: the largest gap between ticks of a 5 ms QTimer on the GUI thread, i.e. the
  longest the event loop was blocked (``p99_stall_ms`` too);
* the engine's own fps and per-stage p50 timings, and how many searches were answered.

Measured from the first displayed frame (model loading excluded) for ``seconds``. Without
``settings`` it builds a model store (``shared_models`` or the installed models) and a Milvus Lite
temp gallery of ``gallery_faces`` random unit vectors (search cost only: identities meaningless).
Run: ``python -m lookalike_live.bench.gui [--clip PATH] [--model mobilefacenet]``.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings

log = logging.getLogger(__name__)

__all__ = ["run", "main"]


def run(clip: str | Path, *, settings: Settings | None = None, store: Path | None = None, model: str = "mobilefacenet",
        shared_models: Path | None = None, gallery_faces: int = 2000, seconds: float = 6.0,
        top_k: int = 10) -> dict[str, Any]:
    """:func:`measure` with the given settings, or (``settings`` None) with a temp model store and a
    random temp gallery for ``model``. Returns the measurements (``display_fps``, ``max_stall_ms``, ...)."""
    from ..gui.measure import measure

    if settings is not None:
        return measure(clip, settings, store=store, seconds=seconds, top_k=top_k)
    from ..embed import create_embedder
    from ..gallery import Gallery, encode_thumbnail, face_id
    from .live import model_store

    with tempfile.TemporaryDirectory(prefix="bench-gui-data-") as tmp:
        scratch = Path(tmp)
        mstore, weights = model_store(model, scratch, store, shared_models)
        emb = create_embedder(model, backend="onnx", store=mstore)
        dim, spec_name = emb.dim, emb.spec.name
        emb.close()
        rng = np.random.default_rng(0)
        vecs = rng.standard_normal((gallery_faces, dim)).astype(np.float32)
        thumb = encode_thumbnail(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
        uri = str(scratch / "gallery.db")
        with Gallery(uri) as g:
            g.ensure(dim=dim, model=spec_name)
            paths = [f"bench/{i:06d}.jpg" for i in range(gallery_faces)]
            g.upsert_faces([face_id("bench", p, 0) for p in paths], vecs, [str(i % 200) for i in range(gallery_faces)],
                           [f"id {i % 200}" for i in range(gallery_faces)], "bench", paths,
                           thumbnail=[thumb] * gallery_faces)
            g.flush()
        s = Settings(model=model, backend="onnx", milvus_uri=uri, threshold=0.0)
        out = measure(clip, s, store=mstore, seconds=seconds, top_k=top_k)
        out["weights"] = weights
        out["gallery_faces"] = gallery_faces
        return out


def main(argv: Sequence[str] | None = None) -> int:
    from .live import clip_parser

    p = clip_parser(__doc__, "mobilefacenet")
    p.add_argument("--gallery-faces", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=6.0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    res = run(a.clip, model=a.model, shared_models=a.shared_models if a.shared_models.is_dir() else None,
              gallery_faces=a.gallery_faces, seconds=a.seconds)
    sys.stdout.write(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
