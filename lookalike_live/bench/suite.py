"""One command, one JSON: every benchmark section, each next to its in-run reference.

Sections: ``accuracy`` (``eval identify`` on the CelebA sample with real FaceNet (CASIA-WebFace, where
installed) and the MobileFaceNet fixture: 7 gallery photos per identity, the last 20 identities as
people absent from the gallery, every improvement scored),
``detect`` (ms/frame and faces/frame on the Hamilton clip, alignment ms/face),
``embed`` (img/s per model and batch next to a bare ONNX Runtime session), ``build`` (index-build
img/s on the CelebA sample next to the bare embedder: faces placed by landmarks and by the detector,
1 and 2 prepare workers), ``scale`` (the build's rate, memory, disk, resume cost and search latency
on synthetic CelebA trees of 1k, 5k and 20k photos; 202,599 with --full), ``search`` (Milvus latency and recall@1
against exact numpy search), ``live`` (fps on the clip with tracking next to every face of every
frame), ``monitor`` (1-16 RTSP cameras from one loopback relay at detect_fps 5 and every frame:
per-camera analysed fps, skips, drops, decision latency, CPU, memory), ``overlay`` (ms to lay out and draw the lookalike overlay for 1-16 faces, headless and with Qt,
next to OpenCV boxes and ASCII labels). Each section runs in a fresh process and reports its own peak memory. Test assets come
from ``$LOOKALIKE_SHARED`` (default ../shared).
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

SECTIONS = ("accuracy", "detect", "embed", "build", "scale", "search", "live", "monitor", "overlay")
#: The accuracy section's models: real FaceNet (from the package registry) and the MobileFaceNet fixture.
ACCURACY_MODELS = ("facenet-casia-webface", "mobilefacenet")


def shared_dir() -> Path:
    return Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))


def machine() -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(), "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
    }


def run_section(name: str, shared: Path, store: Path, quick: bool = False, search_n: int = 202_599,
                milvus_server: bool = True, plots_dir: Path | None = None, full: bool = False) -> dict[str, Any]:
    """One section's figures (raises on failure)."""
    if name == "accuracy":
        from ..analyzer import FaceAnalyzer
        from ..config import load_settings
        from ..datasets import open_dataset
        from ..evaluation import evaluate_dataset
        from ..indexing import gallery_detector
        from ..models import get_spec
        from .celeba_fixture import annotated_sample

        dataset = open_dataset(shared / "testdata" / "celeba", "celeba")
        # --quick: no second pass with the gallery placed by landmarks
        marked_ds = None if quick else open_dataset(annotated_sample(
            shared / "testdata" / "celeba", _bench_cache() / "celeba-annotated", store), "celeba")
        by_model: dict[str, Any] = {}
        for model in ACCURACY_MODELS:  # real FaceNet where installed, and the MobileFaceNet fixture beside it
            spec = get_spec(model, store)
            if not spec.is_installed(store):
                by_model[model] = {"not_run": f"not installed: {spec.install_hint()}"}
                continue
            settings = load_settings({"model": model, "flip_tta": False}, path=Path(os.devnull))
            with FaceAnalyzer.from_settings(settings, store=store) as analyzer, gallery_detector(store=store) as det:
                res = evaluate_dataset(dataset, analyzer, gallery_per_id=7, holdout_ids=20,
                                       match_by=settings.match_by, study=True, progress=False, gallery_detector=det,
                                       plots=plots_dir if not any("plots" in r for r in by_model.values()) else None)
            res["skipped"] = len(res["skipped"])
            if marked_ds is not None:
                # the same split with the gallery placed by landmarks (a landmark file from our detector,
                # celeba_fixture) instead of detected, as `index build` does with CelebA's own file
                with FaceAnalyzer.from_settings(settings, store=store) as analyzer, \
                        gallery_detector(store=store) as det:
                    marked = evaluate_dataset(marked_ds, analyzer, gallery_per_id=7, holdout_ids=20,
                                              match_by=settings.match_by, progress=False, gallery_detector=det)
                res["gallery_by_landmarks"] = {k: marked.get(k) for k in
                                               ("top1", "top5", "tpir_at_fpir_0.01", "tpir_at_fpir_0.1", "queries")}
            by_model[model] = res
        return {"by_model": by_model}
    if name == "detect":
        from . import detect

        return detect.run(store, shared / "testdata" / "video" / "short_hamilton_clip.mp4", frames=60 if quick else None)
    if name == "embed":
        from . import embed

        return embed.run(store, seconds=1.0 if quick else 4.0)
    if name == "build":
        from . import build
        from .celeba_fixture import annotated_sample
        celeba, limit = shared / "testdata" / "celeba", 200 if quick else None
        annotated = annotated_sample(celeba, _bench_cache() / "celeba-annotated", store)
        fn, mfn = "facenet-casia-webface", "mobilefacenet"
        # faces placed by the (stand-in) landmark file, with the default workers, then by the detector
        out = {f"{fn}, landmarks": build.run(annotated, store=store, model=fn, limit=limit),
               f"{fn}, detector": build.run(celeba, store=store, model=fn, limit=limit)}
        for w in (1, 2):
            out[f"{mfn}, landmarks, {w} worker{'s' if w > 1 else ''}"] = build.run(
                annotated, store=store, model=mfn, limit=limit, workers=w)
        out[f"{mfn}, detector"] = build.run(celeba, store=store, model=mfn, limit=limit)
        return out
    if name == "scale":
        from . import scale

        sizes = (1_000, 2_000) if quick else scale.SIZES + ((scale.FULL,) if full else ())
        return scale.run(shared, store=store, sizes=sizes, cache=_bench_cache(), plots_dir=plots_dir)
    if name == "search":
        from . import search

        return search.run(n=20_000 if quick else search_n, with_server=milvus_server)
    if name == "live":
        from . import live

        return live.run(shared / "testdata" / "video" / "short_hamilton_clip.mp4", store=store,
                        shared_models=shared / "models", max_frames=90 if quick else None)
    if name == "monitor":
        from . import monitor

        return monitor.run(shared / "testdata" / "video" / "short_hamilton_clip.mp4", store=store,
                           shared_models=shared / "models", cameras=(1, 4) if quick else monitor.CAMERAS,
                           warmup=5.0 if quick else 15.0, seconds=10.0 if quick else 30.0, plots_dir=plots_dir)
    if name == "overlay":
        from . import overlay

        return overlay.run(shared / "testdata" / "video" / "short_hamilton_clip.mp4", repeats=10 if quick else 40)
    raise ValueError(f"unknown section {name!r}; known: {', '.join(SECTIONS)}")


