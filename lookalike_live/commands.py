"""Subcommands beyond ``models``: embed, index, run, monitor, app, eval, bench."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("lookalike_live")

Opt = Callable[[argparse.ArgumentParser], None]


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .cli import _settings as s

    return s(args)


def _emit(args: argparse.Namespace, result: dict[str, Any], human: Callable[[dict[str, Any]], str]) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        sys.stdout.write(human(result).rstrip("\n") + "\n")


def _summary_text(title: str) -> Callable[[dict[str, Any]], str]:
    def fmt(res: dict[str, Any]) -> str:
        lines = [title]
        for k, v in res.items():
            if isinstance(v, dict) and v:
                lines.append(f"  {k}: {len(v)}")
                lines.extend(f"    {kk}: {vv}" for kk, vv in list(v.items())[:20])
            elif isinstance(v, list):
                lines.append(f"  {k}: {len(v)}")
            else:
                lines.append(f"  {k}: {v}")
        return "\n".join(lines)

    return fmt


# --------------------------------------------------------------------------- embed
def cmd_embed(args: argparse.Namespace) -> int:
    from .jobs import embed_files
    from .pipeline import FaceAnalyzer

    settings = _settings(args)
    with FaceAnalyzer.from_settings(settings) as analyzer:
        _, summary = embed_files(args.paths, analyzer, out=args.out, workers=args.workers,
                                 progress=not args.no_progress)
    _emit(args, summary, _summary_text(f"embedded {summary['faces']} faces from {summary['images']} images"))
    return 0


def register(sub: argparse._SubParsersAction, model_opts: Opt, detector_opts: Opt, gallery_opts: Opt,
             json_opt: Opt) -> None:
    p = sub.add_parser(
        "embed", help="embed every face of every image into an .npz",
        description="Detect, align and embed every face of every image (files or folders, recursively). "
        "Writes arrays paths, face_index, boxes (xyxy px), scores, quality, embeddings (N,D L2-normalised). "
        "Unreadable images are listed in the summary and skipped.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.npz", help="output file")
    p.add_argument("--workers", type=int, default=2, help="image decoding threads (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    model_opts(p)
    detector_opts(p)
    json_opt(p)
    p.set_defaults(func=cmd_embed)

