"""What every subcommand module shares: settings from parsed flags, and the output convention
(``--json``: one JSON object on stdout; otherwise human text; logs always on stderr)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import Settings, load_settings
from .errors import ConfigError

Opt = Callable[[argparse.ArgumentParser], None]

#: Settings fields a subcommand may take as flags (same names as the flags).
SETTING_KEYS = ("model", "backend", "detector", "small_faces", "milvus_uri", "token", "collection",
                 "threshold", "max_faces", "top_k", "match_by", "flip_tta", "log_level")


def check_output_path(flag: str, path: Path, suffix: str | None = None) -> None:
    """Refuse, before any work, an output path that cannot be written, naming the flag."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder: give a file name inside it")
    if suffix and path.suffix.lower() != suffix:
        raise ConfigError(f"{flag} {path}: the file name must end in {suffix}")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create its folder ({exc.strerror or exc})") from exc
    probe = parent / f".{path.name}.{os.getpid()}.writable"
    try:  # really create a file there: permission bits say nothing for root, or on /proc, or read-only mounts
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write in its folder {parent} ({exc.strerror or exc})") from exc


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, got {value}")
    return value


def counting(text: str) -> int:
    """An argparse type for counts: a whole number >= 1 (``--limit``, batch sizes)."""
    return _whole_number(text, 1)


def non_negative(text: str) -> int:
    """An argparse type for a whole number >= 0 (``index build --workers``: 0 is in-process)."""
    return _whole_number(text, 0)


def rate(text: str) -> float:
    """An argparse type for frames a second: a number >= 0 (``--detect-fps``: 0 is every frame)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of frames a second, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: every frame), got {text!r}")
    return value


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings with the flags given on the command line on top (flags > env > config file)."""
    return load_settings({k: getattr(args, k, None) for k in SETTING_KEYS})


def dataset_opts(p: argparse.ArgumentParser) -> None:
    """``--dataset DIR`` and ``--format`` for the commands that read a labelled face dataset."""
    p.add_argument("--dataset", type=Path, required=True, metavar="DIR", help="dataset root folder")
    p.add_argument("--format", choices=("celeba", "folders", "vggface2"), default="celeba",
                   help="layout: celeba (Img/, Anno/), folders (ROOT/<identity>/*.jpg), vggface2")


def annotations_opt(p: argparse.ArgumentParser) -> None:
    """``--annotations auto|on|off``: whether gallery photos are placed by CelebA's landmark file."""
    p.add_argument("--annotations", choices=("auto", "on", "off"), default="auto",
                   help="CelebA: place each gallery face by the dataset's own landmarks "
                   "(Anno/list_landmarks_celeba.txt or list_landmarks_align_celeba.txt), so no detector runs; "
                   "photos whose landmarks are missing or unusable are detected and counted. auto (default): "
                   "when the file is there; on: refuse to start without it; off: detect every face")


def quick_detect_opt(p: argparse.ArgumentParser) -> None:
    """``--quick-detect/--no-quick-detect``: how ``index build`` (and eval's gallery) finds faces."""
    p.add_argument("--quick-detect", action=argparse.BooleanOptionalAction, default=True,
                   help="gallery photos: try the cheaper short-range detector first and keep its face when it "
                   "spans at least a fifth of the photo with a score of at least 0.9; the full-range detector "
                   "runs on the other photos (default on: the same accuracy on the CelebA sample, less than "
                   "half the detection time on such portraits)")


def emit(args: argparse.Namespace, result: dict[str, Any], human: Callable[[dict[str, Any]], str]) -> None:
    """Print ``result`` as one JSON line with ``--json``, else as ``human(result)``."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        sys.stdout.write(human(result).rstrip("\n") + "\n")
    sys.stdout.flush()
