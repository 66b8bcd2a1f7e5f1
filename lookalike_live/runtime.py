"""The Runtime: built once from settings, it owns what the live commands share (the embedder,
loaded once; the gallery and its matcher) and is the only place that builds engines:
``run`` (through :meth:`Engine.from_settings <lookalike_live.pipeline.Engine.from_settings>`), the
desktop app (``gui/session.py``), photo mode and the monitor all get theirs from :meth:`engine`.

Every engine gets its own detector (MediaPipe's detectors are not thread-safe) and shares the
embedder (through :class:`~lookalike_live.embed.shared.SharedEmbedder`: one model call at a time,
and calls that arrive meanwhile are merged into one batch) and the matcher (one bounded queue per
engine's source, fair across them). :meth:`close` closes the engines it made,
then the matcher, the gallery and the embedder, in that order; it is idempotent.

``tolerate_gallery=True`` (the app): a gallery that is empty, unreachable or built with another
model does not stop the runtime; it runs without search and says why in :attr:`gallery_problem`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .closing import close_all
from .config import Settings
from .errors import (
    ConfigError,
    DimensionMismatchError,
    GalleryError,
    GalleryMissingError,
    GalleryUnavailableError,
)

if TYPE_CHECKING:
    from .analyzer import FaceAnalyzer
    from .pipeline import Engine, EngineConfig

log = logging.getLogger(__name__)

__all__ = ["Runtime", "GalleryProblem", "INDEX_BUILD_HINT"]

INDEX_BUILD_HINT = "lookalike-live index build --dataset /path/to/CelebA --format celeba"


@dataclass(frozen=True)
class GalleryProblem:
    """Why a runtime runs without search: ``kind`` is "unavailable", "empty", "mismatch" or "error"."""

    kind: str
    message: str


class Runtime:
    """See the module doc. ``search=False``: no gallery at all (faces are detected and tracked).
    ``spin=False``: ONNX Runtime's idle threads sleep instead of busy-waiting (the monitor, whose
    capture threads need the cores between model calls)."""

    def __init__(self, settings: Settings, *, store: Path | None = None, search: bool = True,
                 gallery: Any | None = None, matcher: Any | None = None, tolerate_gallery: bool = False,
                 gallery_timeout: float | None = None, spin: bool = True) -> None:
        from .embed import create_embedder

        self.settings = settings
        self.store = store
        self.gallery: Any = None
        self.matcher: Any = matcher
        self.gallery_stats: dict[str, Any] | None = None
        self.gallery_problem: GalleryProblem | None = None
        self._owns_gallery = False
        self._owns_matcher = False
        self.embedder: Any = None
        self._engines: list[Engine] = []
        self._lock = threading.Lock()
        self._closed = False
        self.embedder = create_embedder(settings.model, backend=settings.backend, store=store,
                                        flip_tta=settings.flip_tta, spin=spin)
        from .embed.shared import SharedEmbedder

        self.shared_embedder = SharedEmbedder(self.embedder)  # what the engines and analyzers call
        try:
            self.embedder.prepare()
            if search and matcher is None:
                self._open_gallery(gallery, tolerate_gallery, gallery_timeout)
        except BaseException:
            self.close()
            raise

    def _open_gallery(self, gallery: Any | None, tolerate: bool, timeout: float | None) -> None:
        from .gallery import Gallery, ModelMismatchError, default_uri

        s = self.settings
        try:
            if gallery is None:
                kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
                gallery = Gallery.from_settings(s, create=False, **kwargs)
                self._owns_gallery = True
            self.gallery = gallery
            if tolerate:
                self.gallery_stats = gallery.stats()
                if not self.gallery_stats.get("exists") or not self.gallery_stats.get("faces"):
                    what = "is empty" if self.gallery_stats.get("exists") else "does not exist yet"
                    raise _Empty(
                        f"The gallery (collection {s.collection!r} at {s.milvus_uri or default_uri()}) {what}: "
                        f"faces are detected but cannot be matched. Build it with `{INDEX_BUILD_HINT}` (same "
                        "--milvus-uri/--collection), then press Retry.")
            gallery.check_model(self.embedder.spec.name, self.embedder.dim, self.embedder.spec.alignment.describe())
            self.matcher = gallery.matcher()
            self._owns_matcher = True
        except (GalleryError, _Empty) as exc:
            if not tolerate:
                raise
            message = str(exc)
            if isinstance(exc, GalleryMissingError):
                kind = "empty"
                message = (f"The gallery at {s.milvus_uri or default_uri()} does not exist yet: faces are detected "
                           f"but cannot be matched. Build it with `{INDEX_BUILD_HINT}` (same --milvus-uri), then "
                           "press Retry.")
            elif isinstance(exc, _Empty):
                kind = "empty"
            elif isinstance(exc, GalleryUnavailableError):
                kind = "unavailable"
            elif isinstance(exc, (ModelMismatchError, DimensionMismatchError)):  # by type, not message
                kind = "mismatch"
            else:
                kind = "error"
            self.gallery_problem = GalleryProblem(kind, message)
            log.warning("gallery: %s: running without search", exc)
            if self._owns_gallery and self.gallery is not None:
                with contextlib.suppress(Exception):
                    self.gallery.close()
            self.gallery = None

    # -- what it builds ----------------------------------------------------------------------------
    def detector(self, running_mode: Literal["image", "video"] = "video") -> Any:
        """A new, prepared detector (one per thread: MediaPipe's are not thread-safe)."""
        from .detect import FaceDetector

        s = self.settings
        det = FaceDetector(s.detector, store=self.store, min_score=s.min_face_score, running_mode=running_mode,
                           small_faces=s.small_faces)
        det.prepare()
        return det

    def analyzer(self, running_mode: Literal["image", "video"] = "image") -> FaceAnalyzer:
        """detect -> align -> embed with a new detector and the shared embedder; close() the
        analyzer's detector only (``analyzer.detector.close()``), never the embedder."""
        from .analyzer import FaceAnalyzer

        return FaceAnalyzer(self.detector(running_mode), self.shared_embedder, max_faces=self.settings.max_faces)

    def engine(self, source_id: str = "", config: EngineConfig | None = None) -> Engine:
        """A live engine: its own video-mode detector (closed with it), the shared embedder and matcher."""
        from .pipeline import Engine, EngineConfig

        with self._lock:
            if self._closed:
                raise ConfigError("this Runtime is closed; build a new one")
        analyzer = self.analyzer("video")
        engine = Engine(analyzer, self.matcher, config or EngineConfig.from_settings(self.settings),
                        source_id=source_id, owned=[analyzer.detector])
        with self._lock:
            self._engines.append(engine)
        return engine

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the engines it built, then the matcher, the gallery (when it opened it) and the
        embedder. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            engines, self._engines = self._engines, []
        for e in engines:
            with contextlib.suppress(Exception):
                e.close()
        close_all([self.matcher if self._owns_matcher else None, self.gallery if self._owns_gallery else None,
                   self.embedder])

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Empty(Exception):
    """The gallery has no faces yet (only with tolerate_gallery)."""
