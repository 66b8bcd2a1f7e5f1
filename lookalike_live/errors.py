"""Typed exceptions with actionable messages.

Library code raises these (never ``assert`` or ``sys.exit``); the CLI turns them
into a one-line error and exit code 2.
"""

from __future__ import annotations


class LookalikeError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(LookalikeError):
    """A setting or flag has an invalid value."""


class UnknownModelError(LookalikeError, KeyError):
    """A model name is not in the registry."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ModelNotInstalledError(LookalikeError, FileNotFoundError):
    """A model's weights are not installed; the message names the command that installs them."""


class ChecksumError(LookalikeError):
    """A downloaded or copied file does not have the expected SHA-256."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"SHA-256 mismatch for {path}: expected {expected}, got {actual}. "
            "The file was not installed; check the source (a truncated download or a different release)."
        )


class ModelFormatError(LookalikeError):
    """A model file cannot be loaded or its inputs/outputs do not match its spec."""


class ImageReadError(LookalikeError):
    """An image file is missing, unreadable or not an image."""


class ShapeError(LookalikeError, ValueError):
    """An array does not have the shape or dtype a stage expects."""


class BackendUnavailableError(LookalikeError):
    """A requested inference backend (TensorRT, CUDA) cannot run on this machine."""


class GalleryError(LookalikeError):
    """Base class of gallery (Milvus) errors."""


class GalleryUnavailableError(GalleryError):
    """Milvus cannot be reached at the configured URI."""


class GalleryMissingError(GalleryError):
    """A command that reads the gallery was pointed at one that does not exist (a Milvus Lite
    file that is not there): it is not created empty."""


class DimensionMismatchError(GalleryError):
    """The embedding dimension of a model differs from the collection's."""


class SourceError(LookalikeError):
    """A frame source (camera, file, stream) cannot be opened or read."""


class OutputError(LookalikeError):
    """An output of a run (annotated video, events file, snapshots) failed: the run stopped."""
