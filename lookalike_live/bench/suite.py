"""One command, one JSON: every benchmark section, each next to its in-run reference.

Sections: ``detect`` (ms/frame and faces/frame on the Hamilton clip, alignment ms/face),
``embed`` (img/s per model and batch next to a bare ONNX Runtime session), ``build`` (index-build
img/s on the CelebA sample next to the bare embedder), ``search`` (Milvus latency and recall@1
against exact numpy search). Test assets come from ``$LOOKALIKE_SHARED`` (default ../shared).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SECTIONS = ("detect", "embed", "build", "search", "live")


def shared_dir() -> Path:
    return Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))


def machine() -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(), "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
    }


def run_suite(sections: Sequence[str] = SECTIONS, store: Path | None = None, quick: bool = False,
              search_n: int = 202_599, milvus_server: bool = True) -> dict[str, Any]:
    from ..models import fetch, models_dir

    shared = shared_dir()
    store = store or models_dir()
    if (shared / "models").is_dir():  # make sure the fixtures are installed
        for name in ("blazeface-short", "blazeface-full", "mobilefacenet"):
            fetch(name, store=store, from_dir=shared / "models")
    out: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sections": {}}
    for name in sections:
        t0 = time.perf_counter()
        log.info("bench: %s", name)
        try:
            if name == "detect":
                from . import detect

                res = detect.run(store, shared / "testdata" / "video" / "short_hamilton_clip.mp4",
                                 frames=60 if quick else None)
            elif name == "embed":
                from . import embed

                res = embed.run(store, seconds=1.0 if quick else 4.0)
            elif name == "build":
                from . import build

                res = {m: build.run(shared / "testdata" / "celeba", store=store, model=m, limit=200 if quick else None)
                       for m in ("facenet-vggface2", "mobilefacenet")}
            elif name == "search":
                from . import search

                res = search.run(n=20_000 if quick else search_n, with_server=milvus_server)
            elif name == "live":
                from . import live

                res = live.run(shared / "testdata" / "video" / "short_hamilton_clip.mp4", store=store,
                               shared_models=shared / "models", max_frames=90 if quick else None)
            else:
                raise ValueError(f"unknown section {name!r}; known: {', '.join(SECTIONS)}")
        except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others
            log.exception("bench section %s failed", name)
            res = {"error": f"{type(exc).__name__}: {exc}"}
        res["section_seconds"] = round(time.perf_counter() - t0, 1)
        out["sections"][name] = res
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench.py", description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in a minute or two")
    parser.add_argument("--search-n", type=int, default=202_599, help="vectors in the search benchmark")
    parser.add_argument("--no-milvus-server", action="store_true", help="search: Milvus Lite only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run_suite(args.sections, quick=args.quick, search_n=args.search_n, milvus_server=not args.no_milvus_server)
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0 if not any("error" in s for s in result["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
