"""The index build's cost curve: synthetic CelebA trees of N photos (``celeba_fixture.synthetic_celeba``),
each built by ``lookalike-live index build`` in a fresh process (its own peak memory), then killed
at 50 % and resumed, then searched.

Per N: img/s, the build process's peak RSS, that minus the gallery's own vectors (N x dim x 4
bytes, which the local index holds in memory) and minus all of the gallery's rows (Milvus Lite runs in
the build's process and keeps the collection in memory: about its size on disk), the prepare
workers' peak RSS, the gallery's size on
disk, the resume after a SIGKILL at the upsert that crosses 50 % (seconds, photos read again that
had been read before the kill, rows lost), and search p50/p95 on the result.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SIZES = (1_000, 5_000, 20_000)
FULL = 202_599
INSERT_BATCH = 256
#: run by the build's child process: the CLI, then its own peak RSS on stderr (VmHWM: ru_maxrss of a
#: process started by fork and exec would include its parent's)
_RUN = ("import sys\n"
        "from lookalike_live import cli\n"
        "from lookalike_live.workers import peak_rss_mb\n"
        "code = cli.main(sys.argv[1:])\n"
        "print(f'PEAK_RSS_MB {peak_rss_mb():.1f}', file=sys.stderr)\n"
        "sys.exit(code)\n")


def _build(tree: Path, uri: str, model: str, store: Path | None, env: dict[str, str], timeout: float
           ) -> tuple[subprocess.CompletedProcess[str], float]:
    return _build_into(tree, uri, "faces", model, store, env, timeout)


def _build_into(tree: Path, uri: str, collection: str, model: str, store: Path | None, env: dict[str, str],
                timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    cmd = [sys.executable, "-c", _RUN, "index", "build", "--dataset", str(tree), "--model", model, "--milvus-uri", uri,
           "--collection", collection, "--insert-batch", str(INSERT_BATCH), "--no-progress", "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, **({"LOOKALIKE_MODELS_DIR": str(store)}
                                                                          if store else {})}, timeout=timeout)
    return proc, time.perf_counter() - t0


def _peak(stderr: str) -> float:
    m = re.search(r"PEAK_RSS_MB ([\d.]+)", stderr)
    return float(m.group(1)) if m else float("nan")


def _disk_mb(uri: str) -> float:
    total = 0
    for p in (Path(uri), Path(uri + ".lookalike-index")):
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total / 2**20


def _search_ms(uri: str, dim: int, n: int = 200) -> dict[str, float]:
    from ..gallery import Gallery

    with Gallery(uri) as g:
        rng = np.random.default_rng(0)
        q = rng.normal(size=(n, dim)).astype(np.float32)
        g.search(q[:1])  # warm: loads the local index
        times = []
        for v in q:
            t0 = time.perf_counter()
            g.search(v[None], k=1)
            times.append((time.perf_counter() - t0) * 1000)
    return {"search_p50_ms": round(float(np.percentile(times, 50)), 3),
            "search_p95_ms": round(float(np.percentile(times, 95)), 3)}


def run_one(tree: Path, n: int, model: str, store: Path | None, scratch: Path, dim: int) -> dict[str, Any]:
    """Build, kill-and-resume and search figures for one tree of ``n`` photos."""
    env = {**os.environ, "LOOKALIKE_DATA_DIR": str(scratch / f"data-{n}")}
    timeout = 600 + n / 5
    uri = str(scratch / f"full-{n}.db")
    proc, wall = _build(tree, uri, model, store, env, timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"build of {n} photos failed: {proc.stderr[-1500:]}")
    summary = json.loads(proc.stdout)
    rss, workers_rss = _peak(proc.stderr), summary["workers_peak_rss_mb"]
    vectors_mb = summary["gallery"]["faces"] * dim * 4 / 2**20
    out: dict[str, Any] = {
        "photos": n, "faces": summary["faces"], "skipped": len(summary["skipped"]),
        "images_per_second": summary["images_per_second"], "process_seconds": round(wall, 2),
        "peak_rss_mb": round(rss, 1), "vectors_mb": round(vectors_mb, 1),
        "peak_rss_minus_vectors_mb": round(rss - vectors_mb, 1), "workers_peak_rss_mb": round(workers_rss, 1),
        "workers": summary["workers"], "aligned_by": summary["aligned_by"], "gallery_disk_mb": round(_disk_mb(uri), 1),
    }
    # Milvus Lite runs inside the build's process and holds the collection's rows (vectors, thumbnails,
    # fields) in memory: about what it writes to disk
    out["peak_rss_minus_gallery_mb"] = round(rss - out["gallery_disk_mb"], 1)
    out.update(_search_ms(uri, dim))
    shutil.rmtree(scratch / f"data-{n}", ignore_errors=True)

    # killed at the upsert that crosses 50 %, then resumed
    kill_uri = str(scratch / f"kill-{n}.db")
    at = max(1, math.ceil(n / 2 / INSERT_BATCH))
    killed, killed_wall = _build(tree, kill_uri, model, store, {**env, "LOOKALIKE_FAULT": f"build:before-upsert@{at}"},
                                 timeout)
    if killed.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the build to kill at 50 % ended with {killed.returncode}: {killed.stderr[-1500:]}")
    read = re.search(r"killed at build:before-upsert \((\d+) photos read\)", killed.stderr)
    resumed, resume_wall = _build(tree, kill_uri, model, store, env, timeout)
    if resumed.returncode != 0:
        raise RuntimeError(f"the resumed build failed: {resumed.stderr[-1500:]}")
    r = json.loads(resumed.stdout)
    read_before = int(read.group(1)) if read else None
    out["resume"] = {
        "killed_after_seconds": round(killed_wall, 2), "photos_read_before_kill": read_before,
        "rows_saved_before_kill": r["already_indexed"], "resume_seconds": round(resume_wall, 2),
        "photos_read_again": None if read_before is None else read_before - r["already_indexed"] - r["previously_skipped"],
        "insert_batch": INSERT_BATCH, "faces_after_resume": r["gallery"]["faces"],
        "same_faces_as_uninterrupted": r["gallery"]["faces"] == summary["gallery"]["faces"],
    }
    for p in scratch.glob(f"*-{n}.db*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
    return out


def run_server(trees: dict[int, Path], model: str, store: Path | None, scratch: Path) -> dict[str, Any]:
    """The same builds into a Milvus server (``milvus-server`` from the venv): the build process then
    holds no database, so its peak RSS is the pipeline's own. {N: img/s, peak RSS, workers' peak RSS}."""
    from .search import _milvus_server

    out: dict[str, Any] = {}
    with _milvus_server(scratch) as uri:
        for n, tree in trees.items():
            env = {**os.environ, "LOOKALIKE_DATA_DIR": str(scratch / f"data-server-{n}")}
            proc, wall = _build_into(tree, uri, f"scale_{n}", model, store, env, 600 + n / 5)
            if proc.returncode != 0:
                raise RuntimeError(f"build of {n} photos into the server failed: {proc.stderr[-1500:]}")
            summary = json.loads(proc.stdout)
            rss, workers_rss = _peak(proc.stderr), summary["workers_peak_rss_mb"]
            out[str(n)] = {"photos": n, "faces": summary["faces"], "images_per_second": summary["images_per_second"],
                           "process_seconds": round(wall, 2), "peak_rss_mb": round(rss, 1),
                           "workers_peak_rss_mb": round(workers_rss, 1)}
    return out


def run(shared: Path, store: Path | None = None, model: str = "facenet-casia-webface", sizes: tuple[int, ...] = SIZES,
        cache: Path | None = None, plots_dir: Path | None = None, with_server: bool = True) -> dict[str, Any]:
    """The scale section: every size in ``sizes`` (see the module doc), on Milvus Lite and (with
    ``with_server``) into a Milvus server. Trees are kept in ``cache`` (default: the data dir's
    bench/ folder) for the next run."""
    from ..config import data_dir
    from ..models import get_spec
    from .celeba_fixture import annotated_sample, synthetic_celeba

    cache = cache or data_dir() / "bench"
    spec = get_spec(model, store)
    if not spec.is_installed(store):
        return {"not_run": f"{model} not installed: {spec.install_hint()}"}
    annotated = annotated_sample(shared / "testdata" / "celeba", cache / "celeba-annotated", store)
    by_size: dict[str, Any] = {}
    trees: dict[int, Path] = {}
    out: dict[str, Any] = {"model": model, "landmarks": "from our detector (see celeba_fixture)"}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            trees[n] = synthetic_celeba(annotated, cache / f"celeba-synthetic-{n}", n)
            log.info("scale: %d photos (tree ready in %.0f s)", n, time.perf_counter() - t0)
            by_size[str(n)] = run_one(trees[n], n, model, store, Path(tmp), int(spec.output.dim) if spec.output else 512)
        if with_server:
            try:
                out["milvus_server"] = run_server(trees, model, store, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - the Lite figures stand on their own
                log.warning("scale: the Milvus server builds were skipped: %s", exc)
                out["milvus_server"] = {"skipped": str(exc)[:500]}
    out["by_size"] = by_size
    if plots_dir is not None and by_size:
        server = out.get("milvus_server") if "skipped" not in out.get("milvus_server", {"skipped": 1}) else None
        out["plot"] = str(plot(by_size, Path(plots_dir) / "scale.png", model, server))
    return out


def plot(by_size: dict[str, Any], path: Path, model: str, server: dict[str, Any] | None = None) -> Path:
    """img/s and peak memory (with and without the gallery's vectors) against N."""
    from ..plots import _new_figure, _save

    ns = [int(k) for k in by_size]
    fig = _new_figure((9.0, 3.6))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(ns, [by_size[str(n)]["images_per_second"] for n in ns], "o-", label="Milvus Lite")
    ax1.set(xscale="log", xlabel="photos", ylabel="img/s", title=f"index build rate ({model})")
    ax1.set_ylim(bottom=0)
    ax2.plot(ns, [by_size[str(n)]["peak_rss_mb"] for n in ns], "o-", label="build process, Milvus Lite")
    ax2.plot(ns, [by_size[str(n)]["peak_rss_minus_vectors_mb"] for n in ns], "s--", label="minus the vectors")
    ax2.plot(ns, [by_size[str(n)]["peak_rss_minus_gallery_mb"] for n in ns], "d-.", label="minus the gallery's rows")
    ax2.plot(ns, [by_size[str(n)]["workers_peak_rss_mb"] for n in ns], "^:", label="a prepare worker")
    if server:
        sn = [int(k) for k in server]
        ax2.plot(sn, [server[str(n)]["peak_rss_mb"] for n in sn], "x-", label="build process, Milvus server")
        ax1.plot(sn, [server[str(n)]["images_per_second"] for n in sn], "x-", label="Milvus server")
        ax1.legend(fontsize=8)
    ax2.set(xscale="log", xlabel="photos", ylabel="peak RSS (MB)", title="memory")
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=8)
    return _save(fig, path)
