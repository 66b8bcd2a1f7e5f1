"""Wiring of the stages. :class:`FaceAnalyzer` runs detect -> align -> embed on one image
(one embedding batch per image); the live :class:`Engine` builds on it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Settings
from .types import Embeddings, FaceCrops, FaceDetections

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class FaceAnalysis:
    """Every face of one image: detections, their aligned crops and embeddings (rows of
    ``crops``/``embeddings`` point into ``detections`` through ``det_index``)."""

    detections: FaceDetections
    crops: FaceCrops
    embeddings: Embeddings
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage


class FaceAnalyzer:
    """detect -> align -> embed for one BGR uint8 image at a time.

    Construction is cheap; models load on first use (or :meth:`prepare`).
    """

    def __init__(self, detector, embedder, max_faces: int | None = None) -> None:  # type: ignore[no-untyped-def]
        self.detector = detector
        self.embedder = embedder
        self.max_faces = max_faces

    @classmethod
    def from_settings(cls, settings: Settings, store: Path | None = None, running_mode: str = "image") -> FaceAnalyzer:
        from .detect import FaceDetector
        from .embed import create_embedder

        detector = FaceDetector(
            settings.detector, store=store, min_score=settings.min_face_score,
            running_mode=running_mode, small_faces=settings.small_faces,
        )
        embedder = create_embedder(settings.model, backend=settings.backend, store=store)
        return cls(detector, embedder, max_faces=settings.max_faces)

    @property
    def spec(self):  # type: ignore[no-untyped-def]
        return self.embedder.spec

    def prepare(self) -> FaceAnalyzer:
        self.detector.prepare()
        self.embedder.prepare()
        return self

    def detect(self, image: np.ndarray, ts_ms: float | None = None) -> FaceDetections:
        dets = self.detector.detect(image, ts_ms)
        if self.max_faces and len(dets) > self.max_faces:
            keep = np.argsort(-dets.area, kind="stable")[: self.max_faces]
            dets = dets[np.sort(keep)]
        return dets

    def embed_faces(self, image: np.ndarray, dets: FaceDetections, timings: dict[str, float] | None = None
                    ) -> tuple[FaceCrops, Embeddings]:
        from .align import align_faces

        t0 = time.perf_counter()
        crops = align_faces(image, dets, self.embedder.spec)
        t1 = time.perf_counter()
        emb = self.embedder.embed(crops)
        t2 = time.perf_counter()
        if timings is not None:
            timings["align"] = (t1 - t0) * 1e3
            timings["embed"] = (t2 - t1) * 1e3
        return crops, emb

    def analyze(self, image: np.ndarray, ts_ms: float | None = None) -> FaceAnalysis:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        dets = self.detect(image, ts_ms)
        timings["detect"] = (time.perf_counter() - t0) * 1e3
        crops, emb = self.embed_faces(image, dets, timings)
        return FaceAnalysis(dets, crops, emb, timings)

    def close(self) -> None:
        for part in (self.detector, self.embedder):
            try:
                part.close()
            except Exception:  # noqa: BLE001 - closing must not mask the real error
                log.debug("error while closing %s", part, exc_info=True)

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
