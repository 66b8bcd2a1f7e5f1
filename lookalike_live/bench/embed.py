"""Embedding throughput: each embedder next to the bare model, in the same run.

For every model and batch size this measures

* **bare**: a plain ``onnxruntime.InferenceSession`` (same file, same provider, same thread
  count and graph optimisation level as the embedder) on a pre-made float32 NCHW input: the
  model's own cost;
* **embedder**: ``Embedder.embed_array`` on uint8 crops, i.e. the model plus everything the
  pipeline adds around it (validation, preprocessing into the preallocated buffer, batch
  splitting, the output copy, L2 normalisation);
* ``overhead = embedder time / bare time - 1`` (the target: <= 0.15 at batch 32 for FaceNet),
  and ``in_call_overhead_ms``: the embedder's time outside its model calls, timed inside each
  call (:attr:`~lookalike_live.embed.base.BaseEmbedder.last_timing`), which load on a shared
  machine cannot blur;
* ``preprocess_ms``: preprocessing alone, for scale;
* ``ort_defaults_*``: the same model in an InferenceSession with ONNX Runtime's default
  options, to show what the embedder's session options change;
* TensorRT (where usable): img/s and the speed-up over the bare ONNX Runtime session.

Bare and embedder calls alternate (bare, embed, embed, bare, ...) and medians are reported,
so load from other processes on a shared machine hits both alike. FaceNet without installed
weights is measured with seeded random weights (``facenet.export_random_onnx``): same graph,
same cost. Run: ``python -m lookalike_live.bench.embed [--models ...] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..embed.base import physical_cores, preprocess
from ..embed.onnx import OnnxEmbedder, session_options
from ..errors import LookalikeError, ModelNotInstalledError
from ..models import ModelSpec, get_spec, is_facenet, models_dir, require

log = logging.getLogger(__name__)

__all__ = ["run", "main"]

DEFAULT_MODELS = ("facenet-casia-webface", "mobilefacenet")


def _paired(first: Callable[[], object], second: Callable[[], object], seconds: float,
            min_iter: int = 5, max_iter: int = 500) -> tuple[list[float], list[float]]:
    """Time two callables alternately (ABBA order) for about ``seconds``; returns both lists of seconds."""
    first()
    second()  # warm-up (arena growth, lazy kernel selection)
    ta: list[float] = []
    tb: list[float] = []
    deadline = time.perf_counter() + seconds
    i = 0
    while (len(ta) < min_iter or time.perf_counter() < deadline) and len(ta) < max_iter:
        order = ((first, ta), (second, tb)) if i % 2 == 0 else ((second, tb), (first, ta))
        for fn, sink in order:
            t0 = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - t0)
        i += 1
    return ta, tb


def _timed(fn: Callable[[], object], seconds: float, min_iter: int = 5, max_iter: int = 2000) -> list[float]:
    fn()
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    while (len(out) < min_iter or time.perf_counter() < deadline) and len(out) < max_iter:
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _resolve(model: str, store: Path | None, scratch: Path) -> tuple[ModelSpec, Path, str]:
    """(spec, onnx path, where the weights came from); FaceNet falls back to random weights."""
    try:
        spec, path = require(model, store)
        return spec, path, "installed"
    except ModelNotInstalledError:
        spec = get_spec(model, store)
        if not is_facenet(spec):
            raise
    from ..facenet import export_random_onnx  # needs torch (the export extra)

    path = scratch / f"{spec.name}-random.onnx"
    log.info("%s is not installed: benchmarking FaceNet with seeded random weights (same graph, same cost)",
             spec.name)
    export_random_onnx(path, seed=0, size=spec.input.size)
    return spec, path, "random weights (facenet.export_random_onnx, seed 0): real graph, not real weights"


def _bare_session(path: Path, providers: list[str], threads: int, spin: bool) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=session_options(threads, spin), providers=providers)


def _bench_model(spec: ModelSpec, path: Path, batches: Sequence[int], seconds: float,
                 threads: int | None, with_tensorrt: bool, store: Path | None, spin: bool = True) -> dict[str, Any]:
    import onnxruntime as ort

    s = spec.input.size
    rng = np.random.default_rng(0)
    emb = OnnxEmbedder(spec, path, max_batch=max(64, max(batches)), threads=threads, spin=spin)
    emb.prepare()
    sess_opts = emb.session.get_session_options()  # the exact settings the embedder runs with
    providers = emb.session.get_providers()
    bare = _bare_session(path, providers, sess_opts.intra_op_num_threads, emb.spin)
    default = ort.InferenceSession(str(path), providers=providers)  # ONNX Runtime's own defaults, for scale
    in_name, out_name = emb.input_name, emb.output_name
    fixed = emb.fixed_batch
    rows: list[dict[str, Any]] = []
    trt_emb = None
    trt_note = ""
    if with_tensorrt:
        from ..embed.tensorrt import TensorRTEmbedder, tensorrt_status

        ok, why = tensorrt_status()
        trt_note = why
        if ok:
            trt_emb = TensorRTEmbedder(spec, path, store=store or models_dir(), max_batch=64)
            t0 = time.perf_counter()
            try:
                trt_emb.prepare()
                trt_note = f"{why}; engine {'from cache' if trt_emb.engine_cache_hit else 'built'} in " \
                           f"{time.perf_counter() - t0:.1f} s ({trt_emb.precision})"
            except LookalikeError as exc:
                log.warning("TensorRT not measured for %s: %s", spec.name, exc)
                trt_note, trt_emb = f"{why}; failed to prepare: {exc}", None
    try:
        for b in batches:
            pixels = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
            x = preprocess(pixels, spec.input.mean, spec.input.std)  # pre-made float input for the bare model
            chunk = fixed or b
            pieces = [np.ascontiguousarray(x[i:i + chunk]) for i in range(0, b, chunk)]
            if fixed and len(pieces[-1]) < fixed:  # a fixed-batch model takes full batches only
                pad = np.zeros((fixed - len(pieces[-1]), *x.shape[1:]), x.dtype)
                pieces[-1] = np.concatenate([pieces[-1], pad])

            def run_bare(pieces: list[np.ndarray] = pieces, sess: Any = bare) -> None:
                for p in pieces:
                    sess.run([out_name], {in_name: p})

            in_call: list[float] = []  # embedder time outside the model calls, measured inside each call

            def run_embed(pixels: np.ndarray = pixels, sink: list[float] = in_call) -> None:
                emb.embed_array(pixels)
                if emb.last_timing is not None:
                    sink.append(emb.last_timing.overhead_ms)

            t_bare, t_emb = _paired(run_bare, run_embed, seconds)
            pre_out = np.empty_like(x)

            def run_pre(pixels: np.ndarray = pixels, out: np.ndarray = pre_out) -> None:
                preprocess(pixels, spec.input.mean, spec.input.std, out=out)

            t_pre = _timed(run_pre, min(0.5, seconds / 4))

            def run_default(pieces: list[np.ndarray] = pieces) -> None:
                run_bare(pieces, default)

            t_def = _timed(run_default, seconds / 2, min_iter=3)
            mb, me, mp, md = (statistics.median(t) for t in (t_bare, t_emb, t_pre, t_def))
            row = {
                "backend": emb.backend, "batch": b,
                "bare_ms": round(mb * 1e3, 3), "bare_img_s": round(b / mb, 2),
                "embed_ms": round(me * 1e3, 3), "embed_img_s": round(b / me, 2),
                "overhead": round(me / mb - 1, 4),
                "in_call_overhead_ms": round(statistics.median(in_call), 3),
                "preprocess_ms": round(mp * 1e3, 3), "preprocess_share_of_bare": round(mp / mb, 4),
                "iterations": len(t_emb),
                "ort_defaults_ms": round(md * 1e3, 3), "ort_defaults_img_s": round(b / md, 2),
            }
            rows.append(row)
            log.info("%-18s %-9s batch %3d: bare %8.2f ms (%7.1f img/s) | embedder %8.2f ms (%7.1f img/s) "
                     "| overhead %+6.1f%% (in-call %.2f ms) | preprocess %.2f ms", spec.name, emb.backend, b,
                     mb * 1e3, b / mb, me * 1e3, b / me, (me / mb - 1) * 100, statistics.median(in_call), mp * 1e3)
            if trt_emb is not None:
                def run_trt(pixels: np.ndarray = pixels, trt_emb: Any = trt_emb) -> None:
                    trt_emb.embed_array(pixels)

                t_trt = _timed(run_trt, seconds)
                mt = statistics.median(t_trt)
                rows.append({"backend": "tensorrt", "batch": b, "embed_ms": round(mt * 1e3, 3),
                             "embed_img_s": round(b / mt, 2), "speedup_vs_bare_onnx": round(mb / mt, 2),
                             "precision": trt_emb.precision, "iterations": len(t_trt)})
                log.info("%-18s tensorrt  batch %3d: %8.2f ms (%7.1f img/s), %.1fx the bare ONNX Runtime session",
                         spec.name, b, mt * 1e3, b / mt, mb / mt)
    finally:
        emb.close()
        if trt_emb is not None:
            trt_emb.close()
    return {
        "input": [3, s, s], "dim": spec.dim, "model_batch": f"fixed {fixed}" if fixed else "dynamic",
        "providers": providers, "intra_op_threads": sess_opts.intra_op_num_threads,
        "tensorrt": trt_note or "not requested", "results": rows,
    }


def run(
    store: Path | None = None,
    models: Sequence[str] = DEFAULT_MODELS,
    batches: Sequence[int] = (1, 8, 32),
    seconds: float = 3.0,
    *,
    threads: int | None = None,
    tensorrt: bool = True,
    spin: bool = True,
) -> dict[str, Any]:
    """Benchmark the embedders of ``models`` at each batch size; returns JSON-serialisable figures.

    ``seconds``: measuring time per (model, batch) for the bare/embedder pair (each side gets
    about half; at least 5 calls each). ``tensorrt``: also measure TensorRT where usable.
    ``threads``/``spin``: the ONNX Runtime session options (see ``embed.onnx.session_options``).
    A model that is not installed (other than FaceNet, which falls back to random weights) is
    reported under ``skipped``.
    """
    import onnxruntime as ort

    result: dict[str, Any] = {
        "host": {
            "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(),
            "onnxruntime": ort.__version__, "providers": ort.get_available_providers(),
            "numpy": np.__version__,
        },
        "settings": {"batches": list(batches), "seconds": seconds, "threads": threads, "spin": spin},
        "models": {},
        "skipped": {},
    }
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
        for model in models:
            try:
                spec, path, origin = _resolve(model, store, Path(tmp))
            except (LookalikeError, ImportError) as exc:
                log.warning("skipping %s: %s", model, exc)
                result["skipped"][model] = str(exc)
                continue
            # Engines of random-weight models stay in the scratch dir, out of the real engine cache.
            engine_store = store if origin == "installed" else Path(tmp)
            entry = _bench_model(spec, path, batches, seconds, threads, tensorrt, engine_store, spin)
            entry["weights"] = origin
            result["models"][spec.name] = entry
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lookalike_live.bench.embed", description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=None, help="model store (default: $LOOKALIKE_MODELS_DIR)")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-tensorrt", action="store_true")
    parser.add_argument("--no-spin", action="store_true", help="ONNX Runtime threads sleep instead of spinning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    figures = run(args.store, args.models, args.batches, args.seconds, threads=args.threads,
                  tensorrt=not args.no_tensorrt, spin=not args.no_spin)
    sys.stdout.write(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