def _bench_cache() -> Path:
    """Where the bench keeps what it makes once (annotated and synthetic CelebA trees)."""
    from ..config import data_dir

    return data_dir() / "bench"


def _child(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run one section in this (fresh) process; its peak resident memory is the section's own."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    res = run_section(name, **kwargs)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return res


def run_suite(sections: Sequence[str] = SECTIONS, store: Path | None = None, quick: bool = False,
              search_n: int = 202_599, milvus_server: bool = True, plots_dir: Path | None = None,
              isolate: bool = True, full: bool = False) -> dict[str, Any]:
    """Every section in turn, each (with ``isolate``) in a fresh process so that its peak memory is
    its own. A failed section is reported under its name with ``error`` and the others go on.
    With ``plots_dir``: the accuracy plots and ``latency.png`` (from the sections' samples)."""
    import concurrent.futures
    import multiprocessing

    from ..models import fetch, get_spec, models_dir

    shared = shared_dir()
    store = store or models_dir()
    if (shared / "models").is_dir():  # make sure the fixtures are installed
        for name in ("blazeface-short", "blazeface-full", "mobilefacenet"):
            if not get_spec(name, store).is_installed(store):
                fetch(name, store=store, from_dir=shared / "models")
    out: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": quick,
                           "sections": {}}
    kwargs: dict[str, Any] = {"shared": shared, "store": store, "quick": quick, "search_n": search_n,
              "milvus_server": milvus_server, "plots_dir": plots_dir, "full": full}
    for name in sections:
        if name not in SECTIONS:
            raise ValueError(f"unknown section {name!r}; known: {', '.join(SECTIONS)}")
        t0 = time.perf_counter()
        log.info("bench: %s", name)
        try:
            if isolate:
                ctx = multiprocessing.get_context("spawn")
                with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                    res = pool.submit(_child, name, kwargs).result()
            else:
                res = run_section(name, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others
            log.exception("bench section %s failed", name)
            res = {"error": f"{type(exc).__name__}: {exc}"}
        res["section_seconds"] = round(time.perf_counter() - t0, 1)
        out["sections"][name] = res
    out["peak_rss_mb"] = max([s.get("peak_rss_mb", 0) for s in out["sections"].values()]
                             + [round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)])
    if plots_dir is not None:
        samples = latency_samples(out)
        if samples:
            from ..plots import plot_latency_histograms

            plot_latency_histograms(samples, Path(plots_dir) / "latency.png",
                                    title=f"Latency on {out['machine']['cpus']} CPU cores")
    return out


