"""facenet-pytorch checkpoints (``torch.save(model.state_dict())``) -> InceptionResnetV1."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelFormatError
from .network import VGGFACE2_CLASSES, InceptionResnetV1, build_model

log = logging.getLogger(__name__)


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

