"""The console command, run as a user would (a subprocess of the installed entry point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lookalike_live import __version__


def cli(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike_live.cli", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def test_help_and_version() -> None:
    out = cli("--help").stdout
    for word in ("models", "embed", "index", "match", "run", "monitor", "app", "eval", "bench"):
        assert f"    {word} " in out, f"subcommand {word} missing from --help"
    assert cli("--version").stdout.strip() == f"lookalike-live {__version__}"
    for sub in (["models", "fetch"], ["embed"]):
        text = cli(*sub, "--help").stdout
        assert "--json" in text
    assert "--backend" in cli("embed", "--help").stdout


def test_models_fetch_from_and_list_json(tmp_path: Path, shared_models: Path) -> None:
    env = {"LOOKALIKE_MODELS_DIR": str(tmp_path)}
    res = json.loads(cli("models", "fetch", "--from", str(shared_models), "--json", env=env).stdout)
    assert set(res["installed"]) == {"blazeface-short", "blazeface-full", "mobilefacenet"}
    assert {"facenet-vggface2", "facenet-casia-webface"} <= set(res["skipped"])
    listing = json.loads(cli("models", "list", "--json", env=env).stdout)
    state = {m["name"]: m["installed"] for m in listing["models"]}
    assert state == {"blazeface-short": True, "blazeface-full": True, "mobilefacenet": True, "facenet-vggface2": False,
                     "facenet-casia-webface": False}
    assert [m["name"] for m in listing["models"] if m["default"]] == ["facenet-casia-webface"]
    text = cli("models", "list", env=env).stdout
    assert "facenet-casia-webface *" in text and "* the default embedder" in text


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    env = {"LOOKALIKE_MODELS_DIR": str(tmp_path)}
    proc = cli("models", "fetch", "no-such-model", env=env, check=False)
    assert proc.returncode == 2 and "known models:" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("embed", str(tmp_path), "--out", str(tmp_path / "x.npz"), "--model", "mobilefacenet",
               env=env, check=False)
    assert proc.returncode == 2 and "lookalike-live models fetch" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--backend", "--detector"])
def test_bad_choice_is_rejected_by_argparse(flag: str) -> None:
    proc = cli("embed", "x", "--out", "y.npz", flag, "bogus", check=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["index", "build", "--dataset", "x", "--limit", "-5"], "argument --limit: must be 1 or more, got -5"),
    (["index", "build", "--dataset", "x", "--workers", "-1"], "argument --workers: must be 0 or more, got -1"),
    (["run", "--source", "x", "--headless", "--max-frames", "two"], "argument --max-frames: 'two' is not a whole number"),
    (["run", "--source", "webcam:0", "--headless", "--threshold", "nan"], "threshold must be a finite number, got nan"),
    (["match", "x.jpg", "--threshold", "1.5"], "threshold must be <= 1.0, got 1.5"),
])
def test_numbers_out_of_range_are_refused_before_any_work(argv: list[str], message: str) -> None:
    proc = cli(*argv, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-1000:]
