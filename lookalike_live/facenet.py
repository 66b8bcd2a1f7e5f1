"""FaceNet (InceptionResnetV1) in PyTorch and its conversion to ONNX.

The network is written here so that its ``state_dict`` has exactly the parameter and buffer
names and shapes of the facenet-pytorch release ``20180402-114759-vggface2.pt`` (David
Sandberg's TensorFlow FaceNet trained on VGGFace2, ported to PyTorch): ``conv2d_1a`` ...
``conv2d_4b``, ``repeat_1`` (5 x Block35, residual scale 0.17), ``mixed_6a``, ``repeat_2``
(10 x Block17, scale 0.10), ``mixed_7a``, ``repeat_3`` (5 x Block8, scale 0.20), ``block8``
(scale 1.0, no ReLU), ``last_linear`` (1792 -> 512, no bias), ``last_bn`` (BatchNorm1d 512) and
``logits`` (512 -> 8631, the VGGFace2 training classes; not used for embeddings). Every
BatchNorm uses eps = 0.001, TensorFlow's value.

Embedding forward pass::

    input  float32 (N, 3, 160, 160), RGB, normalised as (x - 127.5) / 128 for x in [0, 255]
    -> convolutional trunk -> (N, 1792, 3, 3) -> global average pool -> dropout (eval: none)
    -> last_linear (N, 512) -> last_bn -> L2 normalise over dim 1
    output float32 (N, 512), every row of unit length

The ONNX file this module writes holds only that embedding graph (no logits), with a
dynamic batch axis, one input and one output named after the model spec (``input`` and
``embedding`` by default), and all weights inside the one ``.onnx`` file.

This module needs PyTorch (the ``export`` extra); nothing else in the package imports it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ModelFormatError

log = logging.getLogger(__name__)

INSTALL_HINT = "install the export extra: pip install 'lookalike-live[export]'"


class ExportDependencyError(ModelFormatError, ImportError):
    """PyTorch, onnx or onnxruntime is missing: converting FaceNet needs the ``export`` extra."""


try:
    import torch
    from torch import nn
except ImportError as _exc:  # pragma: no cover - exercised only without torch
    raise ExportDependencyError(f"lookalike_live.facenet needs PyTorch ({_exc}); {INSTALL_HINT}") from _exc

__all__ = [
    "EMBEDDING_DIM",
    "VGGFACE2_CLASSES",
    "ExportDependencyError",
    "InceptionResnetV1",
    "build_model",
    "load_checkpoint",
    "load_state_dict",
    "export_onnx",
    "verify_onnx",
    "convert_checkpoint_to_onnx",
    "export_random_onnx",
    "randomize_",
    "l2_normalize",
]

EMBEDDING_DIM = 512
FEATURE_DIM = 1792
VGGFACE2_CLASSES = 8631
BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, which the published weights were trained with
DEFAULT_OPSET = 17


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0.001) -> ReLU. Parameters: ``conv.*``, ``bn.*``."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Block35(nn.Module):
    """Inception-ResNet-A on a (N, 256, 17, 17) map (at 160 px input); same shape out.

    Three branches (1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3, 32 channels each) are concatenated
    (96), projected back to 256 by a 1x1 conv with bias, scaled and added to the input.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(256, 32, 1)
        self.branch1 = nn.Sequential(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(
            BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1), BasicConv2d(32, 32, 3, padding=1)
        )
        self.conv2d = nn.Conv2d(96, 256, kernel_size=1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), dim=1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Block17(nn.Module):
    """Inception-ResNet-B on a (N, 896, 8, 8) map; same shape out.

    Branches: 1x1 (128); 1x1 -> 1x7 -> 7x1 (128). Concatenated (256), 1x1 conv to 896, scaled, added.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(896, 128, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(896, 128, 1),
            BasicConv2d(128, 128, (1, 7), padding=(0, 3)),
            BasicConv2d(128, 128, (7, 1), padding=(3, 0)),
        )
        self.conv2d = nn.Conv2d(256, 896, kernel_size=1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat((self.branch0(x), self.branch1(x)), dim=1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Block8(nn.Module):
    """Inception-ResNet-C on a (N, 1792, 3, 3) map; same shape out.

    Branches: 1x1 (192); 1x1 -> 1x3 -> 3x1 (192). Concatenated (384), 1x1 conv to 1792, scaled,
    added; the ReLU is skipped for the last block of the network (``relu=False``).
    """

    def __init__(self, scale: float = 1.0, relu: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.apply_relu = relu
        self.branch0 = BasicConv2d(1792, 192, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(1792, 192, 1),
            BasicConv2d(192, 192, (1, 3), padding=(0, 1)),
            BasicConv2d(192, 192, (3, 1), padding=(1, 0)),
        )
        self.conv2d = nn.Conv2d(384, 1792, kernel_size=1)
        self.relu = nn.ReLU(inplace=False) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat((self.branch0(x), self.branch1(x)), dim=1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Mixed6a(nn.Module):
    """Reduction-A: (N, 256, 17, 17) -> (N, 896, 8, 8) (384 + 256 conv channels + 256 pooled)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, stride=2)
        self.branch1 = nn.Sequential(
            BasicConv2d(256, 192, 1), BasicConv2d(192, 192, 3, padding=1), BasicConv2d(192, 256, 3, stride=2)
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), dim=1)


