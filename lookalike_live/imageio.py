"""Reading images and finding them on disk. Images come back BGR uint8 (H, W, 3)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageReadError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to BGR uint8 (H, W, 3); grey and BGRA are converted."""
    if not data:
        raise ImageReadError(f"{name}: empty file")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageReadError(f"{name}: not a readable image (corrupt or unsupported format)")
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3). Raises ImageReadError with the reason."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(path))


def iter_image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Image files among ``paths`` (files as given; folders searched recursively), sorted per folder.

    A path that does not exist raises ImageReadError: a typo should not silently embed nothing.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()))
        elif path.exists():
            out.append(path)
        else:
            raise ImageReadError(f"{path}: no such file or folder")
    return out


def encode_jpeg(image_bgr: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageReadError("could not encode image as JPEG")
    return buf.tobytes()
