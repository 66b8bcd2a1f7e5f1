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

import logging
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError
from .redact import redact_text

log = logging.getLogger(__name__)

ENV_PREFIX = "LOOKALIKE_"

MATCH_BY = ("centred", "identity", "face")  # gallery-centred identity centroid | identity centroid | nearest photo


class Settings(BaseModel):
    """The settings every command shares, validated by pydantic: an unknown key or a value of the
    wrong type is refused with the key's name (:func:`load_settings` says where it came from)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)

    # embedder name or spec .toml; load_settings() fills in the best installed FaceNet
    # (models.default_embedder()) when nothing chooses one
    model: str = "facenet-casia-webface"
    backend: Literal["auto", "onnx", "tensorrt"] = "auto"
    detector: Literal["short", "full"] = "full"
    small_faces: Literal["off", "tile"] = "off"  # tile: recover small faces in large frames
    min_face_score: float = Field(0.5, ge=0.0, le=1.0)
    milvus_uri: str | None = None  # None: the embedded Milvus Lite file in the data dir
    token: str | None = Field(None, repr=False)  # a secret: never in logs
    # Milvus's rule for collection names; it also becomes a folder of the local index cache
    collection: str = Field("faces", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    # cosine similarity: at or above "looks like" (open set: a match), below "a bit like" (open set: unknown)
    threshold: float = Field(0.35, ge=-1.0, le=1.0)
    max_faces: int = Field(16, ge=1)
    top_k: int = Field(10, ge=0)  # 0: no top-K list
    # how a face is matched: "centred" = the nearest identity centroid (mean of its photos) with the
    # gallery's mean vector taken out of both, which `eval identify --study` measured best at telling
    # strangers apart; "identity" = the plain centroid; "face" = the single most similar photo
    match_by: Literal["centred", "identity", "face"] = "centred"
    flip_tta: bool = False  # embed each face and its mirror image (2x embedding work; measured: within noise)
    log_level: str = "INFO"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``, validated like the original."""
        return _validated({**self.model_dump(), **changes}, "Settings.replace")


#: the settings with a fixed set of values, and those values (for menus)
CHOICES: dict[str, tuple[str, ...]] = {
    name: get_args(Settings.model_fields[name].annotation) for name in ("backend", "detector", "small_faces", "match_by")
}


class SettingsError(ConfigError):
    """Settings refused: ``problems`` names each bad key and why."""

    def __init__(self, problems: list[str], origin: str = "Settings") -> None:
        self.problems = problems
        super().__init__(f"{origin}: " + "; ".join(problems))


def _validated(values: dict[str, Any], origin: str) -> Settings:
    """Settings from ``values``, or SettingsError naming ``origin`` and each bad key."""
    try:
        return Settings(**values)
    except SettingsError as exc:
        raise SettingsError(exc.problems, origin) from None


_WANTED = {
    "float_parsing": "must be a number", "float_type": "must be a number",
    "int_parsing": "must be a whole number", "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false (1/0, yes/no, on/off)", "bool_type": "must be true or false",
    "string_type": "must be text",
    "finite_number": "must be a finite number",
    "string_pattern_mismatch": "must start with a letter or '_' and hold only letters, digits and '_'",
}


def _explain(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "?"
        kind = err["type"]
        got = "'***'" if key == "token" else redact_text(repr(err.get("input")))  # never echo a secret back
        if kind == "extra_forbidden":
            problems.append(f"unknown setting {key!r}; known: {', '.join(sorted(Settings.model_fields))}")
        elif kind == "literal_error" and key in CHOICES:
            problems.append(f"{key} must be one of {', '.join(CHOICES[key])}, got {got}")
        elif kind in _WANTED:
            problems.append(f"{key} {_WANTED[kind]}, got {got}")
        elif kind in ("greater_than_equal", "less_than_equal"):
            sign = ">=" if kind == "greater_than_equal" else "<="
            bound = err.get("ctx", {}).get("ge" if sign == ">=" else "le")
            problems.append(f"{key} must be {sign} {bound}, got {got}")
        else:
            problems.append(f"{key}: {err['msg']}, got {got}")
    return problems


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


def calibrated_threshold(model: str, match_by: str = "centred") -> float | None:
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


def load_settings(overrides: dict[str, Any] | None = None, path: Path | None = None) -> Settings:
    """Defaults <- config file <- environment <- ``overrides`` (flags; None values are ignored).
    Each layer is validated as it is added, so an error names where the bad value came from."""
    known = list(Settings.model_fields)
    values: dict[str, Any] = {}

    path = path or config_path()
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        layer = {key.replace("-", "_"): raw for key, raw in data.items()}
        values.update(_validated(layer, str(path)).model_dump(include=set(layer)))
        log.debug("settings from %s: %s", path, sorted(layer))

    for key in known:
        env = os.environ.get(ENV_PREFIX + key.upper())
        if env is not None and env != "":
            values[key] = _validated({**values, key: env}, f"${ENV_PREFIX}{key.upper()}").model_dump()[key]

    for key, raw in (overrides or {}).items():
        if raw is not None and key in known:
            values[key] = _validated({**values, key: raw}, f"--{key.replace('_', '-')}").model_dump()[key]
    if "model" not in values:  # nobody chose one: the best installed FaceNet
        from .models import default_embedder

        values["model"] = default_embedder()
        _log_once(f"embedder: {values['model']} (the best installed FaceNet; --model or LOOKALIKE_MODEL to choose)")
    if "threshold" not in values:  # nobody chose one: the model's calibrated threshold
        model = values["model"]
        match_by = values.get("match_by", Settings.model_fields["match_by"].default)
        cal = calibrated_threshold(model, match_by)
        if cal is not None:
            values["threshold"] = cal
            log.debug("threshold %.3f for %s from %s", cal, model, calibration_path())
        else:
            shipped = shipped_threshold(model, match_by)
            if shipped is not None:
                values["threshold"] = shipped
                log.debug("threshold %.3f for %s from its model spec", shipped, model)
    return _validated(values, "settings")


_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.info("%s", message)


def shipped_threshold(model: str, match_by: str = "centred") -> float | None:
    """The threshold a model's spec ships for ``match_by`` (measured on the CelebA sample at FAR
    1 %), or None (no such model, none shipped)."""
    from .errors import LookalikeError
    from .models import get_spec

    try:
        value = getattr(get_spec(model).calibration, match_by, None)
    except LookalikeError:
        return None
    return None if value is None else float(value)