class Mixed7a(nn.Module):
    """Reduction-B: (N, 896, 8, 8) -> (N, 1792, 3, 3) (384 + 256 + 256 conv channels + 896 pooled)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 384, 3, stride=2))
        self.branch1 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, stride=2))
        self.branch2 = nn.Sequential(
            BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, padding=1), BasicConv2d(256, 256, 3, stride=2)
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), dim=1)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows of (N, D) ``x`` scaled to unit L2 norm (as ``F.normalize(x, dim=1)``).

    Written with a broadcast division rather than ``F.normalize`` (whose ``expand_as`` makes
    the ONNX exporter lose the static output width D).
    """
    return x / torch.linalg.vector_norm(x, ord=2, dim=1, keepdim=True).clamp_min(eps)


class InceptionResnetV1(nn.Module):
    """FaceNet's InceptionResnetV1, state-dict compatible with facenet-pytorch's checkpoints.

    ``forward(x)``: ``x`` float32 (N, 3, S, S) RGB normalised as (x - 127.5) / 128 (S = 160 for
    the published weights; any S >= 75 runs) -> float32 (N, 512) L2-normalised embeddings.
    ``logits`` (512 -> ``num_classes``) exists only so that training checkpoints load strictly;
    ``num_classes=0`` builds the network without it.
    """

    def __init__(self, num_classes: int = VGGFACE2_CLASSES, dropout_prob: float = 0.6) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: no logits layer), got {num_classes}")
        self.num_classes = num_classes
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.conv2d_4b = BasicConv2d(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*(Block35(scale=0.17) for _ in range(5)))
        self.mixed_6a = Mixed6a()
        self.repeat_2 = nn.Sequential(*(Block17(scale=0.10) for _ in range(10)))
        self.mixed_7a = Mixed7a()
        self.repeat_3 = nn.Sequential(*(Block8(scale=0.20) for _ in range(5)))
        self.block8 = Block8(scale=1.0, relu=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout_prob)
        self.last_linear = nn.Linear(FEATURE_DIM, EMBEDDING_DIM, bias=False)
        self.last_bn = nn.BatchNorm1d(EMBEDDING_DIM, eps=BN_EPS)
        self.logits: nn.Module | None = nn.Linear(EMBEDDING_DIM, num_classes) if num_classes else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised RGB -> (N, 1792, s, s) feature map (s = 3 at S = 160)."""
        x = self.conv2d_1a(x)
        x = self.conv2d_2a(x)
        x = self.conv2d_2b(x)
        x = self.maxpool_3a(x)
        x = self.conv2d_3b(x)
        x = self.conv2d_4a(x)
        x = self.conv2d_4b(x)
        x = self.repeat_1(x)
        x = self.mixed_6a(x)
        x = self.repeat_2(x)
        x = self.mixed_7a(x)
        x = self.repeat_3(x)
        return self.block8(x)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, 512) pre-normalisation embedding (the input of ``logits``)."""
        x = self.avgpool_1a(self.features(x))
        x = self.dropout(torch.flatten(x, 1))
        return self.last_bn(self.last_linear(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float32 normalised RGB -> (N, 512) float32 L2-normalised embeddings."""
        return l2_normalize(self.bottleneck(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, num_classes) training-class logits (needs the ``logits`` layer)."""
        if self.logits is None:
            raise ModelFormatError(
                "this InceptionResnetV1 was built with num_classes=0: it has no logits layer"
            )
        return self.logits(self.bottleneck(x))


def build_model(num_classes: int = VGGFACE2_CLASSES) -> InceptionResnetV1:
    """A fresh InceptionResnetV1 (PyTorch's default random init) in eval mode, on the CPU.

    ``num_classes`` sizes the ``logits`` layer (8631 for the VGGFace2 checkpoint, 0 for none).
    """
    return InceptionResnetV1(num_classes=num_classes).eval()


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape)


def _listing(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _unwrap_state_dict(obj: Any, origin: str) -> OrderedDict[str, torch.Tensor]:
    """The flat ``name -> tensor`` mapping inside a loaded checkpoint object."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # a training checkpoint {"state_dict": ..., "epoch": ...}
    if not isinstance(obj, Mapping):
        raise ModelFormatError(
            f"{origin} holds a {type(obj).__name__}, not a state dict (name -> tensor); "
            "save the weights with torch.save(model.state_dict(), path)"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFormatError(f"{origin} is not a state dict: entries that are not tensors: {_listing(bad)}")
    keys = list(obj)
    if keys and all(k.startswith("module.") for k in keys):  # saved from nn.DataParallel
        return OrderedDict((k[len("module.") :], obj[k]) for k in keys)
    return OrderedDict(obj)


def load_state_dict(
    model: InceptionResnetV1, state: Mapping[str, torch.Tensor], origin: str = "state dict"
) -> None:
    """Copy ``state`` into ``model`` strictly: same names, same shapes, or ModelFormatError.

    The one tolerance: BatchNorm ``num_batches_tracked`` counters (unused at inference, absent
    from checkpoints saved by PyTorch < 0.4.1) may be missing; they are then set to 0.
    """
    expected = model.state_dict()
    state = OrderedDict(state)
    for key, ref in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(ref)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {_shape(state[k])} vs model {_shape(expected[k])}"
        for k in expected
        if k in state and _shape(state[k]) != _shape(expected[k])
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched, 3)}")
        raise ModelFormatError(
            f"{origin} does not match FaceNet InceptionResnetV1 (facenet-pytorch layout, "
            f"{model.num_classes} logits classes): "
            + "; ".join(problems)
            + ". Use the facenet-pytorch VGGFace2 release 20180402-114759-vggface2.pt "
            "(lookalike-live models fetch facenet-vggface2)."
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied into float32
        raise ModelFormatError(f"cannot load {origin} into InceptionResnetV1: {exc}") from exc


def load_checkpoint(path: str | os.PathLike[str], num_classes: int | None = None) -> InceptionResnetV1:
    """Load a facenet-pytorch style state dict (``torch.save(model.state_dict())``) into a model.

    Reads with ``torch.load(weights_only=True)`` (no arbitrary pickles) on the CPU and loads
    strictly. ``num_classes`` is the size of the ``logits`` layer; ``None`` takes it from the
    checkpoint (8631 for VGGFace2; a checkpoint without ``logits.*`` gives a model without it).
    Returns the model in eval mode. Raises ModelFormatError naming the first missing /
    unexpected keys and shape mismatches when the checkpoint does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(
            f"FaceNet checkpoint {path} does not exist (lookalike-live models fetch facenet-vggface2)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (not a zip / truncated), EOFError...
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise ModelFormatError(
            f"cannot read FaceNet checkpoint {path} ({type(exc).__name__}: {first_line}). "
            "Expected a PyTorch state dict loadable with torch.load(weights_only=True), "
            "e.g. facenet-pytorch's 20180402-114759-vggface2.pt"
        ) from exc
    state = _unwrap_state_dict(obj, str(path))
    if num_classes is None:
        logits = state.get("logits.weight")
        if logits is None:
            num_classes = 0  # a features-only checkpoint
        elif logits.ndim == 2:
            num_classes = int(logits.shape[0])
        else:
            num_classes = VGGFACE2_CLASSES  # let the strict load report the odd shape
    model = build_model(num_classes)
    load_state_dict(model, state, origin=f"checkpoint {path}")
    log.info("loaded FaceNet checkpoint %s (%d tensors, %d logits classes)", path, len(state), num_classes)
    return model.eval()


def randomize_(
    model: InceptionResnetV1, seed: int = 0, size: int = 160, calibration_batch: int = 8
) -> InceptionResnetV1:
    """Give ``model`` seeded random weights *and* non-trivial BatchNorm statistics, in place.

    Conv / linear weights get PyTorch's default initialisation drawn from ``seed``; every
    BatchNorm gets weight ~ U(0.5, 1.5) and bias ~ N(0, 0.1); then the running mean / variance
    of every BatchNorm are measured by one training-mode pass over ``calibration_batch`` seeded
    random (size x size) images. Without that calibration a random InceptionResnetV1 maps every
    input to nearly the same embedding (cosine ~ 0.9999999), and comparing two runtimes on its
    output would prove little; with it, embeddings of different inputs differ (cosine ~ 0.85
    between noise images) and the BatchNorm statistics are far from the (0, 1) defaults.
    Does not touch the global RNG state. Returns ``model`` in eval mode.
    """
    if calibration_batch < 2:
        raise ValueError(
            f"calibration_batch must be >= 2 (BatchNorm statistics need 2+ samples), got {calibration_batch}"
        )
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.reset_parameters()
    with torch.no_grad():
        for bn in norms:
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)
            bn.reset_running_stats()
        momenta = [bn.momentum for bn in norms]
        try:
            model.eval()  # dropout stays off: only the BatchNorms measure statistics
            for bn in norms:
                bn.momentum = None  # cumulative average: after one pass, the batch's own statistics
                bn.train()
            model(torch.rand(calibration_batch, 3, size, size, generator=gen) * 2 - 1)
        finally:
            for bn, momentum in zip(norms, momenta, strict=True):
                bn.momentum = momentum
                if bn.num_batches_tracked is not None:
                    bn.num_batches_tracked.zero_()
            model.eval()
    return model


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


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
    with _torch_threads(1):
        model = load_checkpoint(src)
        export_onnx(model, dst, size=size, input_name=input_name, output_name=output_name)
        verify_onnx(model, dst, size=size)
    return Path(dst)


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
