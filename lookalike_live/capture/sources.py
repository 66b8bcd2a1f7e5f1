"""Frame sources over OpenCV: the :class:`FrameSource` interface, webcams and video files;
listing webcams. Streams are in :mod:`.rtsp`."""

from __future__ import annotations

import abc
import contextlib
import logging
import math
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

from ..errors import ConfigError, SourceError
from .specs import SourceSpec

log = logging.getLogger(__name__)


def _backend(preferred: int) -> int:
    try:
        return preferred if cv2.videoio_registry.hasBackend(preferred) else cv2.CAP_ANY
    except AttributeError:  # very old OpenCV
        return cv2.CAP_ANY


def _as_bgr(image: Any) -> tuple[np.ndarray | None, str]:
    """A frame from ``cv2.VideoCapture.read`` as BGR uint8 (H, W, 3), or (None, why) if unusable."""
    if not isinstance(image, np.ndarray) or image.size == 0:
        return None, "empty frame"
    if image.dtype != np.uint8:
        return None, f"unsupported pixel type {image.dtype} (expected uint8)"
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), ""
    if image.ndim == 3 and image.shape[2] == 3:
        return (image if image.flags.c_contiguous else np.ascontiguousarray(image)), ""
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), ""
    return None, f"unsupported frame shape {image.shape}"


class FrameSource(abc.ABC):
    """One backend connection: ``open()``, then ``read()`` until it fails, then ``close()``.

    ``read()`` returns ``(ok, image, ts_ms)``: ``ok`` False means the read failed (end of a file,
    a lost stream); ``image`` is what the backend gave (may be None/garbage when ``ok``: the
    capture thread counts and skips it); ``ts_ms`` is the media time in ms or None (then the
    capture thread stamps the frame with its clock). Sources may be re-opened after ``close()``.
    Implementations raise SourceError from ``open()`` with an actionable message.

    ``grab()`` then ``retrieve()`` is ``read()`` in two steps (OpenCV's model): ``grab`` advances
    to the next frame, decoding only what the stream needs (a video decoder must decode every
    reference frame), and ``retrieve`` converts the grabbed frame to an image. The capture thread
    grabs every frame and retrieves only those it analyses (``CaptureThread.sample_fps``). A source
    that implements only ``read()`` gets both from it (then skipping saves nothing).
    """

    #: live sources are reconnected by the watchdog; non-live sources end.
    live: bool = True

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        #: set by the capture thread on stop(): an open() with several steps gives up early.
        self.cancel: threading.Event | None = None

    @property
    def name(self) -> str:
        return self.spec.display_name

    @property
    def fps(self) -> float | None:
        """Nominal frame rate of the open source, when the backend knows it."""
        return None

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> tuple[bool, np.ndarray | None, float | None]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def grab(self) -> tuple[bool, float | None]:
        """Advance to the next frame: ``(ok, ts_ms)`` as :meth:`read` would say."""
        ok, image, ts = self.read()
        self._grabbed = image
        return ok, ts

    def retrieve(self) -> np.ndarray | None:
        """The frame :meth:`grab` advanced to, as the backend gives it (None: none or undecodable)."""
        image, self._grabbed = getattr(self, "_grabbed", None), None
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class TwoStepSource(FrameSource):
    """A source that implements ``grab()`` and ``retrieve()``; ``read()`` is the two in a row."""

    def read(self) -> tuple[bool, np.ndarray | None, float | None]:
        ok, ts = self.grab()
        return (True, self.retrieve(), ts) if ok else (False, None, None)

    @abc.abstractmethod
    def grab(self) -> tuple[bool, float | None]: ...

    @abc.abstractmethod
    def retrieve(self) -> np.ndarray | None: ...


