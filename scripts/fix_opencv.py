#!/usr/bin/env python3
"""Make exactly one OpenCV distribution own the ``cv2`` package.

mediapipe depends on ``opencv-contrib-python``, which bundles Qt 5 and points
``QT_QPA_PLATFORM_PLUGIN_PATH`` at its own plugins when ``cv2`` is imported; that
breaks PyQt6 windows. Several OpenCV wheels installed side by side also overwrite
each other's files inside ``cv2/``. This script removes every OpenCV wheel and
installs ``opencv-contrib-python-headless`` (same API, no Qt) in their place.

Run by ``make install``; safe to run again.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import subprocess
import sys

FLAVOURS = (
    "opencv-python",
    "opencv-contrib-python",
    "opencv-python-headless",
    "opencv-contrib-python-headless",
)
WANTED = "opencv-contrib-python-headless"


def installed() -> dict[str, str]:
    found = {}
    for name in FLAVOURS:
        with contextlib.suppress(md.PackageNotFoundError):
            found[name] = md.version(name)
    return found


def main() -> int:
    found = installed()
    if list(found) == [WANTED]:
        print(f"fix_opencv: only {WANTED} {found[WANTED]} is installed; nothing to do")
        return 0
    version = found.get(WANTED)
    pip = [sys.executable, "-m", "pip"]
    if found:
        subprocess.check_call([*pip, "uninstall", "-y", "-q", *found])
    spec = f"{WANTED}=={version}" if version else WANTED
    subprocess.check_call([*pip, "install", "-q", "--no-deps", "--force-reinstall", spec])
    print(f"fix_opencv: removed {sorted(found)}; installed {spec}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
