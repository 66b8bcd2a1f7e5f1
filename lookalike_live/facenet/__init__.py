"""FaceNet (InceptionResnetV1): the network, its checkpoint and frozen-graph converters, ONNX export.

- :mod:`.network`: the torch module, state-dict compatible with facenet-pytorch's releases;
- :mod:`.checkpoint`: facenet-pytorch ``.pt`` state dicts (``20180402-114759-vggface2.pt``, ...);
- :mod:`.frozen_graph`: David Sandberg's frozen TensorFlow graphs (``20180408-102900``), read
  without TensorFlow (:mod:`lookalike_live.graphdef`);
- :mod:`.export`: the ONNX file the runtime loads (embedding graph only, dynamic batch, one file),
  its check against PyTorch, and the converters ``models fetch`` / ``models convert`` run.

Needs PyTorch (the ``export`` extra); importing it without torch raises ExportDependencyError.
"""

from __future__ import annotations

from ..errors import ModelFormatError

INSTALL_HINT = "install the export extra: pip install 'lookalike-live[export]'"


class ExportDependencyError(ModelFormatError, ImportError):
    """PyTorch, onnx or onnxruntime is missing: converting FaceNet needs the ``export`` extra."""


try:
    import torch  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised only without torch
    raise ExportDependencyError(f"lookalike_live.facenet needs PyTorch ({_exc}); {INSTALL_HINT}") from _exc

from .checkpoint import load_checkpoint, load_state_dict  # noqa: E402
from .export import (  # noqa: E402
    convert_checkpoint_to_onnx,
    convert_graph_to_onnx,
    export_onnx,
    export_random_onnx,
    verify_onnx,
)
from .frozen_graph import load_frozen_graph, state_dict_from_graph  # noqa: E402
from .network import (  # noqa: E402
    CASIA_WEBFACE_CLASSES,
    EMBEDDING_DIM,
    VGGFACE2_CLASSES,
    InceptionResnetV1,
    build_model,
    l2_normalize,
    randomize_,
)

__all__ = [
    "CASIA_WEBFACE_CLASSES",
    "EMBEDDING_DIM",
    "INSTALL_HINT",
    "VGGFACE2_CLASSES",
    "ExportDependencyError",
    "InceptionResnetV1",
    "build_model",
    "convert_checkpoint_to_onnx",
    "convert_graph_to_onnx",
    "export_onnx",
    "export_random_onnx",
    "l2_normalize",
    "load_checkpoint",
    "load_frozen_graph",
    "load_state_dict",
    "randomize_",
    "state_dict_from_graph",
    "verify_onnx",
]
