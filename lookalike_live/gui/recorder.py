"""Snapshot (PNG) and recording (annotated MP4) of what the window shows; no Qt.

:class:`Recorder` encodes on its own thread: the GUI thread only hands over frames (a bounded
queue; when the encoder falls behind the oldest frame is dropped and counted), so recording never
slows the display.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError, ImageReadError

log = logging.getLogger(__name__)

__all__ = ["Recorder", "save_snapshot"]


def save_snapshot(image: np.ndarray, path: str | Path) -> Path:
    """Write ``image`` (BGR uint8) as PNG (the folder is created). Raises ImageReadError when it cannot."""
    out = Path(path)
    if out.suffix.lower() != ".png":
        out = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ImageReadError(f"cannot encode the snapshot as PNG ({image.shape} {image.dtype})")
    try:
        out.write_bytes(data.tobytes())
    except OSError as exc:
        raise ImageReadError(f"cannot write snapshot {out}: {exc}") from exc
    return out


class Recorder:
    """Annotated frames (BGR uint8, any size: resized to the first frame's) into an MP4 (mp4v)."""

    def __init__(self, path: str | Path, fps: float = 30.0, max_queue: int = 64) -> None:
        self.path = Path(path)
        self.fps = float(fps) if fps and 1.0 <= fps <= 240.0 else 30.0
        self.frames = 0
        self.dropped = 0
        self.error: str | None = None
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=max(2, max_queue))
        self._size: tuple[int, int] | None = None
        self._writer: cv2.VideoWriter | None = None
        self._thread = threading.Thread(target=self._run, name="gui-recorder", daemon=True)
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def write(self, image: np.ndarray) -> None:
        """Queue a frame; never blocks (drops the oldest queued frame when full)."""
        if self._closed:
            return
        while True:
            try:
                self._queue.put_nowait(image)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _open(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        self._size = (w, h)
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h))
        if not writer.isOpened():
            raise ConfigError(f"cannot write video {self.path}: OpenCV has no MP4 (mp4v) writer here")
        self._writer = writer

    def _run(self) -> None:
        while True:
            image = self._queue.get()
            if image is None:
                break
            if self.error is not None:
                continue
            try:
                if self._writer is None:
                    self._open(image)
                size = self._size or (image.shape[1], image.shape[0])
                if (image.shape[1], image.shape[0]) != size:
                    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                self._writer.write(image)  # type: ignore[union-attr]
                self.frames += 1
            except Exception as exc:  # noqa: BLE001 - reported through .error, shown by the window
                self.error = str(exc)
                log.error("recording to %s failed: %s", self.path, exc)
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def close(self, timeout: float = 10.0) -> int:
        """Finish the file (waits for queued frames, bounded); returns the frames written."""
        if not self._closed:
            self._closed = True
            while True:
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    if not self._thread.is_alive():
                        break
            self._thread.join(timeout)
        return self.frames
