"""The gallery's identity centroids (the identities collection): whether they are there and
current, searching them, and remaking them from the faces collection. A part of
:class:`~lookalike_live.gallery.store.Gallery`, kept apart for size."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from .. import faults
from ..types import Match
from .centroids import centroid_rows
from .common import IDENTITY_OUTPUT, PROP_CENTROIDS_OF, attach_thumbnails, centroid_hits

log = logging.getLogger("lookalike_live.gallery")

#: rows a centroid pass reads from Milvus at a time: pymilvus holds ~50 KB a row of 512-d vectors
#: as Python objects (a 20,000-row gallery peaked 210 MB above the build at 4,096, 57 MB at 1,000)
CENTROID_BATCH = 1000


class IdentityCentroids:
    """The centroid methods of Gallery (which provides the attributes declared here)."""

    _client: Any
    collection: str
    identities_collection: str
    ef: int
    _centroids_ok: tuple[str, bool] | None
    _warned_no_centroids: bool

    # provided by Gallery
    _call: Any
    _read: Any
    _count: Any
    _create: Any
    info: Any
    describe: Any
    iterate: Any
    local_index: Any
    thumbnails: Any
    shown_uri: Any

    def centroids_ready(self, refresh: bool = False) -> bool:
        """Whether the identities collection holds centroids with representative faces (an index
        build of this version made them); remembered per faces-collection generation unless
        ``refresh`` (another process may have built them). Warns once, and identity matching then
        searches single faces, when not."""
        gen = str(self.info().get("generation", ""))
        if self._centroids_ok is not None and self._centroids_ok[0] == gen and not refresh:
            return self._centroids_ok[1]
        ok = self._identities()[0] == "current" and self._count(self.identities_collection) > 0
        self._centroids_ok = (gen, ok)
        if not ok and not self._warned_no_centroids:
            self._warned_no_centroids = True
            log.warning("%s on %s has no identity centroids (an interrupted or older index build): matching "
                        "single faces; `lookalike-live index build` again (it resumes) adds them",
                        self.collection, self.shown_uri)
        return ok

    def centroids_current(self) -> bool:
        """Whether the identity centroids were made from the faces collection as it is now. Not
        after a build that was killed before (or while) it made them, or after faces were written
        since: ``index build`` then makes them again."""
        info = self.describe(refresh=True)
        state, props = self._identities()
        if info is None or state != "current":
            return False
        return bool(info.get("generation")) and props.get(PROP_CENTROIDS_OF) == info["generation"]

    def _identities(self) -> tuple[str, dict[str, Any]]:
        """The identities collection's state, "absent", "old" (no representative faces: an older
        version made it) or "current", and its properties."""
        if not self._call("has_collection", self._client.has_collection, self.identities_collection):
            return "absent", {}
        desc = self._call("describe_collection", self._client.describe_collection, self.identities_collection)
        fields = {f["name"] for f in desc.get("fields", [])}
        return ("current" if "face_id" in fields else "old"), dict(desc.get("properties") or {})

    def _search_centroids(self, q: np.ndarray, k: int, with_thumbnails: bool) -> list[list[Match]] | None:
        if not self.centroids_ready():
            return None
        res = self._read("search", self.identities_collection, self._client.search, data=q, limit=k,
                         output_fields=IDENTITY_OUTPUT,
                         search_params={"metric_type": "COSINE", "params": {"ef": max(self.ef, k)}},
                         consistency_level="Session")
        out = centroid_hits(res)
        if with_thumbnails:
            out = attach_thumbnails(out, self.thumbnails({m.face_id for ms in out for m in ms if m.face_id is not None}))
        return out

    def rebuild_centroids(self, batch_size: int = 4096) -> int:
        """Recompute the identities collection from the faces collection: per identity the mean of
        its faces' normalised vectors (re-normalised), its face count, and its representative face
        (the one nearest the centroid). Returns the number of identities."""
        info = self.info()
        dim = int(info["dim"])
        t0 = time.perf_counter()
        local = self.local_index()
        if local is not None and local.generation == info["generation"]:
            rows = local.identity_rows()
            local.pin_representatives(self.thumbnails)  # the live overlay shows these photos
        else:
            rows = centroid_rows(self.iterate, dim, min(batch_size, CENTROID_BATCH))
        state, _ = self._identities()
        if state == "old":  # made by an older version: derived data, so recreate it
            self._call("drop_collection", self._client.drop_collection, self.identities_collection)
        if state != "current":
            self._create(self.identities_collection, dim, str(info["model"]), identities=True)
        for s in range(0, len(rows), 1000):
            self._call("upsert", self._client.upsert, self.identities_collection, rows[s : s + 1000])
        faults.point("centroids:written")
        keep = {r["id"] for r in rows}
        stale = [int(r["id"]) for b in self.iterate(["id"], 10000, self.identities_collection)
                 for r in b if int(r["id"]) not in keep]
        for s in range(0, len(stale), 1000):
            self._call("delete", self._client.delete, self.identities_collection, ids=stale[s : s + 1000])
        # last: the centroids are marked as made from this generation of the faces
        self._call("alter_collection_properties", self._client.alter_collection_properties,
                   self.identities_collection, properties={PROP_CENTROIDS_OF: str(info["generation"])})
        self._warned_no_centroids = False
        self._centroids_ok = None
        log.info("identity centroids: %d identities (%d removed) in %.1f s", len(rows), len(stale),
                 time.perf_counter() - t0)
        return len(rows)
