"""TensorRT backend.

The pure parts (engine cache key, profile shapes, precision choice, buffer sizes, batch
splitting, atomic writes) run everywhere. The tests marked ``gpu`` need tensorrt (10+),
pycuda and a CUDA GPU, and skip with the reason otherwise; they check the engine against
ONNX Runtime on the same batch, dynamic batches 1/7/65 (65 > the profile max: split), the
engine cache, the rebuild of a corrupt cached engine and use from a worker thread.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from pathlib import Path

import numpy as np
import pytest

from lookalike_live.embed import batch_slices
from lookalike_live.embed.engine_cache import (
    EngineKey,
    engine_path,
    engines_dir,
    has_fast_fp16,
    io_buffer_nbytes,
    profile_shapes,
    resolve_precision,
    write_atomic,
)
from lookalike_live.errors import ConfigError
from lookalike_live.models import get_spec

KEY = EngineKey(
    onnx_sha256="ab" * 32, trt_version="10.9.0.34", gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability=(9, 0), precision="fp16", max_batch=64, opt_batch=16,
)


# --------------------------------------------------------------------------- pure parts
def test_module_imports_without_tensorrt_or_pycuda() -> None:
    mod = importlib.import_module("lookalike_live.embed.tensorrt")
    spec = get_spec("facenet-vggface2")
    emb = mod.TensorRTEmbedder(spec, "/nonexistent/facenet.onnx")  # construction touches no GPU
    assert (emb.backend, emb.dim, emb.max_batch, emb.prepared) == ("tensorrt", 512, 64, False)


def test_engine_key_is_stable_and_covers_every_field() -> None:
    assert KEY.digest == dataclasses.replace(KEY).digest
    assert len(KEY.digest) == 64
    changes = {
        "onnx_sha256": "cd" * 32, "trt_version": "10.10.0.31", "gpu_name": "NVIDIA A100-SXM4-80GB",
        "compute_capability": (8, 0), "precision": "fp32", "max_batch": 32, "opt_batch": 8,
    }
    digests = {KEY.digest}
    for field, value in changes.items():
        digests.add(dataclasses.replace(KEY, **{field: value}).digest)
    assert len(digests) == len(changes) + 1  # each field alone changes the key


def test_engine_file_name_and_location(tmp_path: Path) -> None:
    name = KEY.filename("facenet-vggface2")
    assert name.startswith("facenet-vggface2-fp16-b64-sm90-") and name.endswith(".plan")
    assert KEY.digest[:16] in name
    assert engines_dir(tmp_path) == tmp_path / "engines"
    assert engine_path(tmp_path, "facenet-vggface2", KEY) == tmp_path / "engines" / name
    assert "/" not in KEY.filename("../evil/name")
    assert KEY.to_json()["digest"] == KEY.digest


def test_engine_key_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="precision"):
        dataclasses.replace(KEY, precision="int8")
    with pytest.raises(ConfigError, match="opt_batch"):
        dataclasses.replace(KEY, opt_batch=128)


def test_profile_shapes() -> None:
    assert profile_shapes((3, 160, 160), 64, 16) == ((1, 3, 160, 160), (16, 3, 160, 160), (64, 3, 160, 160))
    assert profile_shapes((3, 112, 112), 8, 16)[1] == (8, 3, 112, 112)  # opt never above max
    fixed = profile_shapes((3, 112, 112), 64, 16, fixed_batch=1)
    assert fixed == ((1, 3, 112, 112),) * 3  # an ONNX with a fixed batch of 1 keeps it
    with pytest.raises(ConfigError):
        profile_shapes((3, 160, 160), 0)


def test_precision_choice() -> None:
    assert has_fast_fp16((9, 0)) and has_fast_fp16((7, 5)) and has_fast_fp16((6, 0)) and has_fast_fp16((5, 3))
    assert not has_fast_fp16((6, 1)) and not has_fast_fp16((5, 2))
    assert resolve_precision("fp16", (8, 6))[0] == "fp16"
    prec, why = resolve_precision("fp16", (6, 1))
    assert prec == "fp32" and "no fast FP16" in why
    prec, why = resolve_precision("fp16", (9, 0), fp16_flag_available=False)
    assert prec == "fp32" and "BuilderFlag.FP16" in why
    assert resolve_precision("fp32", (9, 0))[0] == "fp32"
    with pytest.raises(ConfigError):
        resolve_precision("bf16", (9, 0))


def test_buffer_sizes_at_the_profile_maximum() -> None:
    assert io_buffer_nbytes(64, (3, 160, 160), 512) == (64 * 3 * 160 * 160 * 4, 64 * 512 * 4)
    assert io_buffer_nbytes(1, (3, 112, 112), 128, input_itemsize=2, output_itemsize=2) == (3 * 112 * 112 * 2, 256)
    with pytest.raises(ConfigError):
        io_buffer_nbytes(0, (3, 160, 160), 512)


def test_batches_above_the_profile_are_split() -> None:
    assert [(s.start, s.stop) for s in batch_slices(1, 64)] == [(0, 1)]
    assert [(s.start, s.stop) for s in batch_slices(7, 64)] == [(0, 7)]
    assert [(s.start, s.stop) for s in batch_slices(65, 64)] == [(0, 64), (64, 65)]
    assert [(s.start, s.stop) for s in batch_slices(130, 64)] == [(0, 64), (64, 128), (128, 130)]


def test_atomic_write_leaves_no_partial_files(tmp_path: Path) -> None:
    target = tmp_path / "engines" / "x.plan"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.plan"]


# --------------------------------------------------------------------------- on a GPU
def _gpu_or_skip() -> None:
    from lookalike_live.embed.tensorrt import tensorrt_status

    ok, why = tensorrt_status()
    if not ok:
        pytest.skip(f"TensorRT backend not usable here: {why}")


@pytest.fixture(scope="module")
def facenet_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(store, onnx path): FaceNet with seeded random weights as the store's facenet-vggface2.onnx."""
    _gpu_or_skip()
    pytest.importorskip("torch", reason="exporting FaceNet to ONNX needs torch (the export extra)")
    from lookalike_live.facenet import export_random_onnx

    store = tmp_path_factory.mktemp("trt-store")
    target = store / get_spec("facenet-vggface2").file
    export_random_onnx(target, seed=0)
    return store, target


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 160, 160, 3), dtype=np.uint8)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.gpu
def test_engine_matches_onnxruntime_on_dynamic_batches(facenet_onnx: tuple[Path, Path]) -> None:
    from lookalike_live.embed.onnx import OnnxEmbedder
    from lookalike_live.embed.tensorrt import TensorRTEmbedder

    store, onnx = facenet_onnx
    spec = get_spec("facenet-vggface2")
    ref = OnnxEmbedder(spec, onnx, device="cpu")
    trt_emb = TensorRTEmbedder(spec, onnx, store=store, max_batch=64, precision="fp16")
    try:
        trt_emb.prepare()
        assert trt_emb.max_batch == 64 and trt_emb.engine_path is not None and trt_emb.engine_path.is_file()
        for n in (1, 7, 65):  # 65: one call of 64 and one of 1
            px = _pixels(n, seed=n)
            got, want = trt_emb.embed_array(px), ref.embed_array(px)
            assert got.shape == (n, 512) and got.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
            limit = 0.999 if trt_emb.precision == "fp16" else 0.9999
            assert _cos(got, want).min() >= limit, (n, trt_emb.precision, _cos(got, want).min())
    finally:
        trt_emb.close()
        ref.close()


