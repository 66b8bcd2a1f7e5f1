"""TensorRT engines built from ONNX models, cached on disk.

An engine (``.plan``) only runs on the TensorRT version and the GPU model it was built for,
so it is stored under a key made of: the ONNX file's SHA-256, the TensorRT version, the GPU's
name and compute capability, the precision and the optimisation profile (max and opt batch).
Engines live in ``<model store>/engines/`` next to a ``.json`` that spells the key out; files
are written atomically (temporary file + rename), so a crash never leaves half an engine.

The pure parts (key, profile shapes, precision choice, buffer sizes) need no TensorRT and are
unit-tested on any machine; building needs ``tensorrt`` (and a GPU), imported only when used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, ConfigError, ModelFormatError
from ..models import ModelSpec, models_dir, require, sha256_file

log = logging.getLogger(__name__)

__all__ = [
    "EngineKey",
    "GpuInfo",
    "GPU_INSTALL_HINT",
    "import_tensorrt",
    "onnx_sha256",
    "trt_logger",
    "engines_dir",
    "engine_path",
    "profile_shapes",
    "has_fast_fp16",
    "resolve_precision",
    "io_buffer_nbytes",
    "write_atomic",
    "build_serialized_engine",
    "ensure_engine",
    "build_engine",
]

GPU_INSTALL_HINT = "pip install 'lookalike-live[gpu]'"
PRECISIONS = ("fp16", "fp32")
DEFAULT_OPT_BATCH = 16
WORKSPACE_BYTES = 1 << 30


# --------------------------------------------------------------------------- pure parts
@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. ``digest`` names the cache file."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    max_batch: int
    opt_batch: int

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"need 1 <= opt_batch <= max_batch, got opt {self.opt_batch}, max {self.max_batch}")

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the key's canonical JSON: equal keys, equal digests, whatever the order."""
        data = asdict(self)
        data["compute_capability"] = list(self.compute_capability)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def filename(self, model_name: str) -> str:
        """``<model>-<precision>-b<max>-sm<cc>-<digest[:16]>.plan`` (readable, unique per key)."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
        cc = f"{self.compute_capability[0]}{self.compute_capability[1]}"
        return f"{safe}-{self.precision}-b{self.max_batch}-sm{cc}-{self.digest[:16]}.plan"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capability"] = list(self.compute_capability)
        data["digest"] = self.digest
        return data


def engines_dir(store: Path | None = None) -> Path:
    """``<model store>/engines``."""
    return (store or models_dir()) / "engines"


def engine_path(store: Path | None, model_name: str, key: EngineKey) -> Path:
    return engines_dir(store) / key.filename(model_name)


def profile_shapes(
    chw: tuple[int, int, int], max_batch: int, opt_batch: int = DEFAULT_OPT_BATCH, fixed_batch: int | None = None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) input shapes of the one optimisation profile: batch 1 .. max_batch,
    tuned for ``min(opt_batch, max_batch)``. A model whose ONNX input has a fixed batch gets
    that batch for all three."""
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    if fixed_batch is not None and fixed_batch > 0:
        shape = (fixed_batch, *chw)
        return shape, shape, shape
    opt = max(1, min(opt_batch, max_batch))
    return (1, *chw), (opt, *chw), (max_batch, *chw)


def has_fast_fp16(compute_capability: tuple[int, int]) -> bool:
    """Whether a GPU of this compute capability runs FP16 at least as fast as FP32.

    FP16 arithmetic is full rate from sm_53 (Tegra X1) and sm_60 on, except the consumer
    Pascal chips (sm_61: GTX 10x0, P4/P40) where it runs at 1/64 rate.
    """
    major, minor = compute_capability
    return (major, minor) >= (5, 3) and (major, minor) != (6, 1)


def resolve_precision(
    requested: str, compute_capability: tuple[int, int], fp16_flag_available: bool = True
) -> tuple[str, str]:
    """The precision to build with and why: FP16 where asked for and the GPU has fast FP16
    (and this TensorRT still has ``BuilderFlag.FP16``), else FP32."""
    if requested not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "fp32":
        return "fp32", "FP32 requested"
    cc = f"{compute_capability[0]}.{compute_capability[1]}"
    if not has_fast_fp16(compute_capability):
        return "fp32", f"FP16 requested but this GPU (compute capability {cc}) has no fast FP16: building FP32"
    if not fp16_flag_available:
        return "fp32", ("FP16 requested but this TensorRT has no BuilderFlag.FP16 (TensorRT 11 builds FP16 only "
                        "from strongly typed FP16 ONNX models): building FP32")
    return "fp16", f"FP16 (compute capability {cc} has fast FP16)"


