"""The gallery's identity centroids (the identities collection) and their gallery-centred twins
(the centred collection): whether they are there and current, searching them, and remaking them
from the faces collection. A part of :class:`~lookalike_live.gallery.store.Gallery`, kept apart
for size."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from .. import faults
from ..types import Match
from .centroids import centroid_rows
from .common import (
    IDENTITY_OUTPUT,
    PROP_CENTROIDS_OF,
    PROP_MEAN,
    attach_thumbnails,
    centroid_hits,
    decode_vector,
    encode_vector,
)
from .local_index import centre_vectors

log = logging.getLogger("lookalike_live.gallery")

#: rows a centroid pass reads from Milvus at a time: pymilvus holds ~50 KB a row of 512-d vectors
#: as Python objects (a 20,000-row gallery peaked 210 MB above the build at 4,096, 57 MB at 1,000)
CENTROID_BATCH = 1000


class IdentityCentroids:
    """The centroid methods of Gallery (which provides the attributes declared here)."""

    _client: Any
    collection: str
    identities_collection: str
    centred_collection: str
    ef: int
    _centroids_ok: tuple[str, bool] | None
    _warned_no_centroids: bool
    _centred_mean: tuple[str, np.ndarray | None] | None
    _warned_no_centred: bool

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
        if info is None or not info.get("generation"):
            return False
        for name in (self.identities_collection, self.centred_collection):
            state, props = self._identities(name)
            if state != "current" or props.get(PROP_CENTROIDS_OF) != info["generation"]:
                return False
        return True

    def centred_mean(self, refresh: bool = False) -> np.ndarray | None:
        """The gallery mean the centred collection's centroids were centred on (queries are centred
        on it too), or None when that collection is absent or empty (a build of an older version, or
        one killed before it made them): then centred matching searches the plain identity
        centroids, with one warning. Remembered per faces-collection generation unless ``refresh``."""
        gen = str(self.info().get("generation", ""))
        if self._centred_mean is not None and self._centred_mean[0] == gen and not refresh:
            return self._centred_mean[1]
        state, props = self._identities(self.centred_collection)
        mean = None
        if state == "current" and props.get(PROP_MEAN) and self._count(self.centred_collection) > 0:
            try:
                mean = decode_vector(str(props[PROP_MEAN]), int(self.info()["dim"]))
            except ValueError as exc:
                log.warning("%s on %s: unreadable %s property (%s)", self.centred_collection, self.shown_uri,
                            PROP_MEAN, exc)
        self._centred_mean = (gen, mean)
        if mean is None and not self._warned_no_centred:
            self._warned_no_centred = True
            log.warning("%s on %s has no gallery-centred centroids (a build of an older version, or one that was "
                        "interrupted): matching plain identity centroids; `lookalike-live index build` again "
                        "(it resumes) adds them", self.collection, self.shown_uri)
        return mean

    def _identities(self, name: str | None = None) -> tuple[str, dict[str, Any]]:
        """The identities (or ``name``: the centred) collection's state, "absent", "old" (no
        representative faces: an older version made it) or "current", and its properties."""
        name = name or self.identities_collection
        if not self._call("has_collection", self._client.has_collection, name):
            return "absent", {}
        desc = self._call("describe_collection", self._client.describe_collection, name)
        fields = {f["name"] for f in desc.get("fields", [])}
        return ("current" if "face_id" in fields else "old"), dict(desc.get("properties") or {})

    def _search_centroids(self, q: np.ndarray, k: int, with_thumbnails: bool) -> list[list[Match]] | None:
        """Identity-centroid hits, or None while there are no centroids (see :meth:`centroids_ready`)."""
        return self._search_identities(self.identities_collection, q, k, with_thumbnails) if self.centroids_ready() else None

    def _search_centred(self, q: np.ndarray, k: int, with_thumbnails: bool) -> list[list[Match]] | None:
        """Gallery-centred centroid hits (the query centred on the stored mean), or None without
        them (see :meth:`centred_mean`)."""
        mean = self.centred_mean()
        return None if mean is None else self._search_identities(self.centred_collection, centre_vectors(q, mean), k,
                                                                 with_thumbnails)

    def _search_identities(self, name: str, q: np.ndarray, k: int, with_thumbnails: bool) -> list[list[Match]]:
        res = self._read("search", name, self._client.search, data=q, limit=k, output_fields=IDENTITY_OUTPUT,
                         search_params={"metric_type": "COSINE", "params": {"ef": max(self.ef, k)}},
                         consistency_level="Session")
        out = centroid_hits(res)
        if with_thumbnails:
            out = attach_thumbnails(out, self.thumbnails({m.face_id for ms in out for m in ms if m.face_id is not None}))
        return out

    def rebuild_centroids(self, batch_size: int = 4096) -> int:
        """Recompute the identities and centred collections from the faces collection: per
        identity the mean of its faces' normalised vectors (re-normalised), its face count and its
        representative face (the one nearest the centroid); and the same centroid made of its faces'
        vectors minus the gallery's mean vector (match_by "centred"), that mean kept as the centred
        collection's property. Returns the number of identities."""
        info = self.info()
        dim = int(info["dim"])
        t0 = time.perf_counter()
        local = self.local_index()
        if local is not None and local.generation == info["generation"]:
            rows, mean = local.identity_rows(), local.centred_table()[0]
            local.pin_representatives(self.thumbnails)  # the live overlay shows these photos
        else:
            rows, mean = centroid_rows(self.iterate, dim, min(batch_size, CENTROID_BATCH))
        centred = []
        for r in rows:  # the same rows with the centred vectors; the plain rows without them
            vector = r.pop("centred")
            centred.append({**r, "vector": vector})
        self._write_centroids(self.centred_collection, centred, info)
        # the mean the centred centroids were made with, then (last) the generation they were made from
        self._call("alter_collection_properties", self._client.alter_collection_properties,
                   self.centred_collection, properties={PROP_MEAN: encode_vector(mean),
                                                        PROP_CENTROIDS_OF: str(info["generation"])})
        self._centred_mean, self._warned_no_centred = None, False
        stale = self._write_centroids(self.identities_collection, rows, info)
        faults.point("centroids:written")
        # last: the centroids are marked as made from this generation of the faces
        self._call("alter_collection_properties", self._client.alter_collection_properties,
                   self.identities_collection, properties={PROP_CENTROIDS_OF: str(info["generation"])})
        self._warned_no_centroids = False
        self._centroids_ok = None
        log.info("identity centroids, plain and gallery-centred: %d identities (%d removed) in %.1f s",
                 len(rows), stale, time.perf_counter() - t0)
        return len(rows)

    def _write_centroids(self, name: str, rows: list[dict[str, Any]], info: dict[str, Any]) -> int:
        """Make collection ``name`` hold exactly ``rows`` (created if absent, recreated if an older
        version made it); returns how many rows it dropped."""
        state, _ = self._identities(name)
        if state == "old":  # made by an older version: derived data, so recreate it
            self._call("drop_collection", self._client.drop_collection, name)
        if state != "current":
            self._create(name, int(info["dim"]), str(info["model"]), identities=True)
        for s in range(0, len(rows), 1000):
            self._call("upsert", self._client.upsert, name, rows[s : s + 1000])
        keep = {r["id"] for r in rows}
        stale = [int(r["id"]) for b in self.iterate(["id"], 10000, name) for r in b if int(r["id"]) not in keep]
        for s in range(0, len(stale), 1000):
            self._call("delete", self._client.delete, name, ids=stale[s : s + 1000])
        return len(stale)
