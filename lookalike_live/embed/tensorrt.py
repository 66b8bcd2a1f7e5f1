"""TensorRT 10+ backend (with pycuda for memory, streams and the CUDA context).

Importable without TensorRT or pycuda: they are imported at :meth:`TensorRTEmbedder.prepare`
(and by :func:`tensorrt_status`), and their absence raises BackendUnavailableError naming
``pip install 'lookalike-live[gpu]'``.

How it runs (the habits of ARCHITECTURE.md):

* the engine is built from the model's ONNX with ONE optimisation profile for a dynamic batch
  (1 .. ``max_batch``, tuned for ``opt_batch``), FP16 where the GPU has fast FP16, and cached
  on disk (:mod:`.engine_cache`); a cached engine that fails to deserialise is rebuilt;
* page-locked host buffers and device buffers are allocated once, at the profile maximum;
  preprocessing writes straight into the page-locked input buffer;
* named I/O tensors: ``set_tensor_address`` once, ``set_input_shape`` when the batch changes,
  ``execute_async_v3`` on a pycuda stream between async copies; batches above the profile
  maximum are split by :class:`~.base.BaseEmbedder`;
* no ``pycuda.autoinit``: the device's primary context (the one the CUDA runtime inside
  TensorRT uses too) is retained explicitly and pushed/popped around every call, so the
  embedder works from whichever thread calls it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    BackendUnavailableError,
    ConfigError,
    LookalikeError,
    ModelFormatError,
    ModelNotInstalledError,
)
from ..models import ModelSpec
from .base import BaseEmbedder
from .engine_cache import (
    DEFAULT_OPT_BATCH,
    GPU_INSTALL_HINT,
    PRECISIONS,
    EngineKey,
    GpuInfo,
    build_engine,
    ensure_engine,
    import_tensorrt,
    io_buffer_nbytes,
    trt_logger,
)

log = logging.getLogger(__name__)

__all__ = ["TensorRTEmbedder", "CudaContext", "tensorrt_status", "import_pycuda", "build_engine"]

_INIT_LOCK = threading.Lock()


def import_pycuda() -> Any:
    """``pycuda.driver`` (never ``pycuda.autoinit``), or BackendUnavailableError with the install hint."""
    try:
        import pycuda.driver as cuda
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError without libcuda
        raise BackendUnavailableError(
            f"pycuda is not installed or cannot load ({exc}); install it with: {GPU_INSTALL_HINT} "
            "(needs an NVIDIA GPU and driver), or use the ONNX Runtime backend (--backend onnx)"
        ) from exc
    return cuda


def tensorrt_status(device_id: int = 0) -> tuple[bool, str]:
    """Whether the TensorRT backend can run here, and why (or why not). Creates no CUDA context."""
    try:
        trt = import_tensorrt()
        cuda = import_pycuda()
    except BackendUnavailableError as exc:
        return False, str(exc).split(";")[0]
    try:
        with _INIT_LOCK:
            cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # noqa: BLE001 - pycuda raises its own error types
        return False, f"no usable CUDA driver ({exc})"
    if count == 0:
        return False, "no CUDA GPU found"
    if not 0 <= device_id < count:
        return False, f"GPU {device_id} requested but {count} CUDA GPU(s) present"
    dev = cuda.Device(device_id)
    major, minor = dev.compute_capability()
    return True, f"TensorRT {trt.__version__} on GPU {device_id}: {dev.name()} (compute capability {major}.{minor})"


class CudaContext:
    """The primary CUDA context of one GPU, retained for the owner's lifetime.

    Use ``with ctx.active(): ...`` around every CUDA/TensorRT call: it pushes the context on
    the calling thread and pops it afterwards, so the owner can be called from any thread.
    :meth:`release` (or leaving ``with CudaContext(...)``) gives the retained context back.
    """

    def __init__(self, device_id: int = 0) -> None:
        cuda = import_pycuda()
        self._cuda = cuda
        try:
            with _INIT_LOCK:
                cuda.init()
            count = cuda.Device.count()
        except Exception as exc:  # noqa: BLE001
            raise BackendUnavailableError(f"CUDA is not usable here ({exc}); TensorRT needs an NVIDIA GPU and driver") from exc
        if not 0 <= device_id < count:
            raise BackendUnavailableError(
                f"GPU {device_id} requested but {count} CUDA GPU(s) present; pick another device_id or use --backend onnx"
            )
        self.device_id = device_id
        self.device = cuda.Device(device_id)
        self._ctx: Any = self.device.retain_primary_context()  # not pushed yet

    def gpu_info(self) -> GpuInfo:
        major, minor = self.device.compute_capability()
        return GpuInfo(name=str(self.device.name()), compute_capability=(int(major), int(minor)))

    @contextmanager
    def active(self) -> Iterator[CudaContext]:
        if self._ctx is None:
            raise BackendUnavailableError("the CUDA context was released")
        self._ctx.push()
        try:
            yield self
        finally:
            self._cuda.Context.pop()

    def release(self) -> None:
        if self._ctx is not None:
            try:
                self._ctx.detach()
            finally:
                self._ctx = None

    def __enter__(self) -> CudaContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class TensorRTEmbedder(BaseEmbedder):
    """A face embedder running a TensorRT engine built from the model's ONNX file.

    ``precision`` "fp16" (used where the GPU has fast FP16, else FP32 with a log line) or
    "fp32"; ``max_batch``: the profile maximum (larger inputs are split); ``opt_batch``: the
    batch TensorRT tunes for. Engines are cached under ``<store>/engines``. After
    :meth:`prepare`: ``engine_path``, ``engine_key``, ``engine_cache_hit`` (True when the engine
    came from the cache) and ``precision`` (the one built) describe the engine in use.
    """

    backend = "tensorrt"

    def __init__(
        self,
        spec: ModelSpec,
        model_path: str | Path,
        *,
        store: Path | None = None,
        device_id: int = 0,
        max_batch: int = 64,
        precision: str = "fp16",
        opt_batch: int = DEFAULT_OPT_BATCH,
    ) -> None:
        super().__init__(spec, model_path, max_batch=max_batch)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.store = Path(store) if store is not None else None
        self.device_id = int(device_id)
        self.requested_precision = precision
        self.precision = precision
        self.opt_batch = int(opt_batch)
        self.engine_path: Path | None = None
        self.engine_key: EngineKey | None = None
        self.engine_cache_hit: bool | None = None
        self.input_name = ""
        self.output_name = ""
        self._cuda: CudaContext | None = None
        self._cuda_mod: Any = None  # pycuda.driver, bound at prepare()
        self._trt_logger: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._h_in: Any = None
        self._h_out: Any = None
        self._d_in: Any = None
        self._d_out: Any = None
        self._min_batch = 1
        self._last_n = 0

    # ---------------------------------------------------------------- loading
    def _load(self) -> None:
        trt = import_tensorrt()
        cuda = import_pycuda()
        if not self.model_path.is_file():
            raise ModelNotInstalledError(
                f"model {self.spec.name!r} is not installed (looked for {self.model_path}). "
                f"Install it with: {self.spec.install_hint()}"
            )
        self._cuda_mod = cuda
        self._cuda = CudaContext(self.device_id)
        try:
            with self._cuda.active():
                self._load_in_context(trt, cuda)
        except BaseException:
            self._release()
            raise

    def _ensure(self, gpu: GpuInfo, force: bool) -> tuple[Path, EngineKey, bool]:
        return ensure_engine(self.spec, self.model_path, self.store, gpu, precision=self.requested_precision,
                             max_batch=self.requested_max_batch, opt_batch=self.opt_batch, force=force)

    def _deserialize(self, path: Path) -> Any:
        try:
            data = path.read_bytes()
            engine = self._runtime.deserialize_cuda_engine(data)
        except Exception as exc:  # noqa: BLE001 - a corrupt plan may raise instead of returning None
            log.warning("cannot deserialize TensorRT engine %s: %s", path, exc)
            return None
        return engine

    def _load_in_context(self, trt: Any, cuda: Any) -> None:
        gpu = self._cuda.gpu_info()  # type: ignore[union-attr]
        self._trt_logger = trt_logger(trt)
        self._runtime = trt.Runtime(self._trt_logger)
        path, key, built = self._ensure(gpu, force=False)
        engine = self._deserialize(path)
        if engine is None and not built:
            log.warning("cached TensorRT engine %s failed to deserialize (corrupt, or from another "
                        "TensorRT/driver): rebuilding it", path)
            path, key, built = self._ensure(gpu, force=True)
            engine = self._deserialize(path)
        if engine is None:
            raise ModelFormatError(f"TensorRT cannot deserialize the engine it just built ({path})")
        self._engine = engine
        self.engine_path, self.engine_key, self.engine_cache_hit = path, key, not built
        self.precision = key.precision

        inputs: list[str] = []
        outputs: list[str] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        self.input_name = self._pick(inputs, self.spec.input.name, "input")
        self.output_name = self._pick(outputs, self.spec.output.name if self.spec.output else None, "output")

        pmin, _popt, pmax = (tuple(s) for s in engine.get_tensor_profile_shape(self.input_name, 0))
        s = self.size
        if tuple(pmax[1:]) != (3, s, s):
            raise ModelFormatError(
                f"{self.model_path}: engine input {self.input_name!r} has shape {list(pmax)} at its profile "
                f"maximum, the spec of {self.spec.name!r} expects [N, 3, {s}, {s}]"
            )
        out_shape = tuple(engine.get_tensor_shape(self.output_name))
        if len(out_shape) != 2 or out_shape[1] != self.dim:
            raise ModelFormatError(
                f"{self.model_path}: engine output {self.output_name!r} has shape {list(out_shape)}, "
                f"the spec of {self.spec.name!r} expects [N, {self.dim}]"
            )
        self.max_batch = int(pmax[0])
        self._min_batch = int(pmin[0])
        in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.output_name)))

        self._context = engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailableError(f"TensorRT could not create an execution context on GPU {self.device_id}")
        in_bytes, out_bytes = io_buffer_nbytes(self.max_batch, (3, s, s), self.dim,
                                               in_dtype.itemsize, out_dtype.itemsize)
        self._h_in = cuda.pagelocked_empty((self.max_batch, 3, s, s), in_dtype)
        self._h_out = cuda.pagelocked_empty((self.max_batch, self.dim), out_dtype)
        self._d_in = cuda.mem_alloc(in_bytes)
        self._d_out = cuda.mem_alloc(out_bytes)
        self._stream = cuda.Stream()
        ok = self._context.set_tensor_address(self.input_name, int(self._d_in))
        ok = self._context.set_tensor_address(self.output_name, int(self._d_out)) and ok
        if ok is False:
            raise ModelFormatError(f"TensorRT refused the buffer addresses for {self.input_name}/{self.output_name}")
        self._last_n = 0
        log.info("TensorRT engine ready: %s (%s, batch %d..%d, %s, GPU %d %s)", path.name,
                 self.precision.upper(), self._min_batch, self.max_batch,
                 "cache hit" if self.engine_cache_hit else "built now", self.device_id, gpu.name)

    def _pick(self, names: list[str], wanted: str | None, what: str) -> str:
        if wanted:
            if wanted not in names:
                raise ModelFormatError(f"the TensorRT engine of {self.spec.name!r} has no {what} {wanted!r} ({what}s: {names})")
            return wanted
        if len(names) != 1:
            raise ModelFormatError(f"the engine of {self.spec.name!r} has {len(names)} {what}s {names}; "
                                   f"name one in the spec's [{what}] name")
        return names[0]

    # ---------------------------------------------------------------- running
    def _input_buffer(self, k: int) -> np.ndarray:
        return self._h_in[:k]

    def _infer(self, k: int) -> np.ndarray:
        cuda = self._cuda_mod
        n = max(k, self._min_batch)
        if n != k:
            self._h_in[k:n].fill(0)  # a fixed-batch engine: pad the short batch
        with self._cuda.active():  # type: ignore[union-attr]
            if n != self._last_n:
                if not self._context.set_input_shape(self.input_name, (n, 3, self.size, self.size)):
                    raise ModelFormatError(f"TensorRT rejected input shape {(n, 3, self.size, self.size)} "
                                           f"(profile {self._min_batch}..{self.max_batch})")
                self._last_n = n
            cuda.memcpy_htod_async(self._d_in, self._h_in[:n], self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise LookalikeError(f"TensorRT execution failed for a batch of {n} (see the TensorRT log)")
            cuda.memcpy_dtoh_async(self._h_out[:n], self._d_out, self._stream)
            self._stream.synchronize()
        return np.array(self._h_out[:k], dtype=np.float32)  # a copy: the buffer is reused

    def _release(self) -> None:
        ctx, self._cuda = self._cuda, None
        if ctx is None:
            return
        try:
            with ctx.active():
                if self._stream is not None:
                    self._stream.synchronize()
                for dev in (self._d_in, self._d_out):
                    if dev is not None:
                        dev.free()
                for host in (self._h_in, self._h_out):
                    base = getattr(host, "base", None)
                    if base is not None and hasattr(base, "free"):
                        base.free()
                # TensorRT objects free device memory on destruction: drop them while the context is current.
                self._context = self._engine = self._runtime = self._stream = None
                self._h_in = self._h_out = self._d_in = self._d_out = None
        finally:
            ctx.release()
            self._last_n = 0
