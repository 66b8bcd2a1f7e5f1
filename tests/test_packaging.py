"""The core install serves index, match, run --headless and monitor without the `app` extra (PyQt6):
each command runs in a subprocess where importing PyQt6 fails, as it would where it is not
installed; `app` says which extra to install. (matplotlib is the `plots` extra, but MediaPipe's
vision package imports it, so a core install has it too and it is not blocked here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BLOCK = """
import importlib.abc, sys
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('PyQt6',):
            raise ImportError(f"No module named {name!r} (blocked: not in the core install)")
        return None
sys.meta_path.insert(0, _NotInstalled())
from lookalike_live import cli
code = cli.main(sys.argv[1:])
assert not any(m.split('.')[0] in ('PyQt6',) for m in sys.modules)
sys.exit(code)
"""


def _core(argv: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK, *argv], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.mark.slow
def test_core_commands_run_without_the_app_extra(model_store: Path, celeba_dir: Path, hamilton_clip: Path,
                                                            tmp_path: Path) -> None:
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(model_store), "LOOKALIKE_DATA_DIR": str(tmp_path / "data"),
           "QT_QPA_PLATFORM": "offscreen"}
    common = ["--model", "mobilefacenet", "--backend", "onnx", "--milvus-uri", str(tmp_path / "g.db")]
    proc = _core(["index", "build", "--dataset", str(celeba_dir), "--format", "celeba", "--limit", "30",
                  "--no-progress", "--json", *common], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["gallery"]["faces"] > 20
    photo = next((celeba_dir / "Img" / "img_celeba").glob("*.jpg"))
    proc = _core(["match", str(photo), "--json", *common], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["faces"][0]["nearest"] is not None
    proc = _core(["run", "--source", str(hamilton_clip), "--headless", "--max-frames", "20", "--out",
                  str(tmp_path / "a.mp4"), "--json", *common], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["out_frames"] == 20
    proc = _core(["monitor", "--camera", "door=rtsp://127.0.0.1:9/none", "--events", str(tmp_path / "e.jsonl"),
                  "--duration", "2", "--json", *common], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "door" in json.loads(proc.stdout)["cameras"]
    # what needs an extra says which one
    proc = _core(["app", "--source", str(hamilton_clip)], env)
    assert proc.returncode == 2 and "lookalike-live[app]" in proc.stderr, proc.stderr[-2000:]