@pytest.mark.gpu
def test_engine_cache_hit_and_rebuild_of_a_corrupt_engine(facenet_onnx: tuple[Path, Path]) -> None:
    from lookalike_live.embed.tensorrt import TensorRTEmbedder

    store, onnx = facenet_onnx
    spec = get_spec("facenet-vggface2")
    px = _pixels(3, seed=11)
    first = TensorRTEmbedder(spec, onnx, store=store, max_batch=64)
    first.prepare()
    want = first.embed_array(px)
    first.close()

    second = TensorRTEmbedder(spec, onnx, store=store, max_batch=64)
    second.prepare()
    assert second.engine_cache_hit is True and second.engine_path == first.engine_path
    assert _cos(second.embed_array(px), want).min() > 0.9999
    second.close()

    assert first.engine_path is not None
    first.engine_path.write_bytes(b"not an engine" * 100)
    third = TensorRTEmbedder(spec, onnx, store=store, max_batch=64)
    third.prepare()  # fails to deserialize the cached file, rebuilds it
    assert third.engine_cache_hit is False and third.engine_path == first.engine_path
    assert _cos(third.embed_array(px), want).min() > 0.999
    third.close()


@pytest.mark.gpu
def test_prepare_and_run_from_worker_threads(facenet_onnx: tuple[Path, Path]) -> None:
    from lookalike_live.embed.tensorrt import TensorRTEmbedder

    store, onnx = facenet_onnx
    spec = get_spec("facenet-vggface2")
    emb = TensorRTEmbedder(spec, onnx, store=store, max_batch=64)
    px = _pixels(5, seed=21)
    results: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(tag: str) -> None:
        try:
            emb.prepare()  # the first thread to get here loads; the context is pushed/popped per call
            results[tag] = emb.embed_array(px)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    np.testing.assert_allclose(results["t0"], results["t1"], atol=1e-6)
    np.testing.assert_allclose(emb.embed_array(px), results["t0"], atol=1e-6)  # and from the main thread
    emb.close()


@pytest.mark.gpu
def test_build_engine_for_the_cli(facenet_onnx: tuple[Path, Path]) -> None:
    from lookalike_live.embed.engine_cache import build_engine

    store, _ = facenet_onnx
    path = build_engine("facenet-vggface2", store=store, precision="fp32", max_batch=8)
    assert path.is_file() and path.parent == store / "engines" and "-b8-" in path.name
    assert path.with_suffix(".json").is_file()
    again = build_engine("facenet-vggface2", store=store, precision="fp32", max_batch=8)
    assert again == path
