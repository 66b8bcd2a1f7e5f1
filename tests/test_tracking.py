"""Tracker unit tests: association, query scheduling, voting, open set, re-identification (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike_live.errors import ConfigError, ShapeError
from lookalike_live.tracking import Tracker, TrackerConfig, greedy_match, iou_matrix
from lookalike_live.types import FaceDetections, Match, TrackState

FRAME_MS = 1000.0 / 30


def dets(*boxes: tuple[float, float, float, float], score: float = 0.9) -> FaceDetections:
    n = len(boxes)
    xyxy = np.asarray(boxes, np.float32).reshape(n, 4)
    return FaceDetections(xyxy, np.full(n, score, np.float32), np.zeros((n, 6, 2), np.float32))


def box(x: float, y: float, s: float = 60.0) -> tuple[float, float, float, float]:
    return (x, y, x + s, y + s)


def step(tr: Tracker, i: int, *boxes, quality=None):  # type: ignore[no-untyped-def]
    plan = tr.assign(dets(*boxes), i * FRAME_MS, i, None if quality is None else np.asarray(quality, np.float32))
    return plan


def m(identity: str, score: float) -> Match:
    return Match(identity, f"Name {identity}", score, f"{identity}.jpg")


def test_iou_and_greedy_match() -> None:
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110]], np.float32)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(1.0) and iou[0, 1] == pytest.approx(50 / 150) and iou[1].max() == 0
    assert greedy_match(iou, 0.3) == [(0, 0)]
    assert greedy_match(np.array([[0.5, 0.9], [0.8, 0.1]]), 0.3) == [(0, 1), (1, 0)]
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_ids_are_stable_while_faces_move_and_new_faces_get_new_ids() -> None:
    tr = Tracker()
    ids = []
    for i in range(30):  # two faces drifting right, 4 px per frame
        plan = step(tr, i, box(10 + 4 * i, 10), box(300 - 3 * i, 100))
        ids.append(tuple(plan.track_ids.tolist()))
        tr.finish_frame()
    assert len(set(ids)) == 1 and len(set(ids[0])) == 2
    plan = step(tr, 30, box(130, 10), box(210, 100), box(500, 250))  # a third face appears
    assert plan.track_ids[:2].tolist() == list(ids[0]) and plan.track_ids[2] not in ids[0]
    assert plan.new_rows.tolist() == [2]
    tr.finish_frame()
    kinds = [e.kind for e in tr.drain_events()]
    assert kinds == ["track_started"] * 3


def test_fast_motion_is_followed_by_the_velocity_model() -> None:
    tr = Tracker()
    first = None
    xs = [10, 30] + [30 + 40 * k for k in range(1, 12)]  # speeding up to 40 px per frame: IoU of
    for i, x in enumerate(xs):  # a box with the previous one 0.2, below iou_threshold 0.3
        plan = step(tr, i, box(x, 50))
        first = first if first is not None else int(plan.track_ids[0])
        assert int(plan.track_ids[0]) == first, f"frame {i}"
        tr.finish_frame()


def test_tracks_end_after_being_unseen_and_lost_ones_are_marked() -> None:
    cfg = TrackerConfig(max_unseen_ms=500, min_unseen_frames=3)
    tr = Tracker(cfg)
    step(tr, 0, box(10, 10))
    tr.finish_frame()
    tid = tr.snapshot()[0].track_id
    for i in range(1, 15):  # 14 empty frames = 467 ms
        step(tr, i)
        tracks = tr.finish_frame()
        assert [t.state for t in tracks] == [TrackState.LOST]
    step(tr, 17)
    assert tr.finish_frame() == ()
    ev = tr.drain_events()
    assert [e.kind for e in ev] == ["track_started", "track_ended"] and ev[1].track.track_id == tid


def test_a_face_back_within_the_lifetime_keeps_its_id() -> None:
    tr = Tracker(TrackerConfig(max_unseen_ms=1000))
    a = int(step(tr, 0, box(10, 10)).track_ids[0])
    tr.finish_frame()
    for i in range(1, 10):
        step(tr, i)
        tr.finish_frame()
    assert int(step(tr, 10, box(12, 11)).track_ids[0]) == a


def test_query_schedule_new_in_flight_recheck_quality_and_cap() -> None:
    cfg = TrackerConfig(recheck_ms=1000, quality_gain=0.2, max_attempts=3, min_query_gap_ms=100)
    tr = Tracker(cfg)
    plan = step(tr, 0, box(10, 10), quality=[0.3])
    assert plan.query_rows.tolist() == [0]  # a new face
    tid = int(plan.track_ids[0])
    q = tr.queried(tid)
    assert step(tr, 1, box(10, 10), quality=[0.3]).query_rows.tolist() == []  # in flight
    tr.answer(q, [m("a", 0.6)])
    assert step(tr, 2, box(10, 10), quality=[0.3]).query_rows.tolist() == []  # answered, nothing new
    assert step(tr, 3, box(10, 10), quality=[0.45]).query_rows.tolist() == []  # +0.15 < quality_gain
    assert step(tr, 4, box(10, 10), quality=[0.6]).query_rows.tolist() == [0]  # clearly better crop
    tr.answer(tr.queried(tid), [m("a", 0.6)])
    assert step(tr, 20, box(10, 10), quality=[0.3]).query_rows.tolist() == []
    assert step(tr, 34, box(10, 10), quality=[0.3]).query_rows.tolist() == [0]  # 1 s since the last query
    tr.answer(tr.queried(tid), [m("a", 0.6)])
    for i in (70, 200, 400):  # max_attempts answered queries: never again
        assert step(tr, i, box(10, 10), quality=[1.0]).query_rows.tolist() == []


def test_relooks_are_the_decided_tracks_queries_and_stay_due_when_put_off() -> None:
    """A re-check of a decided track is a re-look (the engine may put it off while the shared
    model is busy); a new face and a retry after a failure are first looks. A re-look put off
    (never marked queried) is asked for again on the next frame."""
    tr = Tracker(TrackerConfig(recheck_ms=1000, min_query_gap_ms=100, retry_ms=300))
    plan = step(tr, 0, box(10, 10), box(300, 10))
    assert plan.query_rows.tolist() == [0, 1] and plan.relook_rows.tolist() == []  # two new faces
    a, b = (int(t) for t in plan.track_ids)
    tr.answer(tr.queried(a), [m("a", 0.6)])
    tr.failed(tr.queried(b))  # b: no answer yet (gallery down)
    plan = step(tr, 34, box(10, 10), box(300, 10))  # 1.1 s later: a's re-check, b's retry
    assert plan.query_rows.tolist() == [0, 1] and plan.relook_rows.tolist() == [0]
    first = plan.without_relooks()
    assert first.query_rows.tolist() == [1] and first.track_ids.tolist() == plan.track_ids.tolist()
    tr.queried(b)
    again = step(tr, 35, box(10, 10), box(300, 10))  # a was not queried: still due, b is in flight
    assert again.query_rows.tolist() == [0] and again.relook_rows.tolist() == [0]


def test_recheck_every_n_frames() -> None:
    tr = Tracker(TrackerConfig(recheck_ms=None, recheck_frames=5, min_query_gap_ms=0))
    tid = int(step(tr, 0, box(10, 10)).track_ids[0])
    tr.answer(tr.queried(tid), [m("a", 0.6)])
    due = [i for i in range(1, 12) if step(tr, i, box(10, 10)).query_rows.size and
           tr.answer(tr.queried(tid), [m("a", 0.6)]) is None]
    assert due == [5, 10]


def test_tiny_and_low_score_faces_are_never_queried() -> None:
    tr = Tracker(TrackerConfig(min_face_px=32, min_score=0.6))
    plan = tr.assign(dets(box(10, 10, 20), box(200, 10, 80)), 0.0, 0)
    assert plan.query_rows.tolist() == [1]
    plan = tr.assign(dets(box(10, 10, 60), score=0.5), FRAME_MS * 50, 50)
    assert plan.query_rows.tolist() == []
    tr.finish_frame()
    assert all(t.best is None for t in tr.snapshot())


def test_vote_weighted_by_score_and_quality_and_open_set() -> None:
    tr = Tracker(TrackerConfig(threshold=0.4, top_k=3))
    tid = int(step(tr, 0, box(10, 10)).track_ids[0])
    tr.finish_frame()
    tr.drain_events()
    tr.answer(tr.queried(tid, quality=0.9), [m("a", 0.55), m("b", 0.5)], ts_ms=40)
    t = tr.track(tid)
    assert t is not None and t.state is TrackState.DECIDED and t.best.identity == "a"
    assert t.votes["a"] == pytest.approx(0.9 * 0.55)
    ev = tr.drain_events()
    assert [e.kind for e in ev] == ["identity_decided"] and ev[0].ts_ms - ev[0].first_seen_ms == 40
    # two low-quality answers for b do not outvote one good answer for a ...
    tr.answer(tr.queried(tid, quality=0.2), [m("b", 0.6)])
    tr.answer(tr.queried(tid, quality=0.2), [m("b", 0.6)])
    t = tr.track(tid)
    assert t.best.identity == "a" and t.votes["b"] == pytest.approx(0.24)
    assert [x.identity for x in t.top_k] == ["b", "a"]  # top-K by best score seen
    # ... two good ones do, and the change is an event with the previous match
    tr.answer(tr.queried(tid, quality=0.9), [m("b", 0.6)])
    tr.answer(tr.queried(tid, quality=0.9), [m("b", 0.6)])
    t = tr.track(tid)
    assert t.best.identity == "b" and t.best.score == pytest.approx(0.6)
    ev = tr.drain_events()
    assert [e.kind for e in ev] == ["identity_changed"] and ev[0].previous.identity == "a"


def test_below_threshold_is_no_close_lookalike_with_the_best_score() -> None:
    tr = Tracker(TrackerConfig(threshold=0.5))
    tid = int(step(tr, 0, box(10, 10)).track_ids[0])
    tr.finish_frame()
    tr.answer(tr.queried(tid, quality=1.0), [m("x", 0.31), m("y", 0.2)])
    t = tr.track(tid)
    assert t.state is TrackState.UNKNOWN and t.best.identity == "x" and t.best.score == pytest.approx(0.31)
    assert [e.kind for e in tr.drain_events()] == ["track_started", "identity_decided"]
    assert tr.decision_latencies_ms == [0.0]


def test_weighted_mean_score_of_the_winner() -> None:
    tr = Tracker()
    tid = int(step(tr, 0, box(10, 10)).track_ids[0])
    tr.answer(tr.queried(tid, quality=1.0), [m("a", 0.8)])
    tr.answer(tr.queried(tid, quality=0.5), [m("a", 0.5)])
    assert tr.track(tid).best.score == pytest.approx((0.8 + 0.25) / 1.5)


def test_search_unavailable_then_recovers_without_using_attempts() -> None:
    tr = Tracker(TrackerConfig(retry_ms=300, max_attempts=1))
    tid = int(step(tr, 0, box(10, 10)).track_ids[0])
    tr.failed(tr.queried(tid), unavailable=True)
    assert tr.track(tid).state is TrackState.SEARCH_UNAVAILABLE
    assert step(tr, 5, box(10, 10)).query_rows.tolist() == []  # 167 ms < retry_ms
    assert step(tr, 10, box(10, 10)).query_rows.tolist() == [0]
    tr.answer(tr.queried(tid), [m("a", 0.7)])
    assert tr.track(tid).state is TrackState.DECIDED
    # a decided track whose re-check fails shows the outage but keeps its match
    tr2 = Tracker(TrackerConfig(recheck_ms=100))
    t2 = int(step(tr2, 0, box(10, 10)).track_ids[0])
    tr2.answer(tr2.queried(t2), [m("a", 0.7)])
    assert step(tr2, 4, box(10, 10)).query_rows.tolist() == [0]
    tr2.failed(tr2.queried(t2))
    snap = tr2.track(t2)
    assert snap.state is TrackState.SEARCH_UNAVAILABLE and snap.best.identity == "a"
    tr2.answer(tr2.queried(t2, ts_ms=1000), [m("a", 0.7)])
    assert tr2.track(t2).state is TrackState.DECIDED


def test_dropped_query_is_retried_and_late_answers_for_ended_tracks_are_ignored() -> None:
    tr = Tracker(TrackerConfig(retry_ms=0, max_unseen_ms=0, min_unseen_frames=1))
    tid = int(step(tr, 0, box(10, 10)).track_ids[0])
    tr.finish_frame()
    tr.failed(tr.queried(tid), unavailable=False)
    assert tr.track(tid).state is TrackState.TENTATIVE
    assert step(tr, 4, box(10, 10)).query_rows.tolist() == [0]
    tr.finish_frame()
    q = tr.queried(tid)
    step(tr, 5)
    tr.finish_frame()
    assert tr.track(tid) is None
    tr.answer(q, [m("a", 0.9)])  # the track ended meanwhile: no error, no event
    assert [e.kind for e in tr.drain_events()] == ["track_started", "track_ended"]
    assert tr.pending_queries == 0


def test_reidentification_by_embedding_keeps_the_id_after_a_jump() -> None:
    tr = Tracker(TrackerConfig(reid_similarity=0.8))
    rng = np.random.default_rng(0)
    va, vb = rng.standard_normal((2, 16)).astype(np.float32)
    va /= np.linalg.norm(va)
    vb /= np.linalg.norm(vb)
    plan = step(tr, 0, box(10, 10))
    tr.reidentify(plan, plan.query_rows, va[None])
    tid = int(plan.track_ids[0])
    tr.finish_frame()
    step(tr, 1)
    tr.finish_frame()
    plan = step(tr, 2, box(400, 200))  # far away: IoU 0, a new track at first ...
    assert plan.new_rows.tolist() == [0] and int(plan.track_ids[0]) != tid
    plan = tr.reidentify(plan, plan.query_rows, (va + 0.05 * vb)[None] / np.linalg.norm(va + 0.05 * vb))
    assert int(plan.track_ids[0]) == tid  # ... until its face says who it is
    tracks = tr.finish_frame()
    assert [t.track_id for t in tracks] == [tid] and tracks[0].xyxy[0] == 400
    plan = step(tr, 3, box(10, 300))  # a different face far away stays a new track
    tr.reidentify(plan, plan.query_rows, vb[None])
    assert int(plan.track_ids[0]) != tid
    assert [e.kind for e in tr.drain_events()] == ["track_started"]
    tr.finish_frame()
    assert tr.counters["reidentified"] == 1 and tr.counters["tracks"] == 2


def test_always_query_mode_queries_every_face_every_frame() -> None:
    tr = Tracker(TrackerConfig(always_query=True))
    for i in range(4):
        plan = step(tr, i, box(10, 10), box(200, 10, 10))
        assert plan.query_rows.tolist() == [0, 1]
        for r in plan.query_rows:
            tr.queried(int(plan.track_ids[r]))
        tr.finish_frame()


def test_bad_config_and_inputs_are_rejected() -> None:
    with pytest.raises(ConfigError, match="iou_threshold"):
        TrackerConfig(iou_threshold=2)
    with pytest.raises(ConfigError, match="max_attempts"):
        TrackerConfig(max_attempts=0)
    with pytest.raises(ShapeError, match="quality"):
        Tracker().assign(dets(box(0, 0)), 0.0, 0, np.ones(3, np.float32))
