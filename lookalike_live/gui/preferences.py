"""What the desktop app remembers between runs (QSettings, or an INI file with --gui-settings)."""

from __future__ import annotations

import logging
from typing import Any

from PyQt6.QtCore import QByteArray, QSettings

from ..config import Settings, load_settings
from ..errors import ConfigError
from ..redact import strip_secrets

log = logging.getLogger(__name__)

__all__ = ["Preferences", "REMEMBERED", "HISTORY_MAX"]

HISTORY_MAX = 12
REMEMBERED = ("model", "backend", "detector", "threshold", "max_faces", "milvus_uri", "collection")


class Preferences:
    """What the app remembers between runs (QSettings): settings, top-K, loop, source history,
    the webcam mirror, open-set mode and the window's geometry."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings if qsettings is not None else QSettings("lookalike-live", "lookalike-live")

    def remembered(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in REMEMBERED:
            v = self.q.value(f"settings/{key}")
            if v is not None and v != "":
                out[key] = v
        return out

    def resolve(self, flags: dict[str, Any] | None = None) -> Settings:
        """flags (non-None) > remembered > environment > config file > defaults; a remembered value
        that is no longer valid is ignored (logged)."""
        flags = {k: v for k, v in (flags or {}).items() if v is not None}
        try:
            return load_settings({**self.remembered(), **flags})
        except ConfigError as exc:
            log.warning("ignoring the remembered settings (%s)", exc)
            return load_settings(flags)

    def top_k(self, default: int = 10) -> int:
        try:
            return max(1, int(self.q.value("settings/top_k", default)))
        except (TypeError, ValueError):
            return default

    def loop_files(self, default: bool = True) -> bool:
        v = self.q.value("settings/loop_files", default)
        return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")

    def save(self, settings: Settings, top_k: int, loop_files: bool) -> None:
        for key in REMEMBERED:
            v = getattr(settings, key)
            if key == "milvus_uri" and v:
                v = strip_secrets(v)  # a password in the URI is not written to the settings file
            self.q.setValue(f"settings/{key}", "" if v is None else v)
        self.q.setValue("settings/top_k", int(top_k))
        self.q.setValue("settings/loop_files", bool(loop_files))
        self.q.sync()

    def history(self) -> list[str]:
        v = self.q.value("sources/history", [])
        if isinstance(v, str):
            v = [v] if v else []
        return [str(x) for x in (v or []) if str(x)]

    def add_history(self, source: str) -> list[str]:
        """Remember ``source`` first in the history, without its password or token: those are
        never written to the settings file (the window keeps them for the session only)."""
        source = strip_secrets(source)
        hist = [source] + [h for h in self.history() if h != source]
        hist = hist[:HISTORY_MAX]
        self.q.setValue("sources/history", hist)
        self.q.setValue("sources/last", source)
        self.q.sync()
        return hist

    def last_source(self) -> str:
        return str(self.q.value("sources/last", "") or "")

    def flag(self, key: str, default: bool) -> bool:
        """A remembered on/off choice (``mirror_webcam``, ``open_set``)."""
        v = self.q.value(f"view/{key}", default)
        return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")

    def set_flag(self, key: str, value: bool) -> None:
        self.q.setValue(f"view/{key}", bool(value))
        self.q.sync()

    def geometry(self) -> QByteArray | None:
        v = self.q.value("window/geometry")
        return v if isinstance(v, QByteArray) and not v.isEmpty() else None

    def save_geometry(self, data: QByteArray) -> None:
        self.q.setValue("window/geometry", data)
        self.q.sync()

