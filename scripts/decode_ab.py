#!/usr/bin/env python3
"""Decode cost of the three ways to read a stream, side by side in one run: OpenCV's FFmpeg
backend, PyAV (what StreamSource uses) and the ffmpeg CLI piping raw BGR (as Frigate does).

Reads the sample clip unpaced from the file, then twice for 8 s each from a loopback RTSP server
(rtsp-server-perl + ffmpeg, tests/rtsp_server.py; UDP, the only transport it serves) and prints
JSON: frames, fps and CPU-ms per frame (this process plus its children). Needs ffmpeg and
rtsp-server-perl; the clip comes from $LOOKALIKE_SHARED (default ../shared).

    .venv/bin/python scripts/decode_ab.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
SHARED = Path(os.environ.get("LOOKALIKE_SHARED", ROOT.parent / "shared"))
CLIP = SHARED / "testdata" / "video" / "short_hamilton_clip.mp4"


def _cpu_s() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def read_opencv(url: str, seconds: float, transport: str | None) -> int:
    if transport:  # the only way OpenCV takes FFmpeg options: the process environment
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{transport}"
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds and cap.read()[0]:
        n += 1
    cap.release()
    os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
    return n


def read_pyav(url: str, seconds: float, transport: str | None) -> int:
    import av

    container = av.open(url, options={"rtsp_transport": transport} if transport else {}, timeout=(10.0, 5.0))
    n, t0 = 0, time.monotonic()
    for frame in container.decode(container.streams.video[0]):
        frame.to_ndarray(format="bgr24")
        n += 1
        if time.monotonic() - t0 >= seconds:
            break
    container.close()
    return n


def read_ffmpeg_cli(url: str, seconds: float, transport: str | None, size: tuple[int, int] = (640, 360)) -> int:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
    cmd += ["-rtsp_transport", transport] if transport else []
    cmd += ["-i", url, "-an", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    frame_bytes = size[0] * size[1] * 3
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        buf = proc.stdout.read(frame_bytes)
        if len(buf) < frame_bytes:
            break
        np.frombuffer(buf, np.uint8).reshape(size[1], size[0], 3)
        n += 1
    proc.kill()
    proc.wait()
    return n


READERS = {"opencv": read_opencv, "pyav": read_pyav, "ffmpeg_cli": read_ffmpeg_cli}


def measure(reader, url: str, seconds: float, transport: str | None = None) -> dict[str, float]:  # type: ignore[no-untyped-def]
    c0, t0 = _cpu_s(), time.monotonic()
    n = reader(url, seconds, transport)
    cpu, wall = _cpu_s() - c0, time.monotonic() - t0
    return {"frames": n, "wall_s": round(wall, 2), "fps": round(n / wall, 1),
            "cpu_ms_per_frame": round(1000 * cpu / max(n, 1), 2)}


def main() -> int:
    from rtsp_server import RtspTestServer, missing_tools

    why = missing_tools()
    if why or not CLIP.is_file():
        print(why or f"clip not found: {CLIP}", file=sys.stderr)
        return 2
    out: dict[str, dict[str, object]] = {"file_unpaced": {}, "rtsp_udp_realtime": {}}
    for name, reader in READERS.items():
        out["file_unpaced"][name] = measure(reader, str(CLIP), 60)
    with tempfile.TemporaryDirectory() as logs, RtspTestServer(CLIP, log_dir=logs) as server:
        for name, reader in READERS.items():
            out["rtsp_udp_realtime"][name] = [measure(reader, server.url, 8, "udp") for _ in range(2)]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