def latency_samples(result: dict[str, Any]) -> dict[str, list[float]]:
    """Per-call latencies (ms) the sections recorded, by label, for the latency histograms."""
    sec = result.get("sections", {})
    out: dict[str, list[float]] = {}
    for name, b in (sec.get("search", {}).get("backends") or {}).items():
        s = b.get("search") if isinstance(b, dict) else None
        for nq in ("nq1", "nq8"):
            if s and s.get(nq) and s[nq].get("samples_ms"):
                out[f"search {name}, {nq.replace('nq', 'nq=')}"] = s[nq]["samples_ms"]
    for mode, m in (sec.get("live", {}).get("modes") or {}).items():
        if m.get("frame_ms_samples"):
            out[f"live frame, {mode}"] = m["frame_ms_samples"]
    full = (sec.get("detect", {}).get("detection") or {}).get("full", {})
    if full.get("samples_ms"):
        out["detection, BlazeFace full"] = full["samples_ms"]
    return out


EPILOG = ("Typical: scripts/bench.py --out bench-results/bench.json --plots bench-results --readme README.md "
          "(every section, 20-25 min on 2 cores: `make results`). --quick: a smoke run in a few minutes.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``scripts/bench.py`` and ``lookalike-live bench``."""
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="sections to run (default: all)")
    parser.add_argument("--out", type=Path, metavar="FILE.json", help="also write the JSON to this file")
    parser.add_argument("--plots", type=Path, metavar="DIR",
                        help="write the plots here: roc.png, scores.png, pca.png (accuracy), latency.png")
    parser.add_argument("--readme", type=Path, metavar="README.md",
                        help="rewrite the Results section between the results markers of this file")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="run nothing: take the figures from this earlier JSON (with --readme)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in a few minutes")
    parser.add_argument("--search-n", type=int, default=202_599, help="vectors in the search benchmark")
    parser.add_argument("--full", action="store_true",
                        help="scale: also a synthetic tree of all 202,599 CelebA photos (~19 GB of JPEGs in the data "
                        "dir's bench/ folder, about two hours on 2 cores)")
    parser.add_argument("--no-milvus-server", action="store_true", help="search: Milvus Lite only")
    parser.add_argument("--in-process", action="store_true",
                        help="run the sections in this process (no per-section peak memory)")


def execute(args: argparse.Namespace) -> int:
    """Run (or load) the suite as ``args`` say; print the JSON; 1 when a section failed."""
    if args.from_json:
        result = json.loads(args.from_json.read_text())
    else:
        result = run_suite(args.sections, quick=args.quick, search_n=args.search_n,
                           milvus_server=not args.no_milvus_server, plots_dir=args.plots,
                           isolate=not args.in_process, full=args.full)
    text = json.dumps(result, indent=2, default=str)
    if args.out and not args.from_json:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.readme:
        from .report import render, update_readme

        plots = args.plots or (args.from_json.parent if args.from_json else None)
        changed = update_readme(args.readme, render(result, plots, args.readme.resolve().parent))
        log.info("%s: Results section %s", args.readme, "rewritten" if changed else "unchanged")
    sys.stdout.write(text + "\n")
    return 0 if not any("error" in s for s in result["sections"].values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench.py", description=__doc__.split("\n")[0], epilog=EPILOG)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return execute(args)


if __name__ == "__main__":
    sys.exit(main())
