"""Face-gallery dataset readers: CelebA, folder-per-identity (LFW style) and VGGFace2.

Each reader yields :class:`GalleryItem` (one photo, its identity and display name, and an
annotated face box and five landmarks when the dataset has them), in a stable order.

CelebA's annotations (every official download has them under ``Anno/``):

* ``list_landmarks_celeba.txt`` (in-the-wild photos, ``img_celeba``) and
  ``list_landmarks_align_celeba.txt`` (the aligned set, ``img_align_celeba``): a count line, a header
  line ``lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x
  rightmouth_y``, then ``image_id`` and ten whole-pixel numbers a photo. "left" is the image's left
  (the subject's right eye), which is the order of the ArcFace template; with them ``index build``
  runs no detector (``lookalike_live.prepare``);
* ``list_bbox_celeba.txt`` (``image_id x_1 y_1 width height``, in-the-wild photos only): the face
  to pick where a photo has to be detected after all.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import ConfigError
from .imageio import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

FORMATS = ("celeba", "folders", "vggface2")
#: ``index build --annotations``: use a dataset's landmark file when there is one (auto), insist on
#: it (on), or detect every face (off)
ANNOTATIONS = ("auto", "on", "off")
#: the landmark file of each CelebA image folder
LANDMARK_FILES = {"img_celeba": "list_landmarks_celeba.txt", "img_align_celeba": "list_landmarks_align_celeba.txt"}

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
    #: annotated landmarks, 10 numbers in CelebA's order (left eye x, y, right eye, nose, left mouth
    #: corner, right mouth corner; "left" as seen in the image), pixels of the stored photo
    landmarks: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Dataset:
    name: str  # e.g. "celeba": part of the stable face id
    root: Path
    items: tuple[GalleryItem, ...]
    problems: tuple[str, ...] = ()  # annotation lines that could not be used (logged, not fatal)
    landmarks_file: str | None = None  # the landmark file read ("Anno/list_landmarks_celeba.txt"), if any
    #: photos whose landmark line could not be used (malformed, not finite): detected instead
    landmarks_malformed: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.items)

    @property
    def identities(self) -> int:
        return len({i.identity for i in self.items})


def open_dataset(root: str | Path, fmt: str, names_csv: Path | None = None, annotations: str = "auto") -> Dataset:
    """Read a dataset's layout and annotations. ``annotations`` (:data:`ANNOTATIONS`): read CelebA's
    landmark file when present (auto), require it (on) or ignore it (off). Raises ConfigError with
    what is missing."""
    root = Path(root).expanduser().resolve()
    if annotations not in ANNOTATIONS:
        raise ConfigError(f"unknown --annotations {annotations!r}; use one of {', '.join(ANNOTATIONS)}")
    if annotations == "on" and fmt != "celeba":
        raise ConfigError(f"--annotations on reads CelebA's landmark file, but --format is {fmt}; "
                          "use --annotations auto (or off) for this dataset")
    if not root.is_dir():
        raise ConfigError(f"dataset folder {root} does not exist")
    if fmt == "celeba":
        return _celeba(root, names_csv, annotations)
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


def _celeba(root: Path, names_csv: Path | None, annotations: str = "auto") -> Dataset:
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

    landmarks: dict[str, tuple[float, ...]] = {}
    malformed: set[str] = set()
    mark_file = None
    if annotations != "off":
        wanted = LANDMARK_FILES.get(img_dir.name, LANDMARK_FILES["img_celeba"])
        mark_file = _find(root, f"Anno/{wanted}", wanted)
        if mark_file is None and annotations == "on":
            raise ConfigError(
                f"--annotations on: {root} has no Anno/{wanted} (every CelebA download has it, beside "
                f"identity_CelebA.txt); copy it there, or use --annotations auto to detect the faces instead")
        if mark_file is not None:
            landmarks, malformed = _read_landmarks(mark_file, problems)

    names: dict[str, str] = {}
    names_csv = names_csv or _find(root, "Anno/identity_names.csv", "identity_names.csv")
    if names_csv is not None:
        names = _read_names_csv(Path(names_csv))

    items = tuple(
        GalleryItem(img_dir / fname, f"{img_dir.name}/{fname}", ident, _cut(names.get(ident, f"CelebA #{ident}")),
                    boxes.get(fname), landmarks.get(fname))
        for fname, ident in identities
    )
    if problems:
        log.warning("%d annotation lines not used in %s (first: %s)", len(problems), root, problems[0])
    return Dataset("celeba", root, items, tuple(problems),
                   landmarks_file=None if mark_file is None else mark_file.relative_to(root).as_posix(),
                   landmarks_malformed=frozenset(f"{img_dir.name}/{f}" for f in malformed))


def _read_landmarks(path: Path, problems: list[str]) -> tuple[dict[str, tuple[float, ...]], set[str]]:
    """CelebA's landmark file: {photo: 10 numbers}, and the photos whose line could not be used (a
    wrong number of fields, a value that is not a finite number): those are detected instead."""
    marks: dict[str, tuple[float, ...]] = {}
    bad: set[str] = set()
    for lineno, line in _text_lines(path, problems):
        parts = line.split()
        if not parts or (lineno == 1 and len(parts) == 1 and parts[0].isdigit()):
            continue  # blank, or the count line
        if Path(parts[0]).suffix.lower() not in IMAGE_EXTENSIONS:
            if lineno > 2:  # the header line is "lefteye_x lefteye_y ..."
                problems.append(f"{path.name}:{lineno}: cannot parse {line[:80]!r}")
            continue
        try:
            values = tuple(float(v) for v in parts[1:])
        except ValueError:
            values = ()
        if len(values) != 10 or not all(math.isfinite(v) for v in values):
            bad.add(parts[0])
            problems.append(f"{path.name}:{lineno}: {parts[0]} needs 10 landmark numbers, got {line[len(parts[0]):].strip()[:80]!r}; "
                            "its face is detected instead")
            continue
        if parts[0] in marks:
            problems.append(f"{path.name}:{lineno}: {parts[0]} is listed again; the first kept")
            continue
        marks[parts[0]] = values
    return marks, bad


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
