"""detect -> align -> embed on one image: :class:`FaceAnalyzer` (one embedding batch per image),
the one path every command takes from pixels to vectors (the live :class:`~lookalike_live.pipeline.Engine`,
photo mode, the index build, the evaluation)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .closing import close_all
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

    def __init__(self, detector, embedder, max_faces: int | None = None) -> None:
        self.detector = detector
        self.embedder = embedder
        self.max_faces = max_faces

    @classmethod
    def from_settings(cls, settings: Settings, store: Path | None = None, running_mode: Literal["image", "video"] = "image") -> FaceAnalyzer:
        from .detect import FaceDetector
        from .embed import create_embedder

        detector = FaceDetector(
            settings.detector, store=store, min_score=settings.min_face_score,
            running_mode=running_mode, small_faces=settings.small_faces,
        )
        embedder = create_embedder(settings.model, backend=settings.backend, store=store, flip_tta=settings.flip_tta)
        return cls(detector, embedder, max_faces=settings.max_faces)

    @property
    def spec(self):
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

    def embed_faces(self, image: np.ndarray, dets: FaceDetections, timings: dict[str, float] | None = None, *,
                    quality: np.ndarray | None = None) -> tuple[FaceCrops, Embeddings]:
        """Align ``dets`` the way the embedder was trained and embed them in one batch: the one
        align -> embed path (photos, index builds, the live engine). ``quality``: precomputed per
        face. Engines that share an embedder share it through a
        :class:`~lookalike_live.embed.shared.SharedEmbedder` (batched, one model call at a time)."""
        from .align import align_faces

        t0 = time.perf_counter()
        crops = align_faces(image, dets, self.embedder.spec, quality=quality)
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
        close_all((self.detector, self.embedder))

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
