"""Qt-free work the app runs off the GUI thread: building the engine (models + gallery) and
matching every face of a photo. Nothing here touches Qt, so it is tested and reused without a display.

``load_engine`` never lets a gallery problem stop the video: when Milvus is down, the collection
is missing or empty, or built with another model, the engine runs without search (faces are still
detected and tracked) and :class:`LoadedEngine` says why (``gallery_problem``), so the window can
show a banner with the fix. Model problems (not installed, wrong backend) do raise: there is no
video without a detector and an embedder.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..errors import GalleryError, GalleryUnavailableError
from ..runtime import INDEX_BUILD_HINT, GalleryProblem
from ..types import FaceDetections, Frame, FrameResult, Match, Track, TrackState

log = logging.getLogger(__name__)

__all__ = ["GalleryProblem", "LoadedEngine", "load_engine", "PhotoMatcher", "dedupe_identities", "INDEX_BUILD_HINT"]


@dataclass
class LoadedEngine:
    """What the loader thread hands to the GUI: the engine (not started) and what the status bar shows."""

    engine: Any  # pipeline.Engine
    settings: Settings
    backend: str
    model: str
    uri: str
    is_lite: bool
    gallery_stats: dict[str, Any] | None = None
    gallery_problem: GalleryProblem | None = None
    load_seconds: float = 0.0
    runtime: Any = None  # runtime.Runtime (load_engine sets it): the embedder, gallery and matcher
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def search(self) -> bool:
        return self.engine.matcher is not None

    def close(self) -> None:
        self.engine.close()
        if self.runtime is not None:
            self.runtime.close()


def load_engine(settings: Settings, *, store: Path | None = None, top_k: int = 10,
                gallery_timeout: float = 5.0, source_id: str = "app") -> LoadedEngine:
    """Build the :class:`~lookalike_live.runtime.Runtime` (models loaded, the gallery opened, its
    problems tolerated) and its :class:`Engine` (not started). Slow (seconds): call it on a
    worker thread.

    Raises ModelNotInstalledError / UnknownModelError / BackendUnavailableError / ConfigError for
    model problems; gallery problems become ``LoadedEngine.gallery_problem`` (search off)."""
    from ..gallery import default_uri, is_lite_uri
    from ..pipeline import EngineConfig
    from ..runtime import Runtime

    t0 = time.monotonic()
    uri = settings.milvus_uri or default_uri()
    runtime = Runtime(settings, store=store, tolerate_gallery=True, gallery_timeout=gallery_timeout)
    try:
        engine = runtime.engine(source_id, EngineConfig.from_settings(settings, top_k=max(1, int(top_k))))
    except BaseException:
        runtime.close()
        raise
    return LoadedEngine(engine=engine, settings=settings, backend=str(getattr(runtime.embedder, "backend", "?")),
                        model=runtime.embedder.spec.name, uri=uri, is_lite=is_lite_uri(uri),
                        gallery_stats=runtime.gallery_stats, gallery_problem=runtime.gallery_problem,
                        load_seconds=round(time.monotonic() - t0, 3), runtime=runtime)


def dedupe_identities(matches: Sequence[Match], k: int) -> tuple[Match, ...]:
    """The best match per identity, best first, at most ``k`` (a gallery holds several photos per identity)."""
    best: dict[str, Match] = {}
    for m in matches:
        cur = best.get(m.identity)
        if cur is None or m.score > cur.score:
            best[m.identity] = m
    return tuple(sorted(best.values(), key=lambda m: (-m.score, m.identity))[: max(0, k)])


class PhotoMatcher:
    """Every face of one still image (a group photo too) matched like the live video: detection in
    image mode, alignment and the engine's embedder, then the engine's gallery matcher.

    Shares the engine's embedder (ONNX Runtime / TensorRT sessions are safe to call from another
    thread) and matcher; owns only its image-mode detector. Call from a worker thread."""

    def __init__(self, loaded: LoadedEngine, store: Path | None = None, search_timeout: float = 10.0) -> None:
        self.loaded = loaded
        self.search_timeout = float(search_timeout)
        self.detector = loaded.runtime.detector("image")  # image mode: each photo on its own

    def match(self, image: np.ndarray, *, top_k: int = 10, source_id: str = "photo") -> FrameResult:
        """A FrameResult for ``image`` (BGR uint8): one Track per face, ``best`` and ``top_k`` set when the
        gallery answered; state DECIDED / UNKNOWN (below the threshold) / SEARCH_UNAVAILABLE / TENTATIVE
        (no search). Raises GalleryError when the search fails."""
        from ..analyzer import FaceAnalyzer

        engine = self.loaded.engine
        analyzer = FaceAnalyzer(self.detector, engine.analyzer.embedder, max_faces=self.loaded.settings.max_faces)
        res = analyzer.analyze(image)  # detect -> align -> embed, as everywhere
        dets, emb, timings = res.detections, res.embeddings, dict(res.timings)
        frame = Frame(source_id, 0, 0.0, image)
        if not len(dets):
            return FrameResult(frame, dets, (), timings)
        answers: list[list[Match]] | None = None
        state = TrackState.TENTATIVE
        if engine.matcher is not None:
            t2 = time.perf_counter()
            fut = engine.matcher.submit("photo", emb.vectors, max(3 * top_k, 10))
            try:
                answers = fut.result(timeout=self.search_timeout)
            except GalleryUnavailableError:
                state = TrackState.SEARCH_UNAVAILABLE
            except concurrent.futures.CancelledError as exc:  # its queue overflowed, or the app is closing
                raise GalleryError("the search of this photo was dropped (newer requests took its place, or the "
                                   "gallery is closing): open the photo again") from exc
            except TimeoutError as exc:
                raise GalleryUnavailableError(f"the gallery did not answer within {self.search_timeout:g} s") from exc
            timings["search"] = (time.perf_counter() - t2) * 1e3
        threshold = engine.tracker.config.threshold
        tracks = []
        by_det = {int(d): i for i, d in enumerate(emb.det_index.tolist())}
        for row in range(len(dets)):
            box = tuple(float(v) for v in dets.xyxy[row])
            i = by_det.get(row)
            top: tuple[Match, ...] = ()
            if answers is not None and i is not None and i < len(answers):
                top = dedupe_identities(answers[i], top_k)
            best = top[0] if top else None
            st = state
            if best is not None:
                st = TrackState.DECIDED if best.score >= threshold else TrackState.UNKNOWN
            tracks.append(Track(row + 1, box, best, {m.identity: m.score for m in top}, st, top))  # type: ignore[arg-type]
        return FrameResult(frame, dets, tuple(tracks), timings)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.detector.close()


def empty_result(image: np.ndarray, source_id: str = "photo") -> FrameResult:
    """A FrameResult with no faces (e.g. to show an image before it is analysed)."""
    return FrameResult(Frame(source_id, 0, 0.0, image), FaceDetections.empty())
