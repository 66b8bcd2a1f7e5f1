"""Fixtures for the live engine, monitor and `run` tests (import them into a test module).

``live_gallery`` builds one small real gallery per session: the first photos of the CelebA
fixture, detected, aligned and embedded with the MobileFaceNet fixture (FaceAnalyzer) and written
with Gallery.upsert_faces into a Milvus Lite temp file, with thumbnails. Milvus Lite allows one
process per file, so tests that hand the gallery to another process use ``gallery_copy``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from lookalike_live.config import Settings

GALLERY_PHOTOS = 120
#: names in four scripts given to the identities of ``unicode_gallery`` (a test fixture: these are
#: not the people in the CelebA photos)
UNICODE_NAMES = ("Penélope Cruz", "Björk Guðmundsdóttir", "Владимир Высоцкий", "李小龙")


@dataclass(frozen=True)
class LiveGallery:
    uri: str  # Milvus Lite file
    collection: str
    store: Path  # model store holding blazeface + mobilefacenet
    faces: int
    identities: int

    def settings(self, **changes: object) -> Settings:
        base = Settings(model="mobilefacenet", backend="onnx", milvus_uri=self.uri, collection=self.collection)
        return base.replace(**changes)


def build_gallery(uri: str, store: Path, celeba_dir: Path, limit: int = GALLERY_PHOTOS,
                  collection: str = "faces", names: dict[str, str] | None = None) -> LiveGallery:
    """``names``: identity -> display name (default: the dataset's, "CelebA #<id>")."""
    import numpy as np

    from lookalike_live.align import largest_face
    from lookalike_live.analyzer import FaceAnalyzer
    from lookalike_live.datasets import open_dataset
    from lookalike_live.gallery import Gallery, encode_thumbnail, face_id
    from lookalike_live.imageio import read_image

    ds = open_dataset(celeba_dir, "celeba")
    items = ds.items[:limit]
    ids, vecs, ident, shown, paths, boxes, quality, thumbs = [], [], [], [], [], [], [], []
    settings = Settings(model="mobilefacenet", backend="onnx", detector="full")
    with FaceAnalyzer.from_settings(settings, store=store) as analyzer:
        for item in items:
            image = read_image(item.path)
            res = analyzer.analyze(image)
            if not len(res.embeddings):
                continue
            i = largest_face(res.detections)
            ids.append(face_id(ds.name, item.rel_path, 0))
            vecs.append(res.embeddings.vectors[i])
            ident.append(item.identity)
            shown.append((names or {}).get(item.identity, item.name))
            paths.append(item.rel_path)
            boxes.append(res.detections.xyxy[i])
            quality.append(float(res.crops.quality[i]))
            thumbs.append(encode_thumbnail(image, res.detections.xyxy[i]))
        dim = analyzer.embedder.dim
        model = analyzer.spec.name
    with Gallery(uri, collection=collection) as g:
        g.ensure(dim=dim, model=model)
        g.upsert_faces(ids, np.stack(vecs), ident, shown, ds.name, paths, bbox=np.stack(boxes), quality=quality,
                       thumbnail=thumbs)
        g.flush()
        g.rebuild_centroids()  # as `index build` does: live matching searches identity centroids
        n = g.count()
    return LiveGallery(uri, collection, store, n, len(set(ident)))


@pytest.fixture(scope="session")
def live_gallery(tmp_path_factory: pytest.TempPathFactory, model_store: Path, celeba_dir: Path) -> LiveGallery:
    folder = tmp_path_factory.mktemp("live-gallery")
    return build_gallery(str(folder / "gallery.db"), model_store, celeba_dir)


def unicode_names(celeba_dir: Path) -> dict[str, str]:
    """identity -> one of UNICODE_NAMES, round robin over the identities in file order."""
    from lookalike_live.datasets import open_dataset

    idents = list(dict.fromkeys(item.identity for item in open_dataset(celeba_dir, "celeba").items))
    return {ident: UNICODE_NAMES[i % len(UNICODE_NAMES)] for i, ident in enumerate(idents)}


@pytest.fixture(scope="session")
def unicode_gallery(tmp_path_factory: pytest.TempPathFactory, model_store: Path, celeba_dir: Path) -> LiveGallery:
    """The live gallery's photos with non-ASCII names (Latin accents, Icelandic, Cyrillic, CJK)."""
    folder = tmp_path_factory.mktemp("unicode-gallery")
    return build_gallery(str(folder / "gallery.db"), model_store, celeba_dir, names=unicode_names(celeba_dir))


@pytest.fixture
def gallery_copy(live_gallery: LiveGallery, tmp_path: Path) -> LiveGallery:
    """A private copy of the session gallery (its folder: Lite file + local index cache)."""
    src = Path(live_gallery.uri).parent
    dst = tmp_path / "gallery-copy"
    shutil.copytree(src, dst)
    return LiveGallery(str(dst / "gallery.db"), live_gallery.collection, live_gallery.store,
                       live_gallery.faces, live_gallery.identities)


def live_parser(build=None):  # type: ignore[no-untyped-def]
    """The `lookalike-live` parser with the live subcommands registered (as cli.build_parser will
    once it calls live_cli.register; until then they are added here)."""
    import argparse

    from lookalike_live import cli, live_cli

    parser = (build or cli.build_parser)()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "run" not in sub.choices:
        live_cli.register(sub, cli._model_opts, cli._detector_opts, cli._gallery_opts, cli._json_opt)
    return parser


def live_main(argv: list[str]) -> int:
    """``lookalike-live`` main() in this process, with the live subcommands (cli.main's error handling)."""
    import logging

    from lookalike_live.errors import LookalikeError

    args = live_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LookalikeError as exc:
        logging.getLogger("lookalike_live").error("%s", exc)
        return 2


def live_cli_command(tests_dir: Path) -> list[str]:
    """argv prefix running the real ``lookalike_live.cli.main`` in a subprocess, live subcommands included."""
    import sys

    script = (
        f"import sys; sys.path.insert(0, {str(tests_dir)!r}); from live_fixtures import live_parser; "
        "from lookalike_live import cli; orig = cli.build_parser; "
        "cli.build_parser = lambda: live_parser(orig); sys.exit(cli.main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", script]
