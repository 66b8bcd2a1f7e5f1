"""The face gallery in Milvus.

The package has two sides. The write side, :class:`Gallery` (``store.py``: schema, upserts,
identity centroids, stats, sync reads for tools), and the read side for live video,
:class:`Matcher` (``matcher.py``: ``submit(source, vectors, k) -> Future``, a bounded queue per
source, fair dispatch), which searches the in-process snapshot (``local_index.py``,
``snapshot.py``) or Milvus through AsyncMilvusClient. ``common.py`` holds what both share.

Two collections per gallery (``collection`` defaults to ``faces``):

``<collection>``
    one row per gallery face. Primary key ``id`` = :func:`face_id` (a stable 63-bit hash of
    dataset, image path and face index, so re-running a build is idempotent); ``vector``
    (FLOAT_VECTOR, L2-normalised, COSINE metric; HNSW index on a Milvus server, FLAT on Milvus Lite
    when the local index serves searches, see ``Gallery.index_type``); ``identity``, ``name``, ``dataset``,
    ``image_path``, ``face_index``; ``bbox`` (ARRAY of 4 FLOAT: xyxy pixels in the source photo);
    ``quality`` (FLOAT in [0, 1]); ``thumbnail`` (base64 of a small JPEG of the face, "" when none).
    The model name and vector dimension are recorded in the collection properties
    (``lookalike.model``, ``lookalike.dim``); ``lookalike.generation`` changes on every write so a
    cached copy of the vectors can tell whether it is still current.
``<collection>_identities``
    one row per identity: the mean of its faces' L2-normalised vectors, re-normalised, with
    ``identity``, ``name``, ``count`` and its representative face (``face_id``, ``dataset``,
    ``image_path`` of the face nearest the centroid); rebuilt by :meth:`Gallery.rebuild_centroids`.

Thumbnails are base64 in a VARCHAR because Milvus 2.3 (the server this project tests against) has
no binary scalar type; a 96x96 JPEG at quality 80 is 2-4 KB (3-5.5 KB as base64). They live in the
faces collection so a remote gallery is self-contained (the live overlay can show the matched photo
without access to the dataset), and they are never in search output unless asked for.

Speed on the embedded default (Milvus Lite 3.2): every Lite search walks all rows in Python (a
primary-key dedup map over every segment plus a per-row validity mask) before its FAISS HNSW call,
so a search over 202,599 faces costs ~90 ms even when fully indexed (the HNSW part is ~2 ms), holds
the GIL, and ~0.7-1.8 s right after an insert, while rows still sit in the memtable (brute force) and
Lite builds its segment indexes in a background thread. :class:`LocalIndex` is therefore an
in-process copy of the vectors (Milvus stays the source of truth): an IVF whose coarse centroids
are the identity centroids, exact re-ranking inside the probed lists, ~2 ms per batch of 8 queries
at 202,599 x 512. It is on by default for Milvus Lite URIs and persisted next to the Lite file, keyed
by the collection's generation, so it loads in about a second instead of being pulled again. It
also holds every identity's representative thumbnail, so a live answer needs no Milvus call.
"""


from .common import (
    CENTROIDS_RECHECK_S,
    HNSW_EF,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    THUMBNAIL_MAX_BYTES,
    CropMismatchError,
    FaceRecord,
    GalleryMatch,
    ModelMismatchError,
    ThumbnailError,
    default_uri,
    encode_thumbnail,
    face_id,
    identity_id,
    is_lite_uri,
)
from .local_index import LocalIndex, identity_centroids, mean_directions
from .matcher import Matcher
from .store import Gallery

__all__ = [
    "CENTROIDS_RECHECK_S",
    "HNSW_EF",
    "HNSW_EF_CONSTRUCTION",
    "HNSW_M",
    "THUMBNAIL_MAX_BYTES",
    "FaceRecord",
    "Gallery",
    "GalleryMatch",
    "LocalIndex",
    "Matcher",
    "CropMismatchError",
    "ModelMismatchError",
    "ThumbnailError",
    "default_uri",
    "encode_thumbnail",
    "face_id",
    "identity_centroids",
    "identity_id",
    "is_lite_uri",
    "mean_directions",
]
