"""Native library noise stays off the terminal unless -v; errors from native code still show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lookalike_live.quiet import is_noise

SEEN = [  # lines MediaPipe/LiteRT/absl wrote on an index build of the sample (2026-12-01)
    b"WARNING: [model_load.cc:402] Sparsity tensors may not yet be fully supported.",
    b"INFO: [environment.cc:36] Creating LiteRT environment with options",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    b"WARNING: Logging before InitGoogle() is written to STDERR",
    b"W0000 00:00:1796136258.675329    6263 inference_runner_litert.cc:1433] Input tensor memory is not aligned",
    b"[model_load.cc:402] Sparsity tensors may not yet be fully supported.",  # two threads' writes interleaved
    b"",  # what is left of a line then
]


def test_what_is_noise() -> None:
    assert all(is_noise(line) for line in SEEN)
    for kept in (b"E0000 00:00:1.2  7 model.cc:12] cannot open the model", b"Fatal Python error: Segmentation fault",
                 b"INFO: [x.cc:1] ERROR while loading", b"Traceback (most recent call last):", b"plain text"):
        assert not is_noise(kept), kept


def test_the_filter_hides_native_info_and_keeps_native_errors() -> None:
    code = ("import os, sys\nfrom lookalike_live.quiet import filter_native_stderr\nfilter_native_stderr()\n"
            "os.write(2, b'INFO: [cpu_registry.cc:75] XNNPACK CPU accelerator registered.\\n')\n"
            "os.write(2, b'E0000 00:00:1.5  9 model.cc:3] the model is broken\\n')\n"
            "print('from python', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # (the native line comes through the filter's thread: its order against Python's may vary)
    assert sorted(proc.stderr.splitlines()) == ["E0000 00:00:1.5  9 model.cc:3] the model is broken", "from python"]


@pytest.mark.slow
def test_index_build_quiet_prints_no_native_lines_and_verbose_does(model_store: Path, celeba_dir: Path,
                                                                    tmp_path: Path) -> None:
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(model_store), "LOOKALIKE_DATA_DIR": str(tmp_path / "data")}
    base = [sys.executable, "-m", "lookalike_live.cli"]
    args = ["index", "build", "--dataset", str(celeba_dir), "--format", "celeba", "--limit", "12", "--no-progress",
            "--model", "mobilefacenet"]
    quiet = subprocess.run([*base, "-q", *args], capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr[-2000:]
    assert "indexed 12 new faces" in quiet.stdout
    loud = subprocess.run([*base, "-v", *args, "--milvus-uri", str(tmp_path / "other.db")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert loud.returncode == 0 and any(is_noise(line.encode()) for line in loud.stderr.splitlines())
    # at the default level too: lookalike-live's own INFO lines, not the libraries' (faiss's loader)
    plain = subprocess.run([*base, "index", "stats", "--milvus-uri", str(tmp_path / "other.db")], capture_output=True,
                           text=True, env=env, timeout=300)
    assert plain.returncode == 0 and "ModuleNotFoundError" not in plain.stderr and "faiss" not in plain.stderr.lower()


def test_native_writers_never_block_when_the_terminal_is_gone() -> None:
    """The terminal closes (a pipe to `head`, a closed ssh session): the filter keeps draining, so
    a native library writing to fd 2 never blocks on a full pipe (it would hang the job)."""
    code = ("import os\nfrom lookalike_live.quiet import filter_native_stderr\nfilter_native_stderr()\n"
            "for i in range(4000):\n    os.write(2, b'E0000 00:00:1.5  9 x.cc:3] a line that passes the filter\\n')\n"
            "print('done')\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None and proc.stdout is not None
    proc.stderr.close()  # nobody reads stderr any more: writes to it fail with EPIPE
    try:
        assert proc.wait(timeout=60) == 0  # a hang fails here (TimeoutExpired)
        assert proc.stdout.read().strip() == b"done"
    finally:
        proc.kill()
