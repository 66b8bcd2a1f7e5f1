"""Face-gallery dataset readers: CelebA, folder-per-identity (LFW style) and VGGFace2.

Each reader yields :class:`GalleryItem` (one photo, its identity and display name, and an
annotated face box when the dataset has one), in a stable order.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import ConfigError
from .imageio import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

FORMATS = ("celeba", "folders", "vggface2")

#: what the gallery's fields hold at most (UTF-8 bytes; gallery.common MAX_IDENTITY, MAX_NAME,
#: MAX_PATH): a longer identity or path is refused here, with its line, instead of failing a whole
#: batch of the build; a longer name is cut
MAX_IDENTITY_BYTES = 256
MAX_NAME_BYTES = 512
MAX_PATH_BYTES = 1024


@dataclass(frozen=True)
class GalleryItem:
    path: Path  # absolute path of the photo
    rel_path: str  # path relative to the dataset root: part of the stable face id
    identity: str  # dataset identity id (CelebA: the numeric id as text)
    name: str  # display name; the identity id when the dataset has no names
    bbox: tuple[float, float, float, float] | None = None  # annotated face box, xyxy pixels


@dataclass(frozen=True)
class Dataset:
    name: str  # e.g. "celeba": part of the stable face id
    root: Path
    items: tuple[GalleryItem, ...]
    problems: tuple[str, ...] = ()  # annotation lines that could not be used (logged, not fatal)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def identities(self) -> int:
        return len({i.identity for i in self.items})


def open_dataset(root: str | Path, fmt: str, names_csv: Path | None = None) -> Dataset:
    """Read a dataset's layout and annotations. Raises ConfigError with what is missing."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"dataset folder {root} does not exist")
    if fmt == "celeba":
        return _celeba(root, names_csv)
    if fmt == "folders":
        return _folders(root, "folders")
    if fmt == "vggface2":
        return _vggface2(root)
    raise ConfigError(f"unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- CelebA
def _find(root: Path, *candidates: str) -> Path | None:
    for c in candidates:
        if (root / c).exists():
            return root / c
    return None


def _celeba(root: Path, names_csv: Path | None) -> Dataset:
    img_dir = _find(root, "Img/img_celeba", "Img/img_align_celeba", "img_celeba", "img_align_celeba")
    ident_file = _find(root, "Anno/identity_CelebA.txt", "identity_CelebA.txt")
    if img_dir is None or ident_file is None:
        raise ConfigError(
            f"{root} is not a CelebA folder: expected Img/img_celeba (or Img/img_align_celeba) and "
            "Anno/identity_CelebA.txt as in the CelebA download"
        )
    problems: list[str] = []
    identities: list[tuple[str, str]] = []
    first_line: dict[str, tuple[int, str]] = {}  # photo -> (line, identity) where it was listed first
    for lineno, line in _text_lines(ident_file, problems):
        parts = line.split()
        if not parts:
            continue
        where = f"{ident_file.name}:{lineno}"
        if len(parts) == 1 and parts[0].isdigit() and lineno == 1:
            continue  # count header in some mirrors
        if len(parts) != 2 or Path(parts[0]).suffix.lower() not in IMAGE_EXTENSIONS:
            if lineno <= 2:
                continue  # column header such as "image_id identity"
            problems.append(f"{where}: cannot parse {line!r}")
            continue
        fname, ident = parts
        why = _bad_path(fname) or _bad_identity(ident)
        if why:
            problems.append(f"{where}: {why}; skipped")
            continue
        if fname in first_line:
            at, was = first_line[fname]
            same = "" if was == ident else f" as identity {was}, not {ident}"
            problems.append(f"{where}: {fname} is listed again (first at line {at}{same}); the first kept")
            continue
        first_line[fname] = (lineno, ident)
        identities.append((fname, ident))

    boxes: dict[str, tuple[float, float, float, float]] = {}
    bbox_file = _find(root, "Anno/list_bbox_celeba.txt", "list_bbox_celeba.txt")
    if bbox_file is not None and img_dir.name == "img_celeba":  # boxes refer to the in-the-wild photos
        for _, line in _text_lines(bbox_file, problems):
            parts = line.split()
            if len(parts) == 5 and Path(parts[0]).suffix.lower() in IMAGE_EXTENSIONS:
                try:
                    x, y, w, h = (float(v) for v in parts[1:])
                except ValueError:
                    continue
                boxes[parts[0]] = (x, y, x + w, y + h)

    names: dict[str, str] = {}
    names_csv = names_csv or _find(root, "Anno/identity_names.csv", "identity_names.csv")
    if names_csv is not None:
        names = _read_names_csv(Path(names_csv))

    items = tuple(
        GalleryItem(img_dir / fname, f"{img_dir.name}/{fname}", ident, _cut(names.get(ident, f"CelebA #{ident}")),
                    boxes.get(fname))
        for fname, ident in identities
    )
    if problems:
        log.warning("%d annotation lines not used in %s (first: %s)", len(problems), root, problems[0])
    return Dataset("celeba", root, items, tuple(problems))


def _text_lines(path: Path, problems: list[str]) -> list[tuple[int, str]]:
    """(line number, text) of a UTF-8 annotation file (a BOM, CRLF and a missing last newline are
    fine); a line that is not UTF-8 is a problem of its own, not the end of the build."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out = []
    for lineno, raw in enumerate(data.splitlines(), 1):
        try:
            out.append((lineno, raw.decode("utf-8")))
        except UnicodeDecodeError as exc:
            problems.append(f"{path.name}:{lineno}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                            f"{exc.start + 1}); skipped")
    return out


def _bad_path(rel: str) -> str | None:
    """Why a photo path from an annotation file cannot be used (None: it can)."""
    parts = PurePosixPath(rel.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or (len(rel) > 1 and rel[1] == ":"):
        return f"the path {rel!r} leaves the dataset folder"
    if len(rel.encode("utf-8")) > MAX_PATH_BYTES:
        return f"the path is {len(rel.encode('utf-8'))} bytes long, the gallery keeps at most {MAX_PATH_BYTES}"
    return None


def _bad_identity(ident: str) -> str | None:
    size = len(ident.encode("utf-8"))
    if size > MAX_IDENTITY_BYTES:
        return f"the identity is {size} bytes long, the gallery keeps at most {MAX_IDENTITY_BYTES}"
    return None


def _cut(name: str) -> str:
    """A display name cut to MAX_NAME_BYTES of UTF-8 (at a character boundary, with an ellipsis)."""
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    return name.encode("utf-8")[: MAX_NAME_BYTES - 3].decode("utf-8", "ignore") + "\u2026"


def _read_names_csv(path: Path) -> dict[str, str]:
    """``identity,name`` rows (a header row is allowed)."""
    names: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        for row in csv.reader(fh):
            if len(row) >= 2 and row[0].strip() and row[0].strip().lower() not in ("identity", "id", "class_id"):
                names[row[0].strip()] = row[1].strip()
    return names


# --------------------------------------------------------------------------- folders
def _folders(root: Path, dataset_name: str, names: dict[str, str] | None = None) -> Dataset:
    items = []
    problems: list[str] = []
    for ident_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        ident = ident_dir.name
        why = _bad_identity(ident)
        if why:
            problems.append(f"{ident_dir}: {why}; skipped")
            continue
        for img in sorted(_images_below(ident_dir, problems)):
            rel = img.relative_to(root).as_posix()
            why = _bad_path(rel)
            if why:
                problems.append(f"{img}: {why}; skipped")
                continue
            name = (names or {}).get(ident) or ident.replace("_", " ")
            items.append(GalleryItem(img, rel, ident, _cut(name)))
    if not items:
        raise ConfigError(f"{root} has no images in per-identity subfolders (expected ROOT/<identity>/*.jpg)")
    if problems:
        log.warning("%d photos or folders not used in %s (first: %s)", len(problems), root, problems[0])
    return Dataset(dataset_name, root, tuple(items), tuple(problems))


def _images_below(folder: Path, problems: list[str]) -> list[Path]:
    """The image files below ``folder``; a symlink loop or an unreadable folder is a problem, not a crash."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
            if (st.st_dev, st.st_ino) in seen:
                problems.append(f"{d}: a folder seen before (a symlink loop?); skipped")
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = list(d.iterdir())
        except OSError as exc:
            problems.append(f"{d}: cannot list it ({exc.strerror or exc}); skipped")
            continue
        for e in entries:
            try:
                if e.is_dir():
                    stack.append(e)
                elif e.suffix.lower() in IMAGE_EXTENSIONS:
                    found.append(e)
            except OSError as exc:
                problems.append(f"{e}: {exc.strerror or exc}; skipped")
    return found


# --------------------------------------------------------------------------- VGGFace2
def _vggface2(root: Path) -> Dataset:
    meta = _find(root, "identity_meta.csv", "meta/identity_meta.csv")
    names: dict[str, str] = {}
    if meta is not None:
        with meta.open(newline="", encoding="utf-8", errors="replace") as fh:
            for row in csv.reader(fh, skipinitialspace=True):
                if len(row) >= 2 and row[0].startswith("n"):
                    names[row[0].strip()] = row[1].strip().strip('"').replace("_", " ")
    else:
        log.warning("%s has no identity_meta.csv: identities are shown by their class id", root)
    splits = [root / s for s in ("train", "test") if (root / s).is_dir()] or [root]
    items: list[GalleryItem] = []
    problems: list[str] = []
    for split in splits:
        ds = _folders(split, "vggface2", names)
        problems.extend(ds.problems)
        items.extend(
            GalleryItem(i.path, i.path.relative_to(root).as_posix(), i.identity, i.name) for i in ds.items
        )
    return Dataset("vggface2", root, tuple(items), tuple(problems))
