"""A corpus of bad inputs, made by the tests themselves (nothing binary is committed): broken and
odd image files in a folder-per-identity gallery, and broken videos. Each entry says what the
commands must do with it."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    path: Path
    what: str
    readable: bool  # decodes to a usable image (it may still have no face)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` grey pixels, with one tiny IDAT: a
    decompression bomb's header (the real ones inflate to gigabytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b"")


def make_image_corpus(root: Path, photos: list[Path]) -> list[Case]:
    """``root``/<identity>/<file>: two identities of good photos (``photos``, 4 of them) and every
    kind of bad file beside them. Returns the cases (good ones included, ``readable``)."""
    good, bad = root / "person_a", root / "person_b"
    good.mkdir(parents=True)
    bad.mkdir()
    cases: list[Case] = []
    for i, p in enumerate(photos[:2]):
        shutil.copy(p, good / f"good_{i}.jpg")
        cases.append(Case(good / f"good_{i}.jpg", "a good photo", True))
    face = cv2.imread(str(photos[2]))
    rgb = cv2.cvtColor(face, cv2.COLOR_BGR2RGB)
    data = photos[3].read_bytes()

    def add(name: str, what: str, readable: bool, content: bytes | None = None) -> Path:
        path = bad / name
        if content is not None:
            path.write_bytes(content)
        cases.append(Case(path, what, readable))
        return path

    add("zero_bytes.jpg", "a zero-byte file", False, b"")
    add("truncated.jpg", "a JPEG cut after 600 bytes", False, data[:600])
    add("png_named.jpg", "a PNG named .jpg", True, cv2.imencode(".png", face)[1].tobytes())
    add("jpeg_named.png", "a JPEG named .png", True, data)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG")
    add("cmyk.jpg", "a CMYK JPEG", True, buf.getvalue())
    add("sixteen_bit.png", "a 16-bit PNG", True, cv2.imencode(".png", face.astype(np.uint16) * 257)[1].tobytes())
    add("grey.png", "a grey PNG", True, cv2.imencode(".png", cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))[1].tobytes())
    add("alpha.png", "an RGBA PNG", True, cv2.imencode(".png", cv2.cvtColor(face, cv2.COLOR_BGR2BGRA))[1].tobytes())
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show
    Image.fromarray(np.ascontiguousarray(np.rot90(rgb))).save(buf, "JPEG", exif=exif)
    add("exif_rotated.jpg", "an EXIF-rotated JPEG", True, buf.getvalue())
    add("one_pixel.png", "a 1x1 PNG", True, cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes())
    add("bomb.png", "a PNG claiming 40000x40000 pixels", False, _png_claiming(40000, 40000))
    add("text.jpg", "a text file named .jpg", False, b"this is not an image\n" * 40)
    (bad / "folder.jpg").mkdir()  # a folder named like an image: never a file, never a crash
    (bad / "loop").symlink_to(".", target_is_directory=True)  # a symlink loop (relative: copies loop too)
    shutil.copy(photos[2], bad / "Ünïcødé 名前.jpg")
    cases.append(Case(bad / "Ünïcødé 名前.jpg", "a non-ASCII file name", True))
    return cases


def make_video_corpus(root: Path, clip: Path) -> dict[str, Path]:
    """Broken videos from the sample clip: cut in the middle (its index at the front, so it plays
    until the cut), without its index (moov at the end, cut off), empty, and text."""
    root.mkdir(parents=True, exist_ok=True)
    faststart = root / "faststart.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-c", "copy",
                    "-movflags", "+faststart", str(faststart)], check=True, timeout=60)
    data = faststart.read_bytes()
    out = {"truncated": root / "truncated.mp4", "moov_less": root / "moov_less.mp4", "empty": root / "empty.mp4",
           "text": root / "text.mp4"}
    out["truncated"].write_bytes(data[: len(data) // 2])
    plain = clip.read_bytes()  # the sample keeps its moov at the end: cut it off
    moov = plain.rfind(b"moov")
    out["moov_less"].write_bytes(plain[: max(moov - 4, 0)] if moov > len(plain) // 2 else plain[: len(plain) // 2])
    out["empty"].write_bytes(b"")
    out["text"].write_bytes(b"not a video\n" * 100)
    os.remove(faststart)
    return out
