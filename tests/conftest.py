"""Shared fixtures.

Test assets (model fixtures, CelebA sample, video clip) are found through one setting:
``LOOKALIKE_SHARED`` (default: ``../shared`` next to the repository). Tests that need them
skip with a clear reason where that folder is absent, so a fresh clone elsewhere passes.
"""

from __future__ import annotations

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


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real model store, data dir or config during tests."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(base / "user-models"))
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(base / "user-data"))
    monkeypatch.setenv("LOOKALIKE_CONFIG", str(base / "no-config.toml"))
