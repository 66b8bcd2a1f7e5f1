"""Face tracking, query scheduling and per-track identity voting (pure Python + numpy).

Recognise per track, not per frame: the :class:`Tracker` follows faces across frames and decides
which of them need a gallery query, so the embedder and Milvus see a few faces per second instead
of every face of every frame.

One frame, as the engine drives it::

    plan = tracker.assign(detections, ts_ms, frame_index, quality)   # IoU association
    # embed the faces in plan.query_rows (one batch), then:
    plan = tracker.reidentify(plan, rows, vectors)                     # embedding re-association
    qid = tracker.queried(track_id, ...)                               # per submitted query
    ...
    tracker.answer(qid, matches, ts_ms) / tracker.failed(qid, ts_ms, unavailable=True)
    tracks = tracker.finish_frame(ts_ms)                               # ends old tracks, snapshot
    events = tracker.drain_events()                                    # started/decided/changed/ended

Association: detections are matched to live tracks greedily by IoU against each track's predicted
box (last box moved by a damped velocity, in pixels per millisecond, for the time since it was
seen); a detection left over opens a new track. Both gates scale with the interval between
analysed frames (a camera analysed at 5 fps moves 6 times further between frames than at 30): the
prediction runs at most ``max_predict_frames`` intervals ahead, and the IoU gate is
``iou_threshold`` at ``reference_interval_ms`` or shorter and falls in proportion to the interval
beyond it, down to ``iou_floor``. When a new
track's face is embedded, it is compared with tracks that lost their face recently: if the cosine
similarity to one of them is at least ``reid_similarity`` the detection continues that track (its
id survives an occlusion or a jump the IoU step missed).

Scheduling: a visible track needs a query when it is new, when its last query is older than the
re-check period (``recheck_ms`` or ``recheck_frames``), when a crop of clearly better quality
(``quality_gain`` above the best one queried) is available, or (while undecided) ``retry_ms`` after
a failure. Faces smaller than ``min_face_px`` are never queried; each track has at most one query
in flight and at most ``max_attempts`` answered queries (failures do not count, so a track recovers
once the gallery is back).

Voting: every answer adds ``quality * max(score, 0)`` of its top-1 hit to that identity's vote. The
identity with the largest vote wins; its score is the quality-weighted mean of its top-1 scores.
Open set: below ``threshold`` the track is ``UNKNOWN`` (the overlay says "a bit like", or "unknown" in open set),
otherwise ``DECIDED``. ``top_k`` > 0 also keeps, per track, the K best identities seen (max score).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError, ShapeError
from .types import FaceDetections, Match, Track, TrackState

log = logging.getLogger(__name__)

__all__ = [
    "TrackerConfig",
    "TrackEvent",
    "Assignment",
    "Tracker",
    "iou_matrix",
    "greedy_match",
]

#: event kinds, in the order they can happen to one track
EVENT_KINDS = ("track_started", "identity_decided", "identity_changed", "track_ended")


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker settings. Times are in the source's milliseconds (``Frame.ts_ms``)."""

    iou_threshold: float = 0.3  # min IoU between a detection and a track's predicted box ...
    reference_interval_ms: float = 1000.0 / 30  # ... at this interval between analysed frames or less
    iou_floor: float = 0.1  # the gate at long intervals (it falls in proportion to the interval)
    max_predict_frames: float = 5.0  # predict a track's box at most this many intervals ahead
    max_unseen_ms: float = 1000.0  # a track ends after this long without its face ...
    min_unseen_frames: int = 3  # ... and at least this many frames without it
    reid_similarity: float = 0.6  # cosine: a new face continuing a recently lost track
    min_face_px: float = 32.0  # faces whose longer box side is smaller are never queried
    min_score: float = 0.0  # detections below this score are tracked but never queried
    recheck_ms: float | None = 1000.0  # re-query a track this long after its last query
    recheck_frames: int | None = None  # ... or this many frames after it
    quality_gain: float = 0.15  # re-query when a crop is this much better than the best queried
    min_query_gap_ms: float = 100.0  # never query one track more often (except always_query)
    retry_ms: float = 300.0  # re-query this long after a failed query
    max_attempts: int = 8  # answered queries per track
    threshold: float = 0.35  # open-set: cosine similarity for a decision
    top_k: int = 0  # identities kept per track (0: none)
    velocity_smoothing: float = 0.5  # EMA factor of the box velocity (0: no motion model)
    embedding_smoothing: float = 0.7  # EMA factor of a track's appearance vector
    always_query: bool = False  # "tracking off": query every visible face on every frame

    def __post_init__(self) -> None:
        checks = {
            "iou_threshold": 0.0 <= self.iou_threshold <= 1.0,
            "reference_interval_ms": self.reference_interval_ms > 0,
            "iou_floor": 0.0 <= self.iou_floor <= 1.0,
            "max_predict_frames": self.max_predict_frames >= 0,
            "max_unseen_ms": self.max_unseen_ms >= 0,
            "min_unseen_frames": self.min_unseen_frames >= 1,
            "reid_similarity": -1.0 <= self.reid_similarity <= 1.0,
            "min_face_px": self.min_face_px >= 0,
            "recheck_ms": self.recheck_ms is None or self.recheck_ms > 0,
            "recheck_frames": self.recheck_frames is None or self.recheck_frames >= 1,
            "quality_gain": self.quality_gain >= 0,
            "retry_ms": self.retry_ms >= 0,
            "max_attempts": self.max_attempts >= 1,
            "threshold": -1.0 <= self.threshold <= 1.0,
            "top_k": self.top_k >= 0,
            "velocity_smoothing": 0.0 <= self.velocity_smoothing <= 1.0,
            "embedding_smoothing": 0.0 <= self.embedding_smoothing < 1.0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid tracker settings {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")

    def replace(self, **changes: Any) -> TrackerConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrackEvent:
    """Something that happened to a track: ``kind`` is one of EVENT_KINDS.

    ``track`` is the track's snapshot at that moment; ``previous`` the match it had before
    (``identity_changed``); ``ts_ms``/``frame_index`` of the frame being processed.
    """

    kind: str
    track: Track
    ts_ms: float
    frame_index: int
    previous: Match | None = None
    first_seen_ms: float = 0.0


@dataclass
class Assignment:
    """The tracker's answer for one frame: ``track_ids[i]`` follows detection row i;
    ``query_rows`` are the rows whose faces should be embedded and searched now."""

    track_ids: np.ndarray  # (N,) int64
    query_rows: np.ndarray  # (Q,) int64, ascending
    new_rows: np.ndarray  # (M,) rows that opened a new track this frame
    relook_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # ^ the query rows whose track is decided already (a re-check or a better crop): they can wait

    def without_relooks(self) -> Assignment:
        """This plan with only the first looks queried (the re-looks stay due: asked again next frame)."""
        if not len(self.relook_rows):
            return self
        keep = self.query_rows[~np.isin(self.query_rows, self.relook_rows)]
        return Assignment(self.track_ids, keep, self.new_rows)


@dataclass
class _Answer:
    identity: str
    match: Match  # top-1 hit
    quality: float


@dataclass
class _Query:
    track_id: int
    quality: float
    ts_ms: float
    frame_index: int


@dataclass
class _TrackState:
    track_id: int
    xyxy: np.ndarray  # (4,) float64
    first_ms: float
    first_frame: int
    last_ms: float
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # px per ms
    frames_seen: int = 1
    quality: float = 0.0  # of the last detection
    size: float = 0.0
    det_score: float = 0.0
    announced: bool = False
    embedding: np.ndarray | None = None
    attempts: int = 0  # answered queries
    failures: int = 0
    in_flight: int | None = None  # query id
    last_query_ms: float = -math.inf
    last_query_frame: int = -(10**9)
    best_queried_quality: float = -1.0
    last_failure_ms: float = -math.inf
    unavailable: bool = False
    answers: list[_Answer] = field(default_factory=list)
    votes: dict[str, float] = field(default_factory=dict)
    best_hits: dict[str, Match] = field(default_factory=dict)  # per identity, highest score
    decision: Match | None = None  # the shown match (score: weighted mean)
    state: TrackState = TrackState.TENTATIVE
    decided_ms: float | None = None


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N,4) xyxy with every box of ``b`` (M,4): (N,M) float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def greedy_match(score: np.ndarray, minimum: float) -> list[tuple[int, int]]:
    """Pairs (row, col) of a (N,M) score matrix, best first, each row and column used once,
    only pairs with score >= ``minimum`` (ties: lower row, then lower column first)."""
    if score.size == 0:
        return []
    rows, cols = np.nonzero(score >= minimum)
    if not len(rows):
        return []
    order = np.lexsort((cols, rows, -score[rows, cols]))
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


class Tracker:
    """Follows faces across the frames of one source; see the module docstring.

    Not thread-safe: one owner thread calls every method (the engine's inference thread).
    """

    def __init__(self, config: TrackerConfig | None = None, first_id: int = 1) -> None:
        self.config = config or TrackerConfig()
        self._next_id = int(first_id)
        self._next_query = 1
        self._tracks: dict[int, _TrackState] = {}
        self._queries: dict[int, _Query] = {}
        self._events: list[TrackEvent] = []
        self._visible: set[int] = set()
        self._frame_index = -1
        self._ts_ms = 0.0
        self._interval_ms: float | None = None  # smoothed interval between analysed frames
        self.counters = {"tracks": 0, "queries": 0, "answers": 0, "failures": 0, "decided": 0,
                         "reidentified": 0, "skipped_small": 0}
        self.decision_latencies_ms: list[float] = []  # first seen -> first decision (source time)

    # -- association ----------------------------------------------------------------------
    def assign(self, detections: FaceDetections, ts_ms: float, frame_index: int,
               quality: np.ndarray | None = None) -> Assignment:
        """Match this frame's detections to tracks (IoU), open tracks for the rest and pick the
        rows that need a query. ``quality`` (N,) in [0,1] (None: all 1)."""
        n = len(detections)
        q = np.ones(n, np.float32) if quality is None else np.asarray(quality, np.float32).reshape(-1)
        if len(q) != n:
            raise ShapeError(f"Tracker.assign: quality must have shape ({n},), got {tuple(q.shape)}")
        if self._frame_index >= 0 and ts_ms > self._ts_ms:
            gap = float(ts_ms) - self._ts_ms
            self._interval_ms = gap if self._interval_ms is None else 0.8 * self._interval_ms + 0.2 * gap
        self._frame_index = int(frame_index)
        self._ts_ms = float(ts_ms)
        live = list(self._tracks.values())
        predicted = np.array([self._predict(t, ts_ms) for t in live]).reshape(-1, 4)
        ious = iou_matrix(detections.xyxy, predicted)
        track_ids = np.full(n, -1, np.int64)
        for r, c in greedy_match(ious, max(self.iou_gate, 1e-9)):
            track_ids[r] = live[c].track_id
        new_rows = []
        for r in range(n):
            if track_ids[r] < 0:
                tid = self._new_track(detections.xyxy[r], ts_ms, frame_index)
                track_ids[r] = tid
                new_rows.append(r)
        self._visible = set()
        for r in range(n):
            self._update_track(self._tracks[int(track_ids[r])], detections, r, float(q[r]), ts_ms, frame_index)
        query, relook = [], []
        for r in range(n):
            t = self._tracks[int(track_ids[r])]
            if self._needs_query(t, ts_ms, frame_index):
                query.append(r)
                if t.decision is not None and not t.unavailable:  # decided: a re-check
                    relook.append(r)
        return Assignment(track_ids, np.asarray(query, np.int64), np.asarray(new_rows, np.int64),
                          np.asarray(relook, np.int64))

    @property
    def interval_ms(self) -> float:
        """The smoothed interval between analysed frames (the reference interval before two frames)."""
        return self._interval_ms if self._interval_ms is not None else self.config.reference_interval_ms

    @property
    def iou_gate(self) -> float:
        """The IoU a detection needs with a track's predicted box at the current interval."""
        cfg = self.config
        scale = min(1.0, cfg.reference_interval_ms / self.interval_ms)
        return max(min(cfg.iou_floor, cfg.iou_threshold), cfg.iou_threshold * scale)

    def _predict(self, t: _TrackState, ts_ms: float) -> np.ndarray:
        dt = max(0.0, float(ts_ms) - t.last_ms)
        return t.xyxy + t.velocity * min(dt, self.config.max_predict_frames * self.interval_ms)

    def _new_track(self, xyxy: np.ndarray, ts_ms: float, frame_index: int) -> int:
        tid = self._next_id
        self._next_id += 1
        self._tracks[tid] = _TrackState(tid, np.asarray(xyxy, np.float64).copy(), ts_ms, frame_index, ts_ms, frame_index,
                                        frames_seen=0)
        self.counters["tracks"] += 1
        return tid

    def _update_track(self, t: _TrackState, dets: FaceDetections, r: int, quality: float, ts_ms: float,
                      frame_index: int) -> None:
        box = dets.xyxy[r].astype(np.float64)
        if t.frames_seen > 0 and ts_ms > t.last_ms:
            v = (box - t.xyxy) / (ts_ms - t.last_ms)
            a = self.config.velocity_smoothing
            t.velocity = a * v + (1 - a) * t.velocity
        t.xyxy = box
        t.last_ms = ts_ms
        t.last_frame = frame_index
        t.frames_seen += 1
        t.quality = quality
        t.size = float(max(box[2] - box[0], box[3] - box[1]))
        t.det_score = float(dets.score[r])
        self._visible.add(t.track_id)

    def _needs_query(self, t: _TrackState, ts_ms: float, frame_index: int) -> bool:
        cfg = self.config
        if cfg.always_query:
            return True
        if t.size < cfg.min_face_px or t.det_score < cfg.min_score:
            self.counters["skipped_small"] += 1
            return False
        if t.in_flight is not None or t.attempts >= cfg.max_attempts:
            return False
        since = ts_ms - t.last_query_ms
        if t.attempts == 0 and t.failures == 0:
            return True  # a new face
        if since < cfg.min_query_gap_ms:
            return False
        if t.unavailable or t.decision is None:
            return since >= cfg.retry_ms
        if cfg.recheck_ms is not None and since >= cfg.recheck_ms:
            return True
        if cfg.recheck_frames is not None and frame_index - t.last_query_frame >= cfg.recheck_frames:
            return True
        return t.quality >= t.best_queried_quality + cfg.quality_gain

    def reidentify(self, plan: Assignment, rows: Sequence[int] | np.ndarray, vectors: np.ndarray) -> Assignment:
        """Attach the embeddings of ``rows`` (their (Q,D) L2-normalised ``vectors``) to their
        tracks; a row that opened a new track this frame continues a recently lost track instead
        when its face is similar enough (cosine >= ``reid_similarity``). Returns the plan with
        updated ``track_ids``."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        vecs = np.asarray(vectors, np.float32).reshape(len(rows), -1) if len(rows) else np.zeros((0, 0), np.float32)
        new = set(plan.new_rows.tolist())
        lost = [t for t in self._tracks.values() if t.track_id not in self._visible and t.embedding is not None]
        for i, r in enumerate(rows.tolist()):
            tid = int(plan.track_ids[r])
            v = vecs[i]
            if r in new and lost:
                sims = np.array([float(np.dot(t.embedding, v)) for t in lost])  # type: ignore[arg-type]
                j = int(np.argmax(sims))
                if sims[j] >= self.config.reid_similarity:
                    old = lost.pop(j)
                    young = self._tracks.pop(tid)
                    self.counters["tracks"] -= 1
                    self._merge(old, young)
                    plan.track_ids[r] = old.track_id
                    self._visible.discard(tid)
                    self._visible.add(old.track_id)
                    self.counters["reidentified"] += 1
                    log.debug("track %d continues lost track %d (cosine %.3f)", tid, old.track_id, sims[j])
                    tid = old.track_id
            t = self._tracks[tid]
            if t.embedding is None:
                t.embedding = v.astype(np.float32).copy()
            else:
                a = self.config.embedding_smoothing
                e = a * t.embedding + (1 - a) * v
                t.embedding = (e / max(float(np.linalg.norm(e)), 1e-12)).astype(np.float32)
        return plan

    def _merge(self, old: _TrackState, young: _TrackState) -> None:
        dt = max(young.last_ms - old.last_ms, 1e-3)
        old.velocity = (young.xyxy - old.xyxy) / dt * self.config.velocity_smoothing
        old.xyxy = young.xyxy
        old.last_ms, old.last_frame = young.last_ms, young.last_frame
        old.frames_seen += young.frames_seen
        old.quality, old.size, old.det_score = young.quality, young.size, young.det_score

    # -- queries ----------------------------------------------------------------------------
    def queried(self, track_id: int, quality: float | None = None, ts_ms: float | None = None,
                frame_index: int | None = None) -> int:
        """Record that a query for ``track_id`` was submitted; returns the query id to pass to
        :meth:`answer` / :meth:`failed`."""
        t = self._tracks[int(track_id)]
        qid = self._next_query
        self._next_query += 1
        ts = self._ts_ms if ts_ms is None else float(ts_ms)
        fi = self._frame_index if frame_index is None else int(frame_index)
        qual = t.quality if quality is None else float(quality)
        self._queries[qid] = _Query(t.track_id, qual, ts, fi)
        t.in_flight = qid
        t.last_query_ms = ts
        t.last_query_frame = fi
        t.best_queried_quality = max(t.best_queried_quality, qual)
        self.counters["queries"] += 1
        return qid

    def _take_query(self, qid: int) -> tuple[_Query, _TrackState | None]:
        q = self._queries.pop(int(qid))
        t = self._tracks.get(q.track_id)
        if t is not None and t.in_flight == qid:
            t.in_flight = None
        return q, t

    def answer(self, query_id: int, matches: Sequence[Match], ts_ms: float | None = None) -> None:
        """Apply a search answer (best first) to its track: vote, decide, emit events."""
        if int(query_id) not in self._queries:
            return
        q, t = self._take_query(query_id)
        self.counters["answers"] += 1
        if t is None:
            return  # the track ended meanwhile
        ts = self._ts_ms if ts_ms is None else float(ts_ms)
        t.attempts += 1
        t.unavailable = False
        if matches:
            top = matches[0]
            weight = max(q.quality, 1e-3) * max(float(top.score), 0.0)
            t.answers.append(_Answer(top.identity, top, max(q.quality, 1e-3)))
            t.votes[top.identity] = t.votes.get(top.identity, 0.0) + weight
            for m in matches:
                prev = t.best_hits.get(m.identity)
                if prev is None or m.score > prev.score:
                    t.best_hits[m.identity] = m
        self._decide(t, ts)

    def failed(self, query_id: int, ts_ms: float | None = None, *, unavailable: bool = True) -> None:
        """A query failed (``unavailable``: the gallery cannot be reached) or was dropped
        (``unavailable=False``): the track is re-queried after ``retry_ms``."""
        if int(query_id) not in self._queries:
            return
        _, t = self._take_query(query_id)
        if t is None:
            return
        t.last_failure_ms = self._ts_ms if ts_ms is None else float(ts_ms)
        if unavailable:
            self.counters["failures"] += 1
            t.failures += 1
            t.unavailable = True
            t.state = TrackState.SEARCH_UNAVAILABLE

    def _decide(self, t: _TrackState, ts_ms: float) -> None:
        if not t.votes:
            if t.state is TrackState.SEARCH_UNAVAILABLE:
                t.state = TrackState.TENTATIVE if t.decision is None else self._decided_state(t.decision)
            return
        winner = max(sorted(t.votes), key=lambda k: t.votes[k])
        num = sum(a.quality * float(a.match.score) for a in t.answers if a.identity == winner)
        den = sum(a.quality for a in t.answers if a.identity == winner)
        score = num / den if den > 0 else float(t.best_hits[winner].score)
        shown = dataclasses.replace(t.best_hits[winner], score=float(score))
        previous = t.decision
        t.decision = shown
        t.state = self._decided_state(shown)
        first = previous is None
        if first:
            t.decided_ms = ts_ms
            self.counters["decided"] += 1
            self.decision_latencies_ms.append(ts_ms - t.first_ms)
            if t.announced:
                self._emit("identity_decided", t, ts_ms)
        elif t.announced and previous is not None:
            before = self._decided_state(previous)
            # a change that matters: the shown identity (while either answer is a match) or match <-> no match
            if before is not t.state or (previous.identity != shown.identity and TrackState.DECIDED in (before, t.state)):
                self._emit("identity_changed", t, ts_ms, previous=previous)

    def _decided_state(self, m: Match) -> TrackState:
        return TrackState.DECIDED if m.score >= self.config.threshold else TrackState.UNKNOWN

    # -- frame end ------------------------------------------------------------------------------
    def finish_frame(self, ts_ms: float | None = None) -> tuple[Track, ...]:
        """End tracks unseen for too long, announce new ones; returns the snapshot of every
        visible track (sorted by id) plus lost-but-not-ended ones (state ``LOST``)."""
        cfg = self.config
        ts = self._ts_ms if ts_ms is None else float(ts_ms)
        for tid in sorted(self._tracks):
            t = self._tracks[tid]
            if tid in self._visible and not t.announced:
                t.announced = True
                self._emit("track_started", t, ts)
                if t.decision is not None:  # decided before its first frame ended
                    self._emit("identity_decided", t, ts)
        ended = [t for t in self._tracks.values() if t.track_id not in self._visible
                 and ts - t.last_ms > cfg.max_unseen_ms and self._frame_index - t.last_frame >= cfg.min_unseen_frames]
        for t in ended:
            del self._tracks[t.track_id]
            if t.announced:
                self._emit("track_ended", t, ts)
        return self.snapshot()

    def end_all(self, ts_ms: float | None = None) -> None:
        """End every track (the source finished): emits ``track_ended`` for each."""
        ts = self._ts_ms if ts_ms is None else float(ts_ms)
        for tid in sorted(self._tracks):
            t = self._tracks.pop(tid)
            if t.announced:
                self._emit("track_ended", t, ts)
        self._visible = set()

    def snapshot(self) -> tuple[Track, ...]:
        return tuple(self._snap(self._tracks[tid]) for tid in sorted(self._tracks))

    def _snap(self, t: _TrackState) -> Track:
        state = t.state if t.track_id in self._visible else TrackState.LOST
        top: tuple[Match, ...] = ()
        if self.config.top_k and t.best_hits:
            top = tuple(sorted(t.best_hits.values(), key=lambda m: (-m.score, m.identity))[: self.config.top_k])
        votes = {k: round(v, 6) for k, v in sorted(t.votes.items(), key=lambda kv: -kv[1])}
        x1, y1, x2, y2 = (float(v) for v in t.xyxy)
        return Track(t.track_id, (x1, y1, x2, y2), t.decision, votes, state, top)

    def _emit(self, kind: str, t: _TrackState, ts_ms: float, previous: Match | None = None) -> None:
        self._events.append(TrackEvent(kind, self._snap(t), ts_ms, self._frame_index, previous, t.first_ms))

    def drain_events(self) -> list[TrackEvent]:
        """Events since the last call, oldest first."""
        out, self._events = self._events, []
        return out

    # -- introspection ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._tracks)

    @property
    def pending_queries(self) -> int:
        return len(self._queries)

    def track(self, track_id: int) -> Track | None:
        t = self._tracks.get(int(track_id))
        return None if t is None else self._snap(t)

    def first_seen_ms(self, track_id: int) -> float | None:
        t = self._tracks.get(int(track_id))
        return None if t is None else t.first_ms
