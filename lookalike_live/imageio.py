"""Reading images and finding them on disk. Images come back BGR uint8 (H, W, 3)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageReadError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


#: OpenCV's flags for decoding at 1/1, 1/2, 1/4 and 1/8 scale (JPEG: libjpeg scales while it
#: decodes, in the DCT, so a smaller decode is both faster and properly low-passed)
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


#: the most pixels an image may decode to (after a reduced JPEG decode): 150 megapixels, 450 MB
#: as BGR. A file whose header claims more (a decompression bomb: a few KB that would take GBs)
#: is refused before decoding.
MAX_IMAGE_PIXELS = 150_000_000


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header without decoding it (JPEG, PNG; other formats
    through Pillow's lazy open); None when unknown."""
    size = jpeg_size(data)
    if size is not None:
        return size
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    try:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            return int(im.size[0]), int(im.size[1])
    except Exception:  # noqa: BLE001 - not an image Pillow knows: OpenCV decides below
        return None


def decode_image(data: bytes, name: str = "<bytes>", reduce: int = 1,
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode encoded image bytes to BGR uint8 (H, W, 3); grey, BGRA, 16-bit and CMYK are
    converted, EXIF rotation applied. ``reduce`` (1, 2, 4 or 8) decodes at that fraction of the
    size. ``size``: the header's (width, height) when the caller has read it already. Raises
    ImageReadError: empty, not an image, or bigger than MAX_IMAGE_PIXELS."""
    if not data:
        raise ImageReadError(f"{name}: empty file")
    size = size or image_size(data)
    if size is not None and size[0] * size[1] / (reduce * reduce) > MAX_IMAGE_PIXELS:
        raise ImageReadError(
            f"{name}: {size[0]}x{size[1]} is {size[0] * size[1] / 1e6:.0f} megapixels, more than the "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} lookalike-live decodes (a decompression bomb, or a huge scan: scale it down)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[reduce])
    if img is None or img.size == 0:
        raise ImageReadError(f"{name}: not a readable image (corrupt or unsupported format)")
    return img


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes; ImageReadError (missing, unreadable) with the reason."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3). Raises ImageReadError with the reason."""
    return decode_image(read_bytes(path), str(path))


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, without decoding (as stored: before any EXIF
    rotation). None when ``data`` is not a JPEG or has no frame header before its first scan."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None  # not at a marker: corrupt
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT/JPG/DAC)
            if i + 9 > n:
                return None
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return (width, height) if width and height else None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA or length < 2:  # a scan before any frame header, or a broken length
            return None
        i += 2 + length
    return None


def read_image_scaled(path: str | Path, long_side: int) -> tuple[np.ndarray, float]:
    """Read an image as BGR uint8, a big JPEG decoded at 1/2, 1/4 or 1/8 scale while its longer
    side stays >= ``long_side`` (libjpeg's scaled decode: 2-3x faster on big photos). Returns
    ``(image, scale)``: original pixels per returned pixel (1.0 when decoded whole)."""
    data = read_bytes(path)
    size = jpeg_size(data)
    reduce = 1
    if size is not None:
        while reduce < 8 and max(size) / (2 * reduce) >= long_side:
            reduce *= 2
    image = decode_image(data, str(path), reduce, size)
    if reduce == 1:
        return image, 1.0
    return image, max(size) / max(image.shape[:2])  # type: ignore[arg-type]


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
