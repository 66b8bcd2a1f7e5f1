"""Settings precedence: flags > LOOKALIKE_* env > config file > defaults, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike_live.config import Settings, load_settings
from lookalike_live.errors import ConfigError


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lookalike_live.models import get_spec

    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(tmp_path / "models"))
    s = load_settings(path=tmp_path / "absent.toml")
    # no FaceNet installed: the one the package registry carries, with the threshold its spec ships
    shipped = get_spec("facenet-casia-webface").calibration.centred  # the default matching's
    assert shipped is not None and 0.1 < shipped < 0.8
    assert s == Settings(threshold=shipped)
    assert s.model == "facenet-casia-webface" and s.milvus_uri is None and s.collection == "faces"
    for by in ("face", "identity"):
        assert load_settings({"match_by": by}, path=tmp_path / "absent.toml").threshold == \
            getattr(get_spec("facenet-casia-webface").calibration, by)
    # the best installed FaceNet wins; a model that ships no calibration keeps the plain default
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "facenet-vggface2.onnx").write_bytes(b"x")
    s = load_settings(path=tmp_path / "absent.toml")
    assert (s.model, s.threshold) == ("facenet-vggface2", Settings().threshold)
    # a threshold measured by `eval identify --save-threshold` beats the shipped one
    from lookalike_live.config import save_calibrated_threshold

    save_calibrated_threshold("facenet-casia-webface", 0.61, match_by="centred")
    assert load_settings({"model": "facenet-casia-webface"}, path=tmp_path / "absent.toml").threshold == 0.61


def test_precedence_flags_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('model = "mobilefacenet"\ncollection = "from_file"\nthreshold = 0.5\nmax-faces = 3\n')
    s = load_settings(path=cfg)
    assert (s.model, s.collection, s.threshold, s.max_faces) == ("mobilefacenet", "from_file", 0.5, 3)
    monkeypatch.setenv("LOOKALIKE_COLLECTION", "from_env")
    monkeypatch.setenv("LOOKALIKE_THRESHOLD", "0.25")
    s = load_settings(path=cfg)
    assert (s.collection, s.threshold, s.model) == ("from_env", 0.25, "mobilefacenet")
    s = load_settings({"collection": "from_flag", "threshold": None}, path=cfg)
    assert (s.collection, s.threshold) == ("from_flag", 0.25)


def test_bad_values_are_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('colection = "typo"\n')
    with pytest.raises(ConfigError, match="unknown setting 'colection'.*collection"):
        load_settings(path=cfg)
    cfg.write_text("threshold = 'high'\n")
    with pytest.raises(ConfigError, match="threshold must be"):
        load_settings(path=cfg)
    monkeypatch.setenv("LOOKALIKE_BACKEND", "cuda")
    with pytest.raises(ConfigError, match=r"\$LOOKALIKE_BACKEND: backend must be one of auto, onnx, tensorrt"):
        load_settings(path=tmp_path / "absent.toml")
    cfg.write_text("model = [")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(path=cfg)


def test_match_by_and_flip_tta_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absent = tmp_path / "absent.toml"
    s = load_settings(path=absent)
    assert s.match_by == "centred" and s.flip_tta is False
    for raw, want in (("1", True), ("yes", True), ("off", False), ("FALSE", False)):
        monkeypatch.setenv("LOOKALIKE_FLIP_TTA", raw)
        assert load_settings(path=absent).flip_tta is want
    monkeypatch.setenv("LOOKALIKE_FLIP_TTA", "maybe")
    with pytest.raises(ConfigError, match="flip_tta must be true or false"):
        load_settings(path=absent)
    monkeypatch.delenv("LOOKALIKE_FLIP_TTA")
    cfg = tmp_path / "config.toml"
    cfg.write_text('match-by = "face"\nflip-tta = true\n')
    s = load_settings(path=cfg)
    assert (s.match_by, s.flip_tta) == ("face", True)
    cfg.write_text('match-by = "crowd"\n')
    with pytest.raises(ConfigError, match="match_by must be one of centred, identity, face"):
        load_settings(path=cfg)


def test_calibrated_threshold_is_used_only_when_nobody_set_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lookalike_live.config import calibrated_threshold, calibration_path, save_calibrated_threshold

    absent = tmp_path / "absent.toml"
    assert calibrated_threshold("mobilefacenet") is None
    save_calibrated_threshold("mobilefacenet", 0.27, far=0.01, match_by="centred")
    save_calibrated_threshold("facenet-casia-webface", 0.41, match_by="centred")
    assert calibration_path().is_file()
    assert calibrated_threshold("mobilefacenet") == 0.27  # the other model's entry did not replace it
    assert load_settings(path=absent).threshold == 0.41  # the default model (no FaceNet installed here)
    assert load_settings({"model": "mobilefacenet"}, path=absent).threshold == 0.27
    assert load_settings({"model": "other"}, path=absent).threshold == Settings().threshold
    cfg = tmp_path / "config.toml"
    cfg.write_text("threshold = 0.5\n")
    assert load_settings({"model": "mobilefacenet"}, path=cfg).threshold == 0.5
    monkeypatch.setenv("LOOKALIKE_THRESHOLD", "0.3")
    assert load_settings({"model": "mobilefacenet"}, path=absent).threshold == 0.3
    assert load_settings({"model": "mobilefacenet", "threshold": 0.2}, path=absent).threshold == 0.2
    # a threshold measured on nearest-photo scores is not used for centroid matching, and back
    monkeypatch.delenv("LOOKALIKE_THRESHOLD")
    save_calibrated_threshold("mobilefacenet", 0.33, match_by="face")
    from lookalike_live.models import get_spec

    shipped = get_spec("mobilefacenet").calibration.centred  # what its spec ships
    assert shipped is not None and load_settings({"model": "mobilefacenet"}, path=absent).threshold == shipped
    assert load_settings({"model": "mobilefacenet", "match_by": "face"}, path=absent).threshold == 0.33
    assert load_settings({"model": "mobilefacenet", "match_by": "identity"}, path=absent).threshold == \
        get_spec("mobilefacenet").calibration.identity  # centred and plain centroids have their own
    calibration_path().write_text("not json")
    assert calibrated_threshold("mobilefacenet") is None  # a broken file is ignored, not fatal


def test_settings_are_validated_by_type_and_range_with_the_key_and_its_origin(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    for text, message in (
        ("model = 3\n", "model must be text, got 3"),
        ("max_faces = 2.5\n", "max_faces must be a whole number, got 2.5"),
        ("threshold = 1.5\n", "threshold must be <= 1.0, got 1.5"),
        ("min_face_score = -0.1\n", "min_face_score must be >= 0.0"),
        ("top_k = -1\nbackend = 'cuda'\n", "backend must be one of auto, onnx, tensorrt, got 'cuda'; top_k must be >= 0"),
    ):
        cfg.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_settings(path=cfg)
        assert str(err.value).startswith(f"{cfg}: ") and message in str(err.value), str(err.value)
    with pytest.raises(ConfigError, match="--max-faces: max_faces must be a whole number, got 'many'"):
        load_settings({"max_faces": "many"}, path=tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        Settings().replace(colour="red")
    with pytest.raises(ConfigError, match="Settings: match_by must be one of centred, identity, face"):
        Settings(match_by="crowd")
    assert "s3cret" not in repr(Settings(token="s3cret")) and Settings(token="s3cret").token == "s3cret"
    with pytest.raises(ConfigError) as err:  # a refused secret is not echoed back
        Settings(token=12345, milvus_uri=["http://root:s3cret@h:19530"])
    assert "12345" not in str(err.value) and "s3cret" not in str(err.value)


def test_a_collection_name_cannot_leave_its_folder() -> None:
    for bad in ("../x", "a/b", "", "9lives"):
        with pytest.raises(ConfigError, match="collection must start with a letter"):
            Settings(collection=bad)
    from lookalike_live.gallery import Gallery

    with pytest.raises(ConfigError, match="collection name '../x' is not valid"):
        Gallery("/tmp/never-created.db", collection="../x")
