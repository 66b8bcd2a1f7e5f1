"""Typed settings. Precedence: command-line flags, then ``LOOKALIKE_*`` environment
variables, then the config file, then the defaults below.

The config file is TOML: ``$LOOKALIKE_CONFIG`` or ``<user config dir>/config.toml``,
with the same keys as :class:`Settings` at top level, e.g.::

    model = "facenet-vggface2"
    milvus_uri = "http://milvus.example:19530"
    threshold = 0.45

Without a model from any of these, the best installed FaceNet is used (``facenet-vggface2``, else
``facenet-casia-webface``). Without a threshold, a model's calibrated threshold: the one
``lookalike-live eval identify --save-threshold`` measured (``<data dir>/calibration.json``), else
the one its spec ships (``[calibration]``, measured on the CelebA sample), else 0.35.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "LOOKALIKE_"


@dataclass(frozen=True)
class Settings:
    # embedder name or spec .toml; load_settings() fills in the best installed FaceNet
    # (models.default_embedder()) when nothing chooses one
    model: str = "facenet-casia-webface"
    backend: str = "auto"  # auto | onnx | tensorrt
    detector: str = "full"  # short | full
    small_faces: str = "off"  # off | tile: recover small faces in large frames (tiles)
    min_face_score: float = 0.5
    milvus_uri: str | None = None  # None: the embedded Milvus Lite file in the data dir
    token: str | None = None
    collection: str = "faces"
    threshold: float = 0.35  # cosine similarity: at or above "looks like" (open set: a match), below "a bit like" (open set: unknown)
    max_faces: int = 16
    top_k: int = 10
    # how a face is matched: "identity" = the nearest identity centroid (mean of its photos), which
    # `eval identify --study` measured best; "face" = the single most similar photo
    match_by: str = "identity"
    flip_tta: bool = False  # embed each face and its mirror image (2x embedding work; measured: within noise)
    log_level: str = "INFO"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


MATCH_BY = ("identity", "face")  # identity centroid | single nearest photo

CHOICES = {
    "backend": ("auto", "onnx", "tensorrt"),
    "detector": ("short", "full"),
    "small_faces": ("off", "tile"),
    "match_by": MATCH_BY,
}


def config_path() -> Path:
    env = os.environ.get(ENV_PREFIX + "CONFIG")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("lookalike-live")) / "config.toml"


def data_dir() -> Path:
    """Where the embedded gallery and other user data live: ``$LOOKALIKE_DATA_DIR`` or the user data dir."""
    env = os.environ.get(ENV_PREFIX + "DATA_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("lookalike-live"))


def calibration_path() -> Path:
    """Per-model thresholds measured by ``lookalike-live eval identify --save-threshold``."""
    return data_dir() / "calibration.json"


def calibrated_threshold(model: str, match_by: str = "identity") -> float | None:
    """The saved calibrated threshold of ``model`` for faces matched by ``match_by`` (a threshold
    measured on nearest-photo scores does not fit centroid scores), or None (none saved, another
    matching, or an unreadable file)."""
    import json

    path = calibration_path()
    try:
        entry = json.loads(path.read_text()).get(model)
        if not isinstance(entry, dict) or entry.get("match_by", "face") != match_by:
            return None
        return float(entry["threshold"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring calibration file %s: %s", path, exc)
        return None


def save_calibrated_threshold(model: str, threshold: float, **info: Any) -> Path:
    """Record ``model``'s threshold (atomically; other models' entries are kept). Settings use it
    whenever no flag, environment variable or config file sets ``threshold``."""
    import json

    path = calibration_path()
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[model] = {"threshold": float(threshold), **info}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def _coerce(name: str, raw: Any, typ: Any, origin: str) -> Any:
    if raw is None:
        return None
    text_type = str(typ)
    try:
        if "bool" in text_type:
            if isinstance(raw, bool):
                value: Any = raw
            elif str(raw).strip().lower() in ("1", "true", "yes", "on"):
                value = True
            elif str(raw).strip().lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError(raw)
        elif "float" in text_type:
            value = float(raw)
        elif "int" in text_type:
            value = int(raw)
        else:
            value = str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {name} must be {text_type}, got {raw!r}") from None
    if name in CHOICES and value not in CHOICES[name]:
        raise ConfigError(f"{origin}: {name} must be one of {', '.join(CHOICES[name])}, got {value!r}")
    return value


def load_settings(overrides: dict[str, Any] | None = None, path: Path | None = None) -> Settings:
    """Defaults <- config file <- environment <- ``overrides`` (flags; None values are ignored)."""
    known = {f.name: f.type for f in fields(Settings)}
    values: dict[str, Any] = {}

    path = path or config_path()
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        for key, raw in data.items():
            key = key.replace("-", "_")
            if key not in known:
                raise ConfigError(f"{path}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
            values[key] = _coerce(key, raw, known[key], str(path))
        log.debug("settings from %s: %s", path, sorted(values))

    for key, typ in known.items():
        env = os.environ.get(ENV_PREFIX + key.upper())
        if env is not None and env != "":
            values[key] = _coerce(key, env, typ, f"${ENV_PREFIX}{key.upper()}")

    for key, raw in (overrides or {}).items():
        if raw is not None and key in known:
            values[key] = _coerce(key, raw, known[key], f"--{key.replace('_', '-')}")
    if "model" not in values:  # nobody chose one: the best installed FaceNet
        from .models import default_embedder

        values["model"] = default_embedder()
        _log_once(f"embedder: {values['model']} (the best installed FaceNet; --model or LOOKALIKE_MODEL to choose)")
    if "threshold" not in values:  # nobody chose one: the model's calibrated threshold
        model = values["model"]
        match_by = values.get("match_by", Settings.match_by)
        cal = calibrated_threshold(model, match_by)
        if cal is not None:
            values["threshold"] = cal
            log.debug("threshold %.3f for %s from %s", cal, model, calibration_path())
        else:
            shipped = shipped_threshold(model, match_by)
            if shipped is not None:
                values["threshold"] = shipped
                log.debug("threshold %.3f for %s from its model spec", shipped, model)
    return Settings(**values)


_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.info("%s", message)


def shipped_threshold(model: str, match_by: str = "identity") -> float | None:
    """The threshold a model's spec ships for ``match_by`` (measured on the CelebA sample at FAR
    1 %), or None (no such model, none shipped)."""
    from .errors import LookalikeError
    from .models import get_spec

    try:
        value = getattr(get_spec(model).calibration, match_by, None)
    except LookalikeError:
        return None
    return None if value is None else float(value)
