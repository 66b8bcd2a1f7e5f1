"""The :class:`Embedder` protocol, shared preprocessing and the logic every backend shares.

Shapes, dtypes and colour order, everywhere in this package:

* crops in: ``uint8 (N, S, S, 3)`` (NHWC), in the colour order the model's spec names
  (``spec.input.color``, "RGB" for the built-in models), ``S = spec.input.size``;
* network input: ``float32 (N, 3, S, S)`` (NCHW), ``(x - spec.input.mean) / spec.input.std``;
* vectors out: ``float32 (N, D)``, each row L2-normalised, ``D = spec.output.dim``.

A backend subclasses :class:`BaseEmbedder` and implements four small hooks: ``_load`` (choose
the device, load the model, allocate buffers), ``_input_buffer(k)`` (where preprocessing
writes k rows), ``_infer(k)`` (run the model on those rows) and ``_release``. Validation,
batch splitting, preprocessing and normalisation live here, so every backend has the same
call shape and the same error messages.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError, ShapeError
from ..models import ModelSpec
from ..types import Embeddings, FaceCrops

log = logging.getLogger(__name__)

__all__ = [
    "Embedder",
    "BaseEmbedder",
    "EmbedTiming",
    "preprocess",
    "batch_slices",
    "l2_normalize",
    "check_pixels",
    "physical_cores",
]


@runtime_checkable
class Embedder(Protocol):
    """What every embedding backend offers (ONNX Runtime on CPU/CUDA, TensorRT).

    Construction is cheap and touches no device; :meth:`prepare` chooses the device and loads
    the model (``embed``/``embed_array`` call it on first use).

    Attributes: ``spec`` (the model's :class:`~lookalike_live.models.ModelSpec`), ``dim`` (D),
    ``backend`` ("onnx-cpu", "onnx-cuda" or "tensorrt") and ``max_batch`` (the largest batch
    one model call takes; larger inputs are split).
    """

    spec: ModelSpec
    dim: int
    backend: str
    max_batch: int

    def prepare(self) -> None:
        """Choose the device and load the model; idempotent."""

    def embed(self, crops: FaceCrops) -> Embeddings:
        """Embed aligned crops (uint8 (N,S,S,3), the spec's colour order) -> L2-normalised
        float32 (N,D) vectors with ``det_index`` carried over."""

    def embed_array(self, pixels: np.ndarray, flip: bool | None = None) -> np.ndarray:
        """Embed uint8 (N,S,S,3) pixels in the spec's colour order -> float32 (N,D), rows L2-normalised.
        ``flip`` (default: the embedder's ``flip_tta``): flip test-time augmentation."""

    def close(self) -> None:
        """Release the session/engine and device memory; the object can be prepared again."""


# --------------------------------------------------------------------------- pure helpers
def batch_slices(n: int, max_batch: int) -> list[slice]:
    """Split ``n`` rows into consecutive slices of at most ``max_batch`` rows (``[]`` for n=0).

    >>> batch_slices(65, 32)
    [slice(0, 32, None), slice(32, 64, None), slice(64, 65, None)]
    """
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [slice(i, min(i + max_batch, n)) for i in range(0, n, max_batch)]


def preprocess(pixels: np.ndarray, mean: float, std: float, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 NHWC (N,S,S,3) -> float NCHW (N,3,S,S) holding ``(x - mean) / std``.

    The channel order is kept (the caller passes pixels in the order the network expects).
    With ``out`` (a C-contiguous float32/float16 array of shape (N,3,S,S), e.g. a slice of a
    preallocated or page-locked buffer) nothing is allocated: one vectorised casting copy that
    also transposes, then an in-place scale and shift (measured: ~1.5 ms for 32 x 160x160 on
    this project's 2-core CPU, faster than a 256-entry lookup table or cv2.dnn.blobFromImages).
    Returns ``out``.
    """
    n, h, w, c = pixels.shape
    if out is None:
        out = np.empty((n, c, h, w), np.float32)
    elif out.shape != (n, c, h, w):
        raise ShapeError(f"preprocess output buffer must have shape {(n, c, h, w)}, got {tuple(out.shape)}")
    np.copyto(out, pixels.transpose(0, 3, 1, 2), casting="unsafe")
    # (x - mean) / std == x * (1/std) + (-mean/std); two in-place ufuncs, no temporaries.
    scale = out.dtype.type(1.0 / std)
    shift = out.dtype.type(-mean / std)
    np.multiply(out, scale, out=out)
    np.add(out, shift, out=out)
    return out


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of float (N,D) scaled to unit L2 norm, as float32 (a row of zeros stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, eps, out=norms)
    return x / norms


def check_pixels(pixels: object, spec: ModelSpec, what: str = "pixels") -> np.ndarray:
    """``pixels`` as a uint8 (N,S,S,3) array for ``spec``, or ShapeError naming expected and actual."""
    size = spec.input.size
    expected = f"uint8 (N, {size}, {size}, 3) {spec.input.color} for model {spec.name!r}"
    if not isinstance(pixels, np.ndarray):
        raise ShapeError(f"{what} must be a numpy array: expected {expected}, got {type(pixels).__name__}")
    if pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
        raise ShapeError(f"{what} has the wrong shape: expected {expected}, got {tuple(pixels.shape)}")
    if pixels.dtype != np.uint8:
        raise ShapeError(f"{what} has the wrong dtype: expected {expected}, got {pixels.dtype.name}")
    return pixels


def usable_cpus() -> int:
    """Logical CPUs this process may run on: its affinity mask (containers, taskset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads not counted), at least 1.

    Uses psutil when installed, else /proc/cpuinfo (distinct physical id/core id pairs), capped
    by the CPU affinity mask (containers, taskset).
    """
    usable = usable_cpus()
    cores: int | None = None
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001 - optional dependency; any failure means "unknown"
        cores = None
    if not cores:
        try:
            pairs = set()
            phys = core = None
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not key:
                    if core is not None:
                        pairs.add((phys, core))
                    phys = core = None
            if core is not None:
                pairs.add((phys, core))
            cores = len(pairs) or None
        except OSError:
            cores = None
    return max(1, min(cores or usable, usable))


# --------------------------------------------------------------------------- base class
@dataclass(frozen=True)
class EmbedTiming:
    """Where the time of one ``embed_array`` call went (milliseconds).

    ``model_ms``: inside the backend's model calls (ONNX Runtime ``run``; for TensorRT the
    host<->device copies and the execution); ``overhead_ms``: everything else the embedder adds
    (validation, preprocessing, splitting, L2 normalisation); ``calls``: model calls made.
    """

    n: int
    calls: int
    total_ms: float
    model_ms: float

    @property
    def overhead_ms(self) -> float:
        return self.total_ms - self.model_ms

    @property
    def overhead_ratio(self) -> float:
        """overhead / model time (0.05 = the embedder adds 5 % to the model's own time)."""
        return self.overhead_ms / self.model_ms if self.model_ms > 0 else 0.0


class BaseEmbedder:
    """Shared behaviour of all backends: validation, batch splitting, preprocessing, normalisation.

    Subclasses set ``backend`` and implement ``_load``, ``_input_buffer``, ``_infer`` and
    ``_release``. Calls are serialised by a lock (the preprocessing buffer is shared), so an
    embedder may be used from any thread, one call at a time.
    """

    backend: str = "unknown"

    def __init__(self, spec: ModelSpec, model_path: str | Path, max_batch: int = 64, flip_tta: bool = False) -> None:
        if spec.output is None:
            raise ConfigError(f"model {spec.name!r} is a {spec.kind}, not a face embedder (it has no [output] dim)")
        if spec.input.layout.upper() != "NCHW":
            raise ConfigError(f"model {spec.name!r}: only NCHW inputs are supported, the spec says {spec.input.layout!r}")
        if spec.input.color not in ("RGB", "BGR"):
            raise ConfigError(f"model {spec.name!r}: input colour must be RGB or BGR, the spec says {spec.input.color!r}")
        if spec.input.std == 0:
            raise ConfigError(f"model {spec.name!r}: input std must not be 0")
        if int(max_batch) < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        self.spec = spec
        self.model_path = Path(model_path)
        self.dim = spec.dim
        self.size = spec.input.size
        self.max_batch = int(max_batch)
        self.requested_max_batch = int(max_batch)
        self.flip_tta = bool(flip_tta)  # embed_array's default: flip test-time augmentation
        self._lock = threading.RLock()
        self._prepared = False
        self.last_timing: EmbedTiming | None = None  # of the latest non-empty embed_array call

    # ---------------------------------------------------------------- hooks
    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _input_buffer(self, k: int) -> np.ndarray:  # pragma: no cover - abstract
        """A C-contiguous float (k,3,S,S) view the next :meth:`_infer` reads its input from."""
        raise NotImplementedError

    def _infer(self, k: int) -> np.ndarray:  # pragma: no cover - abstract
        """Run the model on the first ``k`` rows of the input buffer -> float (k,D) (not normalised)."""
        raise NotImplementedError

    def _release(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---------------------------------------------------------------- public API
    @property
    def prepared(self) -> bool:
        return self._prepared

    def prepare(self) -> None:
        """Choose the device, load and validate the model, allocate buffers (idempotent)."""
        with self._lock:
            if not self._prepared:
                self._load()
                self._prepared = True

    def embed_array(self, pixels: np.ndarray, flip: bool | None = None) -> np.ndarray:
        """uint8 (N,S,S,3) in the spec's colour order -> float32 (N,D), rows L2-normalised.

        ``N == 0`` gives a (0, D) array without loading the model; batches above
        :attr:`max_batch` are split into several model calls. With ``flip`` (default:
        :attr:`flip_tta`) each row is the normalised sum of the face's and its mirror image's
        embeddings (flip test-time augmentation: twice the model work, in the same calls).
        """
        t_start = time.perf_counter()
        pixels = check_pixels(pixels, self.spec)
        n = len(pixels)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        flip = self.flip_tta if flip is None else bool(flip)
        rows = np.concatenate([pixels, pixels[:, :, ::-1]]) if flip else pixels
        with self._lock:
            if not self._prepared:
                t0 = time.perf_counter()
                self.prepare()
                t_start += time.perf_counter() - t0  # loading is not per-call overhead
            model_s = 0.0
            out = np.empty((len(rows), self.dim), np.float32)
            mean, std = self.spec.input.mean, self.spec.input.std
            slices = batch_slices(len(rows), self.max_batch)
            for sl in slices:
                k = sl.stop - sl.start
                preprocess(rows[sl], mean, std, out=self._input_buffer(k))
                t0 = time.perf_counter()
                out[sl] = self._infer(k)
                model_s += time.perf_counter() - t0
            vectors = l2_normalize(out)
            if flip:
                vectors = l2_normalize(vectors[:n] + vectors[n:])
            total_s = time.perf_counter() - t_start
            self.last_timing = EmbedTiming(n, len(slices), total_s * 1e3, model_s * 1e3)
        return vectors

    def embed(self, crops: FaceCrops) -> Embeddings:
        """Aligned crops -> :class:`Embeddings` (float32 (N,D) L2-normalised, ``det_index`` carried over).

        Crops must be ``S x S`` (``spec.input.size``) in the spec's colour order, else ShapeError.
        """
        if not isinstance(crops, FaceCrops):
            raise ShapeError(f"embed() takes FaceCrops, got {type(crops).__name__}; use embed_array() for raw arrays")
        s, want = self.size, self.spec.input.color
        if crops.size != s or crops.color != want:
            raise ShapeError(
                f"model {self.spec.name!r} expects {s}x{s} {want} crops (FaceCrops.pixels (N,{s},{s},3) uint8), "
                f"got {crops.size}x{crops.size} {crops.color} crops; align with this model's spec "
                f"(align_faces(image, detections, embedder.spec))"
            )
        if len(crops) == 0:
            return Embeddings.empty(self.dim)
        vectors = self.embed_array(crops.pixels)
        return Embeddings(vectors, crops.det_index.copy())

    def close(self) -> None:
        """Free the model and its buffers; a later call prepares again."""
        with self._lock:
            if self._prepared:
                try:
                    self._release()
                finally:
                    self._prepared = False

    def __enter__(self) -> BaseEmbedder:
        self.prepare()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "prepared" if self._prepared else "not prepared"
        return (f"{type(self).__name__}(model={self.spec.name!r}, backend={self.backend!r}, dim={self.dim}, "
                f"max_batch={self.max_batch}, {state})")