class _OpenCvSource(TwoStepSource):
    """Shared cv2.VideoCapture plumbing."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._cap: Any = None

    @property
    def fps(self) -> float | None:
        if self._cap is None:
            return None
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return fps if math.isfinite(fps) and 0 < fps <= 1000 else None

    def grab(self) -> tuple[bool, float | None]:
        return (self._cap is not None and bool(self._cap.grab())), None

    def retrieve(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, image = self._cap.retrieve()
        return image if ok else None

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            try:
                cap.release()
            except cv2.error as exc:  # a backend failing on release must not kill the thread
                log.warning("%s: release failed: %s", self.name, exc)


class WebcamSource(_OpenCvSource):
    """A local camera by index (``cv2.VideoCapture(index)``, the platform's default backend:
    V4L2 on Linux, MSMF/DirectShow on Windows, AVFoundation on macOS).

    ``size`` (width, height) and ``fps`` are requests; the camera may pick the nearest mode.
    """

    live = True

    def __init__(
        self, spec: SourceSpec, *, size: tuple[int, int] | None = None, fps: float | None = None
    ) -> None:
        if spec.kind != "webcam" or spec.index is None:
            raise SourceError(f"WebcamSource needs a webcam spec, got {spec.kind} {spec.target!r}")
        super().__init__(spec)
        self.index = spec.index
        self.size = size
        self.requested_fps = fps

    def open(self) -> None:
        self.close()
        cap = cv2.VideoCapture(self.index, cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open webcam {self.index}: no camera at that index, or it is in use by another "
                "program (the app's source list shows the cameras found)"
            )
        if self.size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(self.size[0]))
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(self.size[1]))
        if self.requested_fps:
            cap.set(cv2.CAP_PROP_FPS, float(self.requested_fps))
        self._cap = cap


class FileSource(_OpenCvSource):
    """A video file decoded with OpenCV's FFmpeg backend. ``ts_ms`` is the frame's time in the
    file; with ``loop`` the file restarts at its end and ``ts_ms`` keeps increasing."""

    live = False

    def __init__(self, spec: SourceSpec, *, loop: bool = False) -> None:
        if spec.kind != "file":
            raise SourceError(f"FileSource needs a file spec, got {spec.kind} {spec.target!r}")
        super().__init__(spec)
        self.path = spec.target
        self.loop = loop
        self.passes = 0
        self._offset_ms = 0.0
        self._last_ts = -math.inf
        self._pass_frames = 0
        self._interval_ms = 1000.0 / 30.0

    def open(self) -> None:
        self.close()
        if not os.path.isfile(self.path):
            raise SourceError(f"video file not found: {self.path}")
        cap = cv2.VideoCapture(self.path, _backend(cv2.CAP_FFMPEG))
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open video file {self.path}: not a video OpenCV/FFmpeg can decode "
                "(check the file plays with ffprobe/ffplay)"
            )
        self._cap = cap
        self._interval_ms = 1000.0 / (self.fps or 30.0)
        self._pass_frames = 0
        self.passes += 1

    def grab(self) -> tuple[bool, float | None]:
        if self._cap is None:
            return False, None
        ok = self._cap.grab()
        if not ok and self.loop and self._pass_frames > 0:
            log.debug("%s: end of pass %d, looping", self.name, self.passes)
            self._offset_ms = self._last_ts + self._interval_ms
            try:
                self.open()
            except SourceError as exc:
                log.warning("%s: cannot restart the loop: %s", self.name, exc)
                return False, None
            ok = self._cap.grab()
        if not ok:
            return False, None
        self._pass_frames += 1
        pos = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        ts = self._offset_ms + pos if math.isfinite(pos) and pos >= 0 else -math.inf
        if ts <= self._last_ts:  # missing or repeated timestamps: step by the nominal interval
            ts = self._last_ts + self._interval_ms if math.isfinite(self._last_ts) else 0.0
        self._last_ts = ts
        return True, ts




@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log (e.g. "can't open camera by index") for the duration."""
    logging_mod = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_mod is None:
        yield
        return
    previous = logging_mod.getLogLevel()
    logging_mod.setLogLevel(logging_mod.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_mod.setLogLevel(previous)


def list_webcams(max_index: int = 8) -> list[int]:
    """Indices of the cameras that open, among 0 .. ``max_index - 1`` (for a source picker).

    Quiet (OpenCV's warnings are silenced while probing) and fast: on Linux only indices with a
    ``/dev/videoN`` node are probed, so a machine without cameras answers ``[]`` at once.
    Cameras busy in another program are not listed (they cannot be opened).
    """
    if max_index < 0:
        raise ConfigError(f"max_index must be >= 0, got {max_index}")
    found: list[int] = []
    linux = sys.platform.startswith("linux")
    with _quiet_opencv():
        for index in range(max_index):
            if linux and not os.path.exists(f"/dev/video{index}"):
                continue
            cap = cv2.VideoCapture(index, cv2.CAP_ANY)
            try:
                if cap.isOpened():
                    found.append(index)
            finally:
                cap.release()
    log.debug("webcams found: %s", found)
    return found
