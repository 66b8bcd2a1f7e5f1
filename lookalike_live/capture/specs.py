"""Parsing a source as a user types it (webcam index, file, rtsp:// / http(s):// URL) into a
:class:`SourceSpec`; URLs redacted for logs."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import SourceError
from ..redact import redact_url

log = logging.getLogger(__name__)


STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
RTSP_TRANSPORTS = ("auto", "tcp", "udp")
_WEBCAM_RE = re.compile(r"^(?:webcam|cam|camera)(?::(\d+))?$", re.IGNORECASE)
_V4L_RE = re.compile(r"^/dev/video(\d+)$")


@dataclass(frozen=True)


class SourceSpec:
    """What ``parse_source`` understood.

    ``kind`` is ``"webcam"`` (``index`` set), ``"file"`` (``target`` is an absolute path) or
    ``"stream"`` (``target`` is the URL, scheme one of STREAM_SCHEMES). ``text`` is the input.
    """

    kind: str
    target: str
    index: int | None = None
    text: str = ""

    @property
    def live(self) -> bool:
        """Webcams and streams are live (watched and reconnected); files are not."""
        return self.kind != "file"

    @property
    def scheme(self) -> str:
        return urlsplit(self.target).scheme.lower() if self.kind == "stream" else ""

    @property
    def display_name(self) -> str:
        """A name safe to log or show: ``webcam:0``, the file name, or the URL without password."""
        if self.kind == "webcam":
            return f"webcam:{self.index}"
        if self.kind == "file":
            return Path(self.target).name
        return redact_url(self.target)


def parse_source(text: str | int | os.PathLike[str] | SourceSpec) -> SourceSpec:
    """Understand a source as typed by a user (CLI flag, config, GUI field).

    * webcam: ``0``, ``"1"``, ``"webcam"`` (index 0), ``"webcam:1"``, ``"/dev/video2"``;
    * stream: ``rtsp://``, ``rtsps://``, ``http://``, ``https://`` URLs (a host is required);
    * file: any other text is a path (``~`` expanded, ``file://`` URLs accepted) that must exist.

    Raises SourceError naming the input when it is empty, a URL has no host or an unsupported
    scheme, or a file does not exist / is a folder.
    """
    if isinstance(text, SourceSpec):
        return text
    if isinstance(text, bool):
        raise SourceError(f"not a frame source: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise SourceError(f"webcam index must be >= 0, got {text}")
        return SourceSpec("webcam", str(text), index=text, text=str(text))
    raw = os.fspath(text)
    s = raw.strip()
    if not s:
        raise SourceError(
            "empty frame source: give a webcam index (0), a video file path or an rtsp:// / http(s):// URL"
        )
    if s.isdigit():
        return SourceSpec("webcam", s, index=int(s), text=raw)
    m = _WEBCAM_RE.match(s) or _V4L_RE.match(s)
    if m:
        index = int(m.group(1) or 0)
        return SourceSpec("webcam", str(index), index=index, text=raw)

    scheme = ""
    if "://" in s:
        scheme = s.split("://", 1)[0].lower()
    if scheme == "file":
        s = urlsplit(s).path
    elif scheme in STREAM_SCHEMES:
        try:
            parts = urlsplit(s)
            _ = parts.port  # raises ValueError on a non-numeric port
        except ValueError as exc:
            raise SourceError(f"malformed stream URL {redact_url(s)!r}: {exc}") from None
        if not parts.hostname:
            raise SourceError(f"stream URL {redact_url(s)!r} has no host: expected {scheme}://HOST[:PORT]/PATH")
        return SourceSpec("stream", s, text=raw)
    elif scheme and len(scheme) > 1:  # "C://..." style Windows paths fall through to files
        raise SourceError(
            f"unsupported source URL scheme {scheme!r} in {redact_url(s)!r}: "
            f"use one of {', '.join(x + '://' for x in STREAM_SCHEMES)}, a webcam index or a file path"
        )

    path = Path(s).expanduser()
    if not path.exists():
        raise SourceError(
            f"video file not found: {path} (a source is a webcam index like 0, a video file path, "
            "or an rtsp:// / http(s):// URL)"
        )
    if path.is_dir():
        raise SourceError(f"frame source {path} is a folder, expected a video file")
    return SourceSpec("file", str(path.resolve()), text=raw)
