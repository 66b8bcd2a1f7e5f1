"""Model specs and the model store: what each model expects, where it lives, how it is fetched.

A model is a *spec* (a TOML file: input size, colour order, normalisation, alignment,
embedding dim, source URL and SHA-256) plus a weights file in the model store
(``$LOOKALIKE_MODELS_DIR``, default: the user cache dir). The built-in specs live in
``lookalike_live/model_specs/``; any ONNX face embedder works the same way with a spec of
its own (pass the TOML path as the model name, or drop it in ``<store>/specs/``).

Nothing here downloads unless asked: :func:`require` only looks, and its error names the
command that installs the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import tomllib
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import ChecksumError, ConfigError, ModelNotInstalledError, UnknownModelError

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "facenet-vggface2"
DETECTORS = {"short": "blazeface-short", "full": "blazeface-full"}


@dataclass(frozen=True)
class InputSpec:
    size: int
    name: str | None = None
    color: str = "RGB"  # channel order the network expects
    layout: str = "NCHW"
    mean: float = 127.5  # x_net = (x - mean) / std, x in [0, 255]
    std: float = 128.0


@dataclass(frozen=True)
class OutputSpec:
    dim: int
    name: str | None = None


@dataclass(frozen=True)
class AlignmentSpec:
    method: str = "box"  # "box": square face box with margin; "arcface5": 5-point similarity to the ArcFace template
    margin: float = 0.2


@dataclass(frozen=True)
class SourceSpec:
    url: str | None = None
    file: str | None = None
    sha256: str | None = None
    size: int | None = None
    convert: str | None = None  # name of a converter that turns `file` into the spec's runtime file


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "embedder" | "detector"
    file: str  # the file the runtime loads, inside the model store
    input: InputSpec
    title: str = ""
    sha256: str | None = None  # of `file`, where it is fixed (not for converted files)
    license: str = ""
    output: OutputSpec | None = None
    alignment: AlignmentSpec = field(default_factory=AlignmentSpec)
    source: SourceSpec = field(default_factory=SourceSpec)
    spec_path: str = ""

    @property
    def dim(self) -> int:
        if self.output is None:
            raise ConfigError(f"model {self.name!r} is a {self.kind}, it has no embedding dimension")
        return self.output.dim

    def path(self, store: Path | None = None) -> Path:
        return (store or models_dir()) / self.file

    def is_installed(self, store: Path | None = None) -> bool:
        return self.path(store).is_file()

    def install_hint(self) -> str:
        if self.source.url and self.source.convert:
            return (
                f"lookalike-live models fetch {self.name} && lookalike-live models convert {self.name}"
                " (the conversion needs the export extra: pip install 'lookalike-live[export]')"
            )
        if self.source.url:
            return f"lookalike-live models fetch {self.name}"
        return f"lookalike-live models fetch {self.name} --from DIR  (DIR holding {self.file})"


def models_dir() -> Path:
    """The model store: ``$LOOKALIKE_MODELS_DIR`` or the user cache dir."""
    env = os.environ.get("LOOKALIKE_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lookalike-live")) / "models"


def _parse_spec(data: dict, origin: str) -> ModelSpec:
    try:
        out = data.get("output")
        return ModelSpec(
            name=data["name"],
            kind=data["kind"],
            file=data["file"],
            title=data.get("title", ""),
            sha256=data.get("sha256"),
            license=data.get("license", ""),
            input=InputSpec(**data["input"]),
            output=OutputSpec(**out) if out else None,
            alignment=AlignmentSpec(**data.get("alignment", {})),
            source=SourceSpec(**data.get("source", {})),
            spec_path=origin,
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"invalid model spec {origin}: {exc}") from exc


def load_spec_file(path: str | Path) -> ModelSpec:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read model spec {path}: {exc}") from exc
    return _parse_spec(data, str(path))


def registry(store: Path | None = None) -> dict[str, ModelSpec]:
    """Built-in specs plus any ``*.toml`` in ``<store>/specs/`` (those override by name)."""
    specs: dict[str, ModelSpec] = {}
    for entry in resources.files("lookalike_live.model_specs").iterdir():
        if entry.name.endswith(".toml"):
            spec = _parse_spec(tomllib.loads(entry.read_text()), f"lookalike_live/model_specs/{entry.name}")
            specs[spec.name] = spec
    user_dir = (store or models_dir()) / "specs"
    if user_dir.is_dir():
        for path in sorted(user_dir.glob("*.toml")):
            spec = load_spec_file(path)
            specs[spec.name] = spec
    return specs


def get_spec(name: str, store: Path | None = None) -> ModelSpec:
    """A spec by registry name, or from a ``.toml`` path. Unknown names list the known ones."""
    if name.endswith(".toml"):
        return load_spec_file(name)
    specs = registry(store)
    if name in DETECTORS:
        name = DETECTORS[name]
    try:
        return specs[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(sorted(specs))} "
            "(or pass the path of a spec .toml)"
        ) from None


def require(name: str, store: Path | None = None) -> tuple[ModelSpec, Path]:
    """The spec and installed file of a model, or ModelNotInstalledError naming the install command."""
    spec = get_spec(name, store)
    path = spec.path(store)
    if not path.is_file():
        raise ModelNotInstalledError(
            f"model {spec.name!r} is not installed (looked for {path}). Install it with: {spec.install_hint()}"
        )
    return spec, path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _atomic_target(dst: Path) -> tuple[int, Path]:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    return fd, Path(tmp)


def _finish(tmp: Path, dst: Path, expected_sha256: str | None) -> Path:
    """Verify ``tmp`` and rename it over ``dst``; on mismatch delete it and raise ChecksumError."""
    if expected_sha256:
        actual = sha256_file(tmp)
        if actual != expected_sha256.lower():
            tmp.unlink(missing_ok=True)
            raise ChecksumError(str(dst), expected_sha256, actual)
    os.replace(tmp, dst)
    return dst


def install_file(src: Path, dst: Path, expected_sha256: str | None) -> Path:
    """Copy ``src`` to ``dst`` atomically, verifying the SHA-256 first: nothing half-written remains."""
    fd, tmp = _atomic_target(dst)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
        return _finish(tmp, dst, expected_sha256)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def download(url: str, dst: Path, expected_sha256: str | None, size: int | None = None, timeout: float = 60) -> Path:
    """Download ``url`` to ``dst`` with a progress bar, verify SHA-256, then rename into place."""
    from tqdm import tqdm

    fd, tmp = _atomic_target(dst)
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "lookalike-live"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or size or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dst.name, leave=False) as bar:
                while block := resp.read(1 << 16):
                    out.write(block)
                    bar.update(len(block))
        return _finish(tmp, dst, expected_sha256)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fetch(name: str, store: Path | None = None, from_dir: Path | None = None, force: bool = False) -> Path:
    """Install one model into the store, from ``from_dir`` or from its public URL.

    Returns the installed runtime file, or (for a model that must be converted and has not
    been yet) the downloaded source file. A wrong checksum raises ChecksumError and leaves
    nothing behind.
    """
    spec = get_spec(name, store)
    store = store or models_dir()
    target = spec.path(store)
    if target.is_file() and not force:
        log.info("%s already installed at %s", spec.name, target)
        return target

    if from_dir is not None:
        from_dir = Path(from_dir)
        if (from_dir / spec.file).is_file():
            log.info("installing %s from %s", spec.name, from_dir / spec.file)
            return install_file(from_dir / spec.file, target, spec.sha256)
        if spec.source.file and (from_dir / spec.source.file).is_file():
            dst = store / spec.source.file
            log.info("installing %s source weights from %s", spec.name, from_dir / spec.source.file)
            return install_file(from_dir / spec.source.file, dst, spec.source.sha256)
        wanted = " or ".join(sorted({spec.file, spec.source.file or spec.file}))
        raise ModelNotInstalledError(f"{from_dir} has no file for model {spec.name!r} (looked for {wanted})")

    if not spec.source.url:
        raise ModelNotInstalledError(
            f"model {spec.name!r} has no public download; install it with: {spec.install_hint()}"
        )
    dst = store / (spec.source.file or spec.file)
    if not (dst.is_file() and not force):
        log.info("downloading %s from %s", spec.name, spec.source.url)
        download(spec.source.url, dst, spec.source.sha256, spec.source.size)
    if spec.source.convert is None:
        return dst
    log.info("%s downloaded; run `lookalike-live models convert %s` to build %s", spec.name, spec.name, spec.file)
    return dst


def convert(name: str, store: Path | None = None) -> Path:
    """Run a model's converter (e.g. FaceNet PyTorch weights -> ONNX) inside the store."""
    spec = get_spec(name, store)
    store = store or models_dir()
    if spec.source.convert is None:
        raise ConfigError(f"model {spec.name!r} needs no conversion")
    src = store / (spec.source.file or "")
    if not src.is_file():
        raise ModelNotInstalledError(
            f"{spec.name!r} source weights are missing ({src}); run: lookalike-live models fetch {spec.name}"
        )
    if spec.source.convert == "facenet":
        from .facenet import convert_checkpoint_to_onnx

        fd, tmp = _atomic_target(spec.path(store))
        os.close(fd)
        try:
            convert_checkpoint_to_onnx(src, tmp, input_name=spec.input.name or "input",
                                       output_name=spec.output.name if spec.output else "embedding",
                                       size=spec.input.size)
            return _finish(tmp, spec.path(store), None)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    raise ConfigError(f"unknown converter {spec.source.convert!r} in spec {spec.spec_path}")


@dataclass(frozen=True)
class ModelStatus:
    name: str
    kind: str
    installed: bool
    path: str
    dim: int | None
    note: str


def list_models(store: Path | None = None, names: Iterable[str] | None = None) -> list[ModelStatus]:
    store = store or models_dir()
    rows = []
    for spec in sorted(registry(store).values(), key=lambda s: (s.kind, s.name)):
        if names and spec.name not in names:
            continue
        path = spec.path(store)
        note = ""
        if not path.is_file() and spec.source.file and (store / spec.source.file).is_file():
            note = f"weights downloaded, not converted: lookalike-live models convert {spec.name}"
        elif not path.is_file():
            note = spec.install_hint()
        rows.append(
            ModelStatus(spec.name, spec.kind, path.is_file(), str(path), spec.output.dim if spec.output else None, note)
        )
    return rows
