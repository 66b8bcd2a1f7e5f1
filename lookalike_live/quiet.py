"""Native library noise off the terminal unless asked for (``-v``).

MediaPipe's LiteRT runtime and absl write INFO and WARNING lines straight to file descriptor 2
(dozens per run: "Sparsity tensors may not yet be fully supported", "XNNPACK CPU accelerator
registered", "Logging before InitGoogle()"), past Python's logging. :func:`filter_native_stderr`
points descriptor 2 at a pipe whose reader forwards every other line to the real stderr; Python's
own output (logging, tracebacks, progress bars) goes to the real stderr directly. Errors from the
native side (see :func:`is_noise`) still get through."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading

#: native lines that are information, not a problem: LiteRT/TFLite "INFO: " and "WARNING: [x.cc:N]"
#: lines, absl I/W lines ("W0000 00:00:... file.cc:N] ..."), and the tail of such a line when two
#: threads' writes interleave ("[model_load.cc:402] ..."). Lines that say ERROR or FATAL always pass.
_INFO = re.compile(rb"^(INFO: |WARNING: |[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] )")
_TAG = re.compile(rb"^\[[\w/.-]+\.(cc|cpp|h):\d+\] ")
#: OpenCV's "[ WARN:0@1.7] global cap.cpp:212 ..." and FFmpeg's "[mov,mp4,... @ 0x7f..] ..." lines:
#: the error a user needs is in lookalike-live's own message (e.g. "cannot open video file ...")
_LIBS = re.compile(rb"^\[ ?(WARN|INFO|DEBUG):\d+@[\d.]+\] |^\[[\w,.-]+ @ 0x[0-9a-f]+\] ")
_SEVERE = re.compile(rb"ERROR|FATAL|^[EF]\d{4} ")


def is_noise(line: bytes) -> bool:
    """Whether a line a native library wrote to stderr is information to hide (see the module doc)."""
    if not line.strip():  # an empty line: what is left when two threads' writes interleave
        return True
    if _SEVERE.search(line):
        return False
    return bool(_INFO.match(line) or _TAG.match(line.lstrip()) or _LIBS.match(line))


_installed = False


class _MilvusLiteNoise(logging.Filter):
    """pymilvus asks Milvus Lite for a timestamp it does not serve, and warns on every query
    iterator: information about Lite, not a problem of the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to get mvccTs" not in record.getMessage()


def filter_native_stderr() -> None:
    """Install the filter for this process (once; a no-op where descriptor 2 cannot be replaced)."""
    global _installed
    if _installed:
        return
    try:
        real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        return
    _installed = True
    sys.stderr.flush()
    sys.stderr = open(real, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",  # noqa: SIM115 - for the process
                      errors="backslashreplace", closefd=False)

    def write(data: bytes) -> None:
        # the terminal went away: keep draining anyway, or native writers would block on a full pipe
        with contextlib.suppress(OSError):
            os.write(real, data)

    def forward() -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(read_end, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                if pending and not is_noise(pending):
                    write(pending)
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > 65536:  # a very long line without a newline: pass it on as it is
                lines, pending = [*lines, pending], b""
            kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
            if kept:
                write(kept)

    reader = threading.Thread(target=forward, name="native-stderr", daemon=True)
    reader.start()

    def restore() -> None:  # at exit: what is still in the pipe is forwarded, then the real fd is back
        try:
            os.dup2(real, 2)  # closes the pipe's last write end: the reader sees the end
        except OSError:
            return
        reader.join(timeout=1.0)

    atexit.register(restore)
    for name in ("pymilvus", "pymilvus.client.iterator.query_iterator"):
        logging.getLogger(name).addFilter(_MilvusLiteNoise())
