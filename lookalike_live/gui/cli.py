"""The ``app`` subcommand (the PyQt6 live overlay). PyQt6 is imported inside :func:`cmd_app` only,
so the rest of the CLI works without Qt or a display.

Wired into ``lookalike-live`` by ``cli.build_parser``::

    gui_cli.register(sub, _model_opts, _detector_opts, _gallery_opts, _json_opt)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from ..cliutil import SETTING_KEYS, Opt, counting
from ..errors import ConfigError

__all__ = ["register", "cmd_app", "options_from_args"]

def options_from_args(args: argparse.Namespace, prefs: Any) -> Any:
    """AppOptions from the flags: flags > remembered (``prefs``) > environment/config > defaults."""
    from .main_window import AppOptions

    flags = {k: getattr(args, k, None) for k in SETTING_KEYS}
    flags["top_k"] = args.top_k or None
    settings = prefs.resolve(flags)
    top_k = args.top_k if args.top_k else prefs.top_k(settings.top_k or 10)
    loop = prefs.loop_files(True) if args.loop is None else args.loop
    return AppOptions(
        settings=settings, top_k=int(top_k), loop_files=bool(loop), store=args.models_dir,
        output_dir=args.output_dir, source=args.source, autostart=bool(args.source) and not args.no_autostart,
        photo=str(args.photo) if args.photo else None, show_hud=bool(args.hud) and not args.no_hud,
        gallery_timeout=args.gallery_timeout, open_set=True if args.open_set else None,
        show_track_ids=args.track_ids, mirror=args.mirror,
    )


def cmd_app(args: argparse.Namespace) -> int:
    from .app import ensure_display

    if args.frames is not None and args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    if args.screenshot is not None and not (args.frames or args.quit_after):
        raise ConfigError("--screenshot needs --frames N or --quit-after SECONDS (when to take it)")
    if args.photo is not None and not Path(args.photo).is_file():
        raise ConfigError(f"--photo: no such image file: {args.photo}")
    ensure_display()
    try:
        from PyQt6.QtCore import QSettings
    except ImportError as exc:
        raise ConfigError(f"the desktop app needs PyQt6, which the core install leaves out: "
                          f"pip install 'lookalike-live[app]' (or `make install`) ({exc})") from exc
    from .app import run_app
    from .main_window import Preferences

    prefs = Preferences(QSettings(str(args.gui_settings), QSettings.Format.IniFormat) if args.gui_settings else None)
    options = options_from_args(args, prefs)
    if args.photo is not None:
        options = dataclasses.replace(options, autostart=False)
    code, summary = run_app(options, gui_settings=args.gui_settings, screenshot=args.screenshot,
                            frames=args.frames, quit_after=args.quit_after)
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
        sys.stdout.flush()
    return code


def register(sub: argparse._SubParsersAction, model_opts: Opt, detector_opts: Opt, gallery_opts: Opt,
             json_opt: Opt) -> None:
    """Add ``app`` to the ``lookalike-live`` parser (same call shape as ``commands.register``)."""
    p = sub.add_parser(
        "app", help="the live desktop overlay (PyQt6): every face boxed with its celebrity lookalike",
        description="Open the desktop app: pick a webcam, a video file or an RTSP URL and see every face boxed "
        "with the nearest celebrity's name (or CelebA id), similarity and matched photo (\"looks like\" at or above "
        "the threshold, \"a bit like\" below); click a face for its top-K matches; open or drop a photo to match all "
        "its faces. Shortcuts: Space pause (start when idle), Ctrl+Return start/stop, S snapshot, C lookalike card, "
        "Ctrl+R record, M mirror, O open set, Ctrl+O file, Ctrl+P photo, Ctrl+, settings, H HUD, F full screen, "
        "Esc leave full screen / close panel. "
        "Settings: flags > remembered in the app > LOOKALIKE_* environment > config file.",
    )
    p.add_argument("--source", metavar="SRC", help="webcam index, video file or rtsp:// / http(s):// URL (starts at once)")
    p.add_argument("--no-autostart", action="store_true", help="with --source: fill the picker, do not start")
    p.add_argument("--photo", type=Path, metavar="IMAGE", help="open in photo mode with this image")
    p.add_argument("--threshold", type=float,
                   help="similarity at which a face \"looks like\" its nearest celebrity (below: \"a bit like\"; "
                   "default: the model's calibrated threshold)")
    p.add_argument("--max-faces", type=counting, help="faces handled per frame (largest first)")
    p.add_argument("--top-k", type=int, default=0, help="matches per face in the side panel (default 10)")
    loop = p.add_mutually_exclusive_group()
    loop.add_argument("--loop", dest="loop", action="store_true", default=None, help="loop video files (default)")
    loop.add_argument("--no-loop", dest="loop", action="store_false", help="stop at the end of a video file")
    p.add_argument("--output-dir", type=Path, metavar="DIR",
                   help="where snapshots and recordings go (default: Pictures/lookalike-live)")
    p.add_argument("--models-dir", type=Path, metavar="DIR", help="model store (default: $LOOKALIKE_MODELS_DIR or the user's)")
    p.add_argument("--gui-settings", type=Path, metavar="FILE.ini",
                   help="remember settings in this INI file instead of the user's Qt settings")
    p.add_argument("--gallery-timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for Milvus when connecting (default 5)")
    p.add_argument("--hud", action="store_true", help="start with the HUD shown (fps, per-stage timings, track ids; H)")
    p.add_argument("--no-hud", action="store_true", help="start with the HUD hidden (the default)")
    p.add_argument("--open-set", action="store_true",
                   help="say \"unknown\" below the threshold instead of the nearest celebrity (O toggles; remembered)")
    p.add_argument("--track-ids", action="store_true", help="debug: show internal track ids on the labels")
    mirror = p.add_mutually_exclusive_group()
    mirror.add_argument("--mirror", dest="mirror", action="store_true", default=None,
                        help="mirror the webcam preview (default; M toggles, remembered)")
    mirror.add_argument("--no-mirror", dest="mirror", action="store_false", help="show the webcam unmirrored")
    g = p.add_argument_group("automation (CI, benchmarks)")
    g.add_argument("--screenshot", type=Path, metavar="FILE.png",
                   help="save a window screenshot (and FILE.json: what it shows) then quit; needs --frames or --quit-after")
    g.add_argument("--frames", type=counting, metavar="N", help="quit after N displayed frames (with --screenshot: take it then)")
    g.add_argument("--quit-after", type=float, metavar="S",
                   help="quit after S seconds (exit code 3 when --frames was not reached)")
    model_opts(p)
    detector_opts(p)
    gallery_opts(p)
    json_opt(p)
    p.set_defaults(func=cmd_app)