def io_buffer_nbytes(
    max_batch: int, input_chw: tuple[int, int, int], output_dim: int, input_itemsize: int = 4, output_itemsize: int = 4
) -> tuple[int, int]:
    """Bytes of the input and output buffers allocated once at the profile maximum:
    ``max_batch * C*H*W * itemsize`` and ``max_batch * D * itemsize``."""
    if max_batch < 1 or output_dim < 1 or min(input_chw) < 1:
        raise ConfigError(f"invalid buffer geometry: max_batch={max_batch}, input={input_chw}, dim={output_dim}")
    c, h, w = input_chw
    return max_batch * c * h * w * input_itemsize, max_batch * output_dim * output_itemsize


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- TensorRT parts
def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or BackendUnavailableError with the install hint."""
    try:
        import tensorrt as trt
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError from a missing libnvinfer
        raise BackendUnavailableError(
            f"TensorRT is not installed or cannot load ({exc}); install it with: {GPU_INSTALL_HINT} "
            "(needs an NVIDIA GPU and driver), or use the ONNX Runtime backend (--backend onnx)"
        ) from exc
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise BackendUnavailableError(
            f"TensorRT {trt.__version__} is too old (need 10 or newer); upgrade with: {GPU_INSTALL_HINT}"
        )
    return trt


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def onnx_sha256(path: Path) -> str:
    """SHA-256 of an ONNX file, memoised in-process on (path, size, mtime): hashing FaceNet's
    ~90 MB once per process, not once per embedder."""
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    hit = _SHA_MEMO.get(memo_key)
    if hit is None:
        hit = _SHA_MEMO[memo_key] = sha256_file(path)
    return hit


_TRT_LOGGER: Any = None


def trt_logger(trt: Any) -> Any:
    """One TensorRT logger for the process (TensorRT warns when builders/runtimes get different ones)."""
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        _TRT_LOGGER = trt.Logger(trt.Logger.WARNING)
    return _TRT_LOGGER


def build_serialized_engine(
    onnx_path: Path,
    *,
    input_name: str | None,
    input_chw: tuple[int, int, int],
    precision: str,
    max_batch: int,
    opt_batch: int = DEFAULT_OPT_BATCH,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> bytes:
    """Parse ``onnx_path`` and build a serialised engine with one optimisation profile.

    Needs TensorRT and a current CUDA context (the caller pushes one). ``precision`` is the
    resolved one ("fp16" sets ``BuilderFlag.FP16``). Raises ModelFormatError when the ONNX
    cannot be parsed or the build fails.
    """
    trt = import_tensorrt()
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "unknown error"
        raise ModelFormatError(f"TensorRT cannot parse {onnx_path}: {errors}")

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if input_name:
        matches = [t for t in inputs if t.name == input_name]
        if not matches:
            raise ModelFormatError(f"{onnx_path} has no input {input_name!r} (inputs: {[t.name for t in inputs]})")
        tensor = matches[0]
    elif len(inputs) == 1:
        tensor = inputs[0]
    else:
        raise ModelFormatError(f"{onnx_path} has {len(inputs)} inputs; name one in the spec's [input] name")
    onnx_batch = int(tensor.shape[0])
    fixed = onnx_batch if onnx_batch > 0 else None
    mn, opt, mx = profile_shapes(input_chw, max_batch, opt_batch, fixed)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, mn, opt, mx)
    config.add_optimization_profile(profile)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    log.info("building TensorRT %s engine from %s (profile min %s opt %s max %s); this takes a while",
             precision.upper(), onnx_path.name, mn, opt, mx)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelFormatError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    log.info("built the engine in %.1f s", time.perf_counter() - t0)
    return bytes(memoryview(serialized))


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]


def ensure_engine(
    spec: ModelSpec,
    onnx_path: Path,
    store: Path | None,
    gpu: GpuInfo,
    *,
    precision: str = "fp16",
    max_batch: int = 64,
    opt_batch: int = DEFAULT_OPT_BATCH,
    force: bool = False,
) -> tuple[Path, EngineKey, bool]:
    """The cached engine for this model/GPU/TensorRT/precision/profile, built when missing
    (or when ``force``). Returns (path, key, built). Needs a current CUDA context to build."""
    trt = import_tensorrt()
    fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    effective, why = resolve_precision(precision, gpu.compute_capability, fp16_flag)
    (log.info if effective == precision else log.warning)("TensorRT precision: %s", why)
    key = EngineKey(
        onnx_sha256=onnx_sha256(onnx_path),
        trt_version=str(trt.__version__),
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=effective,
        max_batch=max_batch,
        opt_batch=max(1, min(opt_batch, max_batch)),
    )
    path = engine_path(store, spec.name, key)
    if path.is_file() and not force:
        log.info("TensorRT engine cache hit: %s", path)
        return path, key, False
    s = spec.input.size
    data = build_serialized_engine(
        onnx_path, input_name=spec.input.name, input_chw=(3, s, s), precision=effective,
        max_batch=max_batch, opt_batch=key.opt_batch,
    )
    write_atomic(path, data)
    meta = {"model": spec.name, "onnx": str(onnx_path), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **key.to_json()}
    write_atomic(path.with_suffix(".json"), json.dumps(meta, indent=2).encode())
    log.info("TensorRT engine written to %s (%.1f MB)", path, len(data) / 1e6)
    return path, key, True


def build_engine(
    model: str = "facenet-vggface2",
    store: Path | None = None,
    precision: str = "fp16",
    max_batch: int = 64,
    *,
    device_id: int = 0,
    opt_batch: int = DEFAULT_OPT_BATCH,
    force: bool = False,
) -> Path:
    """Build (or find in the cache) the TensorRT engine of an installed model; returns its path.

    Behind ``lookalike-live models build-engine``. Raises ModelNotInstalledError (with the
    install command) for a missing model and BackendUnavailableError without TensorRT,
    pycuda or a GPU.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    spec, onnx_path = require(model, store)
    if spec.kind != "embedder":
        raise ConfigError(f"model {spec.name!r} is a {spec.kind}; TensorRT engines are built for embedders")
    from .tensorrt import CudaContext

    with CudaContext(device_id) as ctx, ctx.active():  # retained, pushed on this thread, popped, released
        path, _, _ = ensure_engine(spec, onnx_path, store, ctx.gpu_info(), precision=precision,
                                   max_batch=max_batch, opt_batch=opt_batch, force=force)
    return path
