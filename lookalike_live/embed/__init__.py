"""Face embedders: aligned crops -> L2-normalised vectors, on ONNX Runtime (CPU/CUDA) or TensorRT.

Every backend has the same call shape (:class:`Embedder`)::

    emb = create_embedder("facenet-vggface2")        # cheap: nothing loaded yet
    emb.prepare()                                     # chooses the device, loads, validates
    vectors = emb.embed(crops)                        # FaceCrops uint8 (N,S,S,3) -> Embeddings (N,D)

``backend="auto"`` picks TensorRT where it is usable (tensorrt and pycuda importable, a CUDA
GPU present), else ONNX Runtime with its CUDA provider when installed, else on the CPU, and
logs which and why.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import BackendUnavailableError, ConfigError
from ..models import DEFAULT_EMBEDDER, require
from .base import BaseEmbedder, Embedder, EmbedTiming, batch_slices, l2_normalize, preprocess
from .engine_cache import GPU_INSTALL_HINT, PRECISIONS

log = logging.getLogger(__name__)

__all__ = [
    "Embedder",
    "BaseEmbedder",
    "EmbedTiming",
    "create_embedder",
    "choose_backend",
    "preprocess",
    "batch_slices",
    "l2_normalize",
    "BACKENDS",
]

BACKENDS = ("auto", "onnx", "tensorrt")


def choose_backend(backend: str = "auto", device_id: int = 0) -> tuple[str, str]:
    """Resolve "auto"/"onnx"/"tensorrt" to "tensorrt", "onnx-cuda" or "onnx-cpu", with the reason.

    "tensorrt" raises BackendUnavailableError (naming the install command) where it cannot run.
    """
    from .onnx import available_providers
    from .tensorrt import tensorrt_status

    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend in ("auto", "tensorrt"):
        ok, why = tensorrt_status(device_id)
        if ok:
            return "tensorrt", why
        if backend == "tensorrt":
            raise BackendUnavailableError(
                f"the TensorRT backend cannot run here: {why}. It needs an NVIDIA GPU with TensorRT 10+ and "
                f"pycuda ({GPU_INSTALL_HINT}); or use backend 'onnx'"
            )
        trt_note = f"TensorRT not used: {why}"
    else:
        trt_note = "ONNX Runtime requested"
    providers = available_providers()
    if "CUDAExecutionProvider" in providers:
        return "onnx-cuda", f"{trt_note}; ONNX Runtime has the CUDA provider"
    return "onnx-cpu", f"{trt_note}; ONNX Runtime has no CUDA provider (providers: {', '.join(providers)})"


def create_embedder(
    model: str = DEFAULT_EMBEDDER,
    backend: str = "auto",
    store: Path | None = None,
    device_id: int = 0,
    max_batch: int = 64,
    precision: str = "fp16",
    threads: int | None = None,
    flip_tta: bool = False,
    spin: bool = True,
) -> Embedder:
    """An embedder for an installed model (registry name or spec ``.toml`` path), not yet prepared.

    ``backend``: "auto" | "onnx" | "tensorrt" (see :func:`choose_backend`); ``max_batch``: the
    largest batch per model call (larger inputs are split; for TensorRT the profile maximum);
    ``precision``: "fp16" | "fp32" (TensorRT only); ``threads``: ONNX Runtime intra-op threads
    on CPU (default: physical cores); ``spin``: ONNX Runtime's idle threads busy-wait (pass False
    where other busy threads share a small CPU, see ``onnx.session_options``); ``flip_tta``: embed
    each face and its mirror image and sum them (twice the model work). Raises ModelNotInstalledError naming the install
    command, UnknownModelError, ConfigError or BackendUnavailableError.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if int(max_batch) < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    spec, path = require(model, store)
    if spec.kind != "embedder" or spec.output is None:
        raise ConfigError(f"model {spec.name!r} is a {spec.kind}, not a face embedder")
    chosen, why = choose_backend(backend, device_id)
    log.info("embedder %s: backend %s (%s)", spec.name, chosen, why)
    if chosen == "tensorrt":
        from .tensorrt import TensorRTEmbedder

        embedder: BaseEmbedder = TensorRTEmbedder(spec, path, store=store, device_id=device_id,
                                                  max_batch=max_batch, precision=precision)
    else:
        from .onnx import OnnxEmbedder

        # "auto": the CUDA provider when it starts, else the CPU (OnnxEmbedder logs a provider that fails to start).
        embedder = OnnxEmbedder(spec, path, max_batch=max_batch, device="auto" if chosen == "onnx-cuda" else "cpu",
                                device_id=device_id, threads=threads, spin=spin)
    embedder.flip_tta = bool(flip_tta)
    return embedder
