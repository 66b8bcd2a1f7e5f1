"""Secrets never shown or stored: URL passwords and secret-named query parameters, in logs,
errors, events, --json and the app's settings file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from live_fixtures import LiveGallery, gallery_copy, live_gallery  # noqa: F401

from lookalike_live.redact import redact_text, redact_url, strip_secrets

SECRET = "hunter2"


def test_redact_and_strip() -> None:
    url = f"rtsp://admin:{SECRET}@10.0.0.5:554/stream1?channel=1&token={SECRET}&apiKey={SECRET}"
    assert redact_url(url) == "rtsp://admin:***@10.0.0.5:554/stream1?channel=1&token=***&apiKey=***"
    assert strip_secrets(url) == "rtsp://admin@10.0.0.5:554/stream1?channel=1"
    assert redact_url("rtsp://cam/live?x=1") == "rtsp://cam/live?x=1"  # nothing to hide: unchanged
    assert strip_secrets("/videos/a.mp4") == "/videos/a.mp4" and strip_secrets("webcam:0") == "webcam:0"
    text = f"Fail connecting to http://root:{SECRET}@milvus:19530 (and https://h/p?password={SECRET})"
    assert SECRET not in redact_text(text) and "http://root:***@milvus:19530" in redact_text(text)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_secret_reaches_logs_errors_events_or_json(model_store: Path, gallery_copy: LiveGallery,  # noqa: F811
                                                      tmp_path: Path) -> None:
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(model_store), "LOOKALIKE_DATA_DIR": str(tmp_path / "data")}
    cli = [sys.executable, "-m", "lookalike_live.cli"]
    milvus = f"http://root:{SECRET}@127.0.0.1:{_closed_port()}?token={SECRET}"
    proc = subprocess.run([*cli, "index", "stats", "--milvus-uri", milvus, "--token", SECRET, "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "unreachable" in proc.stderr, proc.stderr[-2000:]
    assert SECRET not in proc.stderr + proc.stdout and "root:***@127.0.0.1" in proc.stderr
    assert "check the host, port and --token" in proc.stderr and "--milvus-token" not in proc.stderr  # flags that exist

    events = tmp_path / "events.jsonl"
    camera = f"door=rtsp://admin:{SECRET}@127.0.0.1:{_closed_port()}/s?token={SECRET}"
    proc = subprocess.run([*cli, "-v", "monitor", "--camera", camera, "--events", str(events), "--duration", "3",
                           "--json", "--model", "mobilefacenet", "--backend", "onnx",
                           "--milvus-uri", gallery_copy.uri], capture_output=True, text=True, env=env, timeout=180)
    logged = proc.stdout + proc.stderr + events.read_text()
    assert "reconnecting" in events.read_text(), logged[-2000:]
    assert SECRET not in logged, [line for line in logged.splitlines() if SECRET in line][:5]
    assert json.loads(proc.stdout)["cameras"]["door"] is not None
