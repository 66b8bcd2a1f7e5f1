"""Face-gallery dataset readers: CelebA, folder-per-identity (LFW style) and VGGFace2.

Each reader yields :class:`GalleryItem` (one photo, its identity and display name, and an
annotated face box when the dataset has one), in a stable order.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .imageio import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

FORMATS = ("celeba", "folders", "vggface2")


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
    for lineno, line in enumerate(ident_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 1 and parts[0].isdigit() and lineno == 1:
            continue  # count header in some mirrors
        if len(parts) != 2 or Path(parts[0]).suffix.lower() not in IMAGE_EXTENSIONS:
            if lineno <= 2:
                continue  # column header such as "image_id identity"
            problems.append(f"{ident_file.name}:{lineno}: cannot parse {line!r}")
            continue
        identities.append((parts[0], parts[1]))

    boxes: dict[str, tuple[float, float, float, float]] = {}
    bbox_file = _find(root, "Anno/list_bbox_celeba.txt", "list_bbox_celeba.txt")
    if bbox_file is not None and img_dir.name == "img_celeba":  # boxes refer to the in-the-wild photos
        for line in bbox_file.read_text().splitlines():
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
        GalleryItem(img_dir / fname, f"{img_dir.name}/{fname}", ident, names.get(ident, f"CelebA #{ident}"),
                    boxes.get(fname))
        for fname, ident in identities
    )
    if problems:
        log.warning("%d unparsable lines in %s (first: %s)", len(problems), ident_file, problems[0])
    return Dataset("celeba", root, items, tuple(problems))


def _read_names_csv(path: Path) -> dict[str, str]:
    """``identity,name`` rows (a header row is allowed)."""
    names: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            if len(row) >= 2 and row[0].strip() and row[0].strip().lower() not in ("identity", "id", "class_id"):
                names[row[0].strip()] = row[1].strip()
    return names


# --------------------------------------------------------------------------- folders
def _folders(root: Path, dataset_name: str, names: dict[str, str] | None = None) -> Dataset:
    items = []
    for ident_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for img in sorted(p for p in ident_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
            ident = ident_dir.name
            name = (names or {}).get(ident) or ident.replace("_", " ")
            items.append(GalleryItem(img, img.relative_to(root).as_posix(), ident, name))
    if not items:
        raise ConfigError(f"{root} has no images in per-identity subfolders (expected ROOT/<identity>/*.jpg)")
    return Dataset(dataset_name, root, tuple(items))


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
    for split in splits:
        ds = _folders(split, "vggface2", names)
        items.extend(
            GalleryItem(i.path, i.path.relative_to(root).as_posix(), i.identity, i.name) for i in ds.items
        )
    return Dataset("vggface2", root, tuple(items))
