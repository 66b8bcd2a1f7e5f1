"""Image reading: JPEG header sizes and scaled decoding (what the index build reads photos with)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lookalike_live.errors import ImageReadError
from lookalike_live.imageio import jpeg_size, read_image, read_image_scaled


def _photos(celeba_dir: Path, n: int) -> list[Path]:
    return sorted((celeba_dir / "Img" / "img_celeba").glob("*.jpg"))[:n]


def test_jpeg_size_matches_the_decoded_size(celeba_dir: Path, tmp_path: Path) -> None:
    for path in _photos(celeba_dir, 40):
        h, w = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION).shape[:2]
        assert jpeg_size(path.read_bytes()) == (w, h), path
    # progressive (SOF2) and grey JPEGs too
    img = cv2.imread(str(_photos(celeba_dir, 1)[0]))
    prog = tmp_path / "prog.jpg"
    cv2.imwrite(str(prog), img[:301, :203], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert jpeg_size(prog.read_bytes()) == (203, 301)
    grey = tmp_path / "grey.jpg"
    cv2.imwrite(str(grey), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:77, :55])
    assert jpeg_size(grey.read_bytes()) == (55, 77)


def test_jpeg_size_is_none_for_what_is_not_a_jpeg(celeba_dir: Path) -> None:
    data = _photos(celeba_dir, 1)[0].read_bytes()
    ok, png = cv2.imencode(".png", np.zeros((10, 10, 3), np.uint8))
    assert ok
    assert jpeg_size(png.tobytes()) is None
    assert jpeg_size(b"") is None
    assert jpeg_size(b"\xff\xd8") is None
    assert jpeg_size(data[:20]) is None  # cut before the frame header
    assert jpeg_size(b"\xff\xd8" + b"\x00" * 100) is None  # no marker where one must be


def test_read_image_scaled_decodes_big_jpegs_smaller(celeba_dir: Path, tmp_path: Path) -> None:
    src = cv2.imread(str(_photos(celeba_dir, 1)[0]))
    big = cv2.resize(src, (2000, 1500), interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 95])
    whole = read_image(path)

    half, scale = read_image_scaled(path, 640)  # 1000 px >= 640 > 500 px: 1/2
    assert half.shape == (750, 1000, 3) and scale == 2.0
    # libjpeg's scaled decode is a proper shrink of the same picture
    ref = cv2.resize(whole, (1000, 750), interpolation=cv2.INTER_AREA)
    assert np.abs(half.astype(np.int16) - ref).mean() < 3.0

    quarter, scale = read_image_scaled(path, 300)  # 1/8 would be 250 px < 300: 1/4
    assert quarter.shape == (375, 500, 3) and scale == 4.0
    same, scale = read_image_scaled(path, 1500)
    assert same.shape == whole.shape and scale == 1.0 and np.array_equal(same, whole)

    png = tmp_path / "big.png"
    cv2.imwrite(str(png), big)
    img, scale = read_image_scaled(png, 640)  # not a JPEG: read whole
    assert img.shape == (1500, 2000, 3) and scale == 1.0


def test_read_image_scaled_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        read_image_scaled(tmp_path / "missing.jpg", 640)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xc0\x00\x11\x08\x10\x00\x10\x00" + b"\x00" * 50)  # a header, no picture
    with pytest.raises(ImageReadError, match="bad.jpg: not a readable image"):
        read_image_scaled(bad, 640)
