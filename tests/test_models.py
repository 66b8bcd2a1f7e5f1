"""Model specs, the model store, fetching with SHA-256 checks, and their error messages."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from lookalike_live import models
from lookalike_live.errors import ChecksumError, ModelNotInstalledError, UnknownModelError


def test_builtin_specs_are_complete() -> None:
    specs = models.registry()
    assert {"facenet-vggface2", "mobilefacenet", "blazeface-short", "blazeface-full"} <= set(specs)
    fn = specs["facenet-vggface2"]
    assert (fn.input.size, fn.input.color, fn.input.mean, fn.input.std, fn.dim) == (160, "RGB", 127.5, 128.0, 512)
    assert fn.alignment.method == "box"
    assert fn.source.url and fn.source.url.startswith("https://github.com/timesler/facenet-pytorch/releases/")
    assert fn.source.sha256 == "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b"
    mf = specs["mobilefacenet"]
    assert (mf.input.size, mf.dim, mf.alignment.method) == (112, 128, "arcface5")
    assert mf.source.url is None  # a fixture: never downloaded or redistributed
    for name in ("blazeface-short", "blazeface-full"):
        s = specs[name]
        assert s.kind == "detector" and s.source.url and s.source.url.startswith("https://storage.googleapis.com/")
        assert s.sha256 == s.source.sha256 and len(s.sha256) == 64


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(UnknownModelError) as err:
        models.get_spec("facenet-casia")
    assert "facenet-vggface2" in str(err.value) and "mobilefacenet" in str(err.value)


def test_missing_model_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalledError) as err:
        models.require("mobilefacenet", store=tmp_path)
    assert "lookalike-live models fetch mobilefacenet --from" in str(err.value)
    with pytest.raises(ModelNotInstalledError) as err:
        models.require("facenet-vggface2", store=tmp_path)
    assert "lookalike-live models fetch facenet-vggface2 && lookalike-live models convert facenet-vggface2" in str(err.value)


def test_fetch_from_shared_installs_and_verifies(tmp_path: Path, shared_models: Path) -> None:
    for name in ("blazeface-short", "blazeface-full", "mobilefacenet"):
        path = models.fetch(name, store=tmp_path, from_dir=shared_models)
        assert path.is_file() and models.sha256_file(path) == models.get_spec(name).sha256
    status = {r.name: r for r in models.list_models(tmp_path)}
    assert status["mobilefacenet"].installed and status["blazeface-full"].installed
    assert not status["facenet-vggface2"].installed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["face_detection_short_range.tflite", "face_detection_full_range_sparse.tflite", "mobilefacenet.onnx"]
    )


def test_wrong_checksum_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "mobilefacenet.onnx").write_bytes(b"not the real model" * 100)
    store = tmp_path / "store"
    with pytest.raises(ChecksumError) as err:
        models.fetch("mobilefacenet", store=store, from_dir=src)
    msg = str(err.value)
    assert models.get_spec("mobilefacenet").sha256 in msg
    assert hashlib.sha256(b"not the real model" * 100).hexdigest() in msg
    assert list(store.iterdir()) == []  # no half-written or temporary file


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args: object) -> None:
        pass


def _serve(payload: bytes) -> tuple[http.server.HTTPServer, str]:
    handler = type("H", (_Handler,), {"payload": payload})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/model.bin"


def test_download_verifies_checksum_and_is_atomic(tmp_path: Path) -> None:
    """The real download path, against a real HTTP server on loopback."""
    payload = bytes(range(256)) * 4000
    server, url = _serve(payload)
    try:
        good = models.download(url, tmp_path / "m.bin", hashlib.sha256(payload).hexdigest(), len(payload))
        assert good.read_bytes() == payload
        with pytest.raises(ChecksumError):
            models.download(url, tmp_path / "bad.bin", "0" * 64)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin"]
    finally:
        server.shutdown()


def test_user_spec_makes_any_onnx_embedder_usable(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "my-arcface.toml").write_text(
        'name = "my-arcface"\nkind = "embedder"\nfile = "my.onnx"\n'
        '[input]\nsize = 112\n[output]\ndim = 512\n[alignment]\nmethod = "arcface5"\n'
    )
    spec = models.get_spec("my-arcface", store=tmp_path)
    assert spec.dim == 512 and spec.alignment.method == "arcface5"
    assert models.get_spec(str(tmp_path / "specs" / "my-arcface.toml")).name == "my-arcface"
