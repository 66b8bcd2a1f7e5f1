"""ONNX Runtime backend: CUDA execution provider when available, else CPU.

The model is validated at :meth:`OnnxEmbedder.prepare`: the file must load as an ONNX model,
its input must be ``[N, 3, S, S]`` float (S = ``spec.input.size``) and its output ``[N, D]``
(D = ``spec.output.dim``); a one-sample dry run confirms the output shape where the model
leaves dimensions symbolic. A model with a fixed batch dimension (e.g. ``[1, 3, 112, 112]``)
works too: batches are split to that size (and the last one padded when the size is > 1).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ConfigError, ModelFormatError, ModelNotInstalledError
from ..models import ModelSpec
from .base import BaseEmbedder, physical_cores

log = logging.getLogger(__name__)

__all__ = ["OnnxEmbedder", "available_providers", "cuda_provider_available", "session_options"]

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def available_providers() -> list[str]:
    """ONNX Runtime's execution providers on this machine ([] when onnxruntime is missing)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def cuda_provider_available() -> bool:
    return CUDA_EP in available_providers()


def session_options(threads: int | None = None, spin: bool = True) -> Any:
    """Session options for an embedder on a small CPU: intra-op threads = physical cores
    (or ``threads``), one inter-op thread, sequential execution, all graph optimisations.

    ``spin``: let idle intra-op threads busy-wait between parallel sections (ONNX Runtime's
    default). Measured on the project's 2-core CPU, medians of alternating runs: with the CPU
    free, spinning is faster (FaceNet batch 1: 15.5 vs 21.9 ms, batch 32: 421 vs 480 ms;
    MobileFaceNet: 2.7 vs 4.1 ms); with two other busy processes it is slower (FaceNet batch 1:
    56 vs 48 ms, batch 32: 618 vs 474 ms). Pass ``spin=False`` where the embedder shares a
    small, busy CPU.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads) if threads else physical_cores()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only; ORT's warnings about unused initialisers are noise here
    return opts


def _fmt_shape(shape: list[Any] | tuple[Any, ...]) -> str:
    return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OnnxEmbedder(BaseEmbedder):
    """A face embedder running an ONNX model in ONNX Runtime.

    ``device``: "auto" (CUDA provider when installed, else CPU), "cpu" or "cuda" (raises
    BackendUnavailableError without the CUDA provider). ``threads``: intra-op threads on CPU
    (default: physical cores); ``spin``: see :func:`session_options`. ``install_hint`` is the command named when the file is broken.
    ``backend`` is "onnx-cuda" or "onnx-cpu" (after :meth:`prepare`: the provider ONNX Runtime
    actually took).
    """

    def __init__(
        self,
        spec: ModelSpec,
        model_path: str | Path,
        *,
        max_batch: int = 64,
        device: str = "auto",
        device_id: int = 0,
        threads: int | None = None,
        spin: bool = True,
        install_hint: str | None = None,
    ) -> None:
        super().__init__(spec, model_path, max_batch=max_batch)
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        self.device = device
        self.device_id = int(device_id)
        self.threads = threads
        self.spin = spin
        self.install_hint = install_hint or spec.install_hint()
        use_cuda = device == "cuda" or (device == "auto" and cuda_provider_available())
        self.backend = "onnx-cuda" if use_cuda else "onnx-cpu"
        self._session: Any = None
        self._buffer: np.ndarray = np.zeros((0, 3, self.size, self.size), np.float32)
        self._fixed_batch: int | None = None
        self.input_name = ""
        self.output_name = ""

    @property
    def session(self) -> Any:
        """The ``onnxruntime.InferenceSession`` (None before :meth:`prepare`)."""
        return self._session

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the ONNX input fixes (e.g. 1 for ``[1, 3, 112, 112]``), None when dynamic."""
        return self._fixed_batch

    # ---------------------------------------------------------------- loading
    def _providers(self) -> list[Any]:
        have = available_providers()
        if self.device == "cuda" and CUDA_EP not in have:
            raise BackendUnavailableError(
                f"ONNX Runtime has no CUDA provider here (providers: {', '.join(have) or 'none'}); "
                "install onnxruntime-gpu on a machine with an NVIDIA GPU, or use the CPU"
            )
        if self.device != "cpu" and CUDA_EP in have:
            return [(CUDA_EP, {"device_id": self.device_id}), CPU_EP]
        return [CPU_EP]

    def _load(self) -> None:
        import onnxruntime as ort

        path, spec = self.model_path, self.spec
        if not path.is_file():
            raise ModelNotInstalledError(
                f"model {spec.name!r} is not installed (looked for {path}). Install it with: {self.install_hint}"
            )
        try:
            session = ort.InferenceSession(str(path), sess_options=session_options(self.threads, self.spin),
                                           providers=self._providers())
        except BackendUnavailableError:
            raise
        except Exception as exc:  # ORT raises InvalidProtobuf, Fail, InvalidGraph, ... for broken files
            raise ModelFormatError(
                f"{path} is not a valid ONNX model: {_first_line(exc)}; re-install with: {self.install_hint}"
            ) from exc

        inp = self._pick(session.get_inputs(), spec.input.name, "input")
        out = self._pick(session.get_outputs(), spec.output.name if spec.output else None, "output")
        self._check_shapes(inp, out)
        dtype = _ORT_TYPES.get(inp.type)
        if dtype is None:
            raise ModelFormatError(
                f"{path}: input {inp.name!r} has type {inp.type}, expected tensor(float) or tensor(float16); "
                f"re-install with: {self.install_hint}"
            )

        n0 = inp.shape[0]
        if isinstance(n0, int) and n0 > 0:
            self._fixed_batch = n0
            self.max_batch = n0
            if n0 != self.requested_max_batch:
                log.info("%s has a fixed batch size of %d (input %s): batches are run %d at a time",
                         path.name, n0, _fmt_shape(inp.shape), n0)
        else:
            self._fixed_batch = None
            self.max_batch = self.requested_max_batch

        self._session = session
        self.input_name, self.output_name = inp.name, out.name
        s = self.size
        self._buffer = np.zeros((self.max_batch, 3, s, s), dtype)
        got = session.get_providers()
        self.backend = "onnx-cuda" if got and got[0] == CUDA_EP else "onnx-cpu"
        if self.backend != "onnx-cuda" and CUDA_EP in available_providers() and self.device != "cpu":
            if self.device == "cuda":
                self._release()
                raise BackendUnavailableError(
                    f"ONNX Runtime could not start its CUDA provider (session providers: {got}); check the "
                    "CUDA/cuDNN libraries onnxruntime-gpu needs, or run on the CPU"
                )
            log.warning("ONNX Runtime's CUDA provider did not start (session providers: %s): running %s on the CPU",
                        got, path.name)

        # Dry run: confirms the output shape where the model leaves it symbolic.
        y = self._infer(1)
        if y.ndim != 2 or y.shape != (1, self.dim):
            shape = tuple(y.shape)
            self._release()
            raise ModelFormatError(
                f"{path}: output {out.name!r} gave shape {shape} for one face, but spec {spec.name!r} "
                f"({spec.spec_path or 'no file'}) expects [N, {self.dim}]; re-install with: {self.install_hint}"
            )
        opts = session.get_session_options()
        log.info("loaded %s in ONNX Runtime (%s, intra-op threads %s, max batch %d, input %s %s, output %s %s)",
                 path.name, self.backend, opts.intra_op_num_threads, self.max_batch,
                 inp.name, _fmt_shape(inp.shape), out.name, _fmt_shape(out.shape))

    def _pick(self, tensors: list[Any], wanted: str | None, what: str) -> Any:
        names = [t.name for t in tensors]
        if wanted:
            for t in tensors:
                if t.name == wanted:
                    return t
            raise ModelFormatError(
                f"{self.model_path}: the spec of {self.spec.name!r} names {what} {wanted!r}, but the model's "
                f"{what}s are {names}; fix [{what}] name in {self.spec.spec_path or 'the spec'} "
                f"or re-install with: {self.install_hint}"
            )
        if len(tensors) != 1:
            raise ModelFormatError(
                f"{self.model_path}: the model has {len(tensors)} {what}s {names}; name the one to use "
                f"in [{what}] name of {self.spec.spec_path or 'the spec'}"
            )
        return tensors[0]

    def _check_shapes(self, inp: Any, out: Any) -> None:
        s, d = self.size, self.dim
        ishape, oshape = list(inp.shape), list(out.shape)

        def fixed(dim: Any, want: int) -> bool:  # a symbolic/unknown dim is accepted
            return not isinstance(dim, int) or dim <= 0 or dim == want

        ok_in = len(ishape) == 4 and fixed(ishape[1], 3) and fixed(ishape[2], s) and fixed(ishape[3], s)
        ok_out = len(oshape) == 2 and fixed(oshape[1], d)
        if not (ok_in and ok_out):
            raise ModelFormatError(
                f"{self.model_path} does not match the spec of {self.spec.name!r} "
                f"({self.spec.spec_path or 'no file'}): the spec expects input [N, 3, {s}, {s}] "
                f"(NCHW {self.spec.input.color}, {s}x{s}) and output [N, {d}], the model has input "
                f"{inp.name!r} {_fmt_shape(ishape)} and output {out.name!r} {_fmt_shape(oshape)}. "
                "Use the spec written for this file, or install the file the spec names with: "
                f"{self.install_hint}"
            )

    # ---------------------------------------------------------------- running
    def _input_buffer(self, k: int) -> np.ndarray:
        return self._buffer[:k]

    def _infer(self, k: int) -> np.ndarray:
        if self._fixed_batch is not None and k != self._fixed_batch:
            self._buffer[k:].fill(0)  # pad a short last batch of a fixed-batch model
            x = self._buffer
        else:
            x = self._buffer[:k]
        y = self._session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(y[:k], dtype=np.float32)

    def _release(self) -> None:
        self._session = None
        self._buffer = np.zeros((0, 3, self.size, self.size), np.float32)
