"""The live engine: capture -> detect -> track -> align/embed (only the faces that need it) ->
async search -> tracks -> FrameResult to subscribers and to the latest-result slot. No Qt."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .analyzer import FaceAnalyzer
from .capture.slot import LatestSlot
from .closing import close_all
from .config import Settings
from .errors import ConfigError, GalleryUnavailableError, LookalikeError, OutputError
from .metrics import Metrics
from .tracking import Tracker, TrackerConfig, TrackEvent
from .types import Frame, FrameResult

log = logging.getLogger(__name__)

ResultCallback = Callable[[FrameResult], None]
EventCallback = Callable[[TrackEvent, FrameResult], None]
SearchStatusCallback = Callable[[bool, str], None]

#: how often an engine waiting for a frame checks for finished searches (s)
IDLE_POLL_S = 0.02

_MAKE_SOURCE_KEYS = ("loop", "open_timeout", "read_timeout", "rtsp_transport", "ffmpeg_options",
                     "webcam_size", "webcam_fps")


@dataclass(frozen=True)
class EngineConfig:
    """How the :class:`Engine` runs.

    ``tracking=False`` queries every visible face on every frame (a baseline for benchmarks).
    ``wait_for_search``: before each frame, wait for the searches submitted on the previous one
    (deterministic offline runs: every answer lands one frame after its query); None = wait in
    file (non-realtime) runs, never for live sources. ``search_timeout`` bounds that wait (s).
    ``top_k``: identities kept per track (and searched per query; at least 1).
    ``detect_fps``: frames analysed per second (None: every frame); the others are grabbed
    without colour conversion and counted as skipped (``CaptureThread.sample_fps``).
    """

    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    tracking: bool = True
    top_k: int = 0
    with_thumbnails: bool = True
    wait_for_search: bool | None = None
    search_timeout: float = 5.0
    read_timeout: float = 0.25
    detect_fps: float | None = None

    def __post_init__(self) -> None:
        if self.detect_fps is not None and not (math.isfinite(self.detect_fps) and self.detect_fps > 0):
            raise ConfigError(f"detect_fps must be a number of frames per second > 0, got {self.detect_fps!r}")

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> EngineConfig:
        tracker = TrackerConfig(threshold=settings.threshold)
        return cls(tracker=tracker, **changes)


class _Outstanding:
    __slots__ = ("future", "query_ids", "submitted")

    def __init__(self, future: concurrent.futures.Future, query_ids: list[int], submitted: float) -> None:
        self.future = future
        self.query_ids = query_ids
        self.submitted = submitted


class Engine:
    """Runs one source live: an inference thread takes the latest frame from a
    :class:`~lookalike_live.capture.CaptureThread`, detects every face, lets the
    :class:`~lookalike_live.tracking.Tracker` pick the faces that need a query, embeds only those
    (one batch), submits them to the gallery's :class:`~lookalike_live.gallery.Matcher` and
    applies answers as they arrive, on later frames: video never waits for Milvus (except in
    deterministic offline runs, see :class:`EngineConfig`).

    Every processed frame becomes a :class:`~lookalike_live.types.FrameResult` (image BGR uint8)
    that goes to :meth:`subscribe` callbacks (on the inference thread: keep them short) and to
    the latest-result slot (:meth:`latest`, :meth:`wait_result`: what a GUI timer polls). Track
    events (:class:`~lookalike_live.tracking.TrackEvent`) go to :meth:`subscribe_events`,
    gallery up/down changes to :meth:`subscribe_search`, source status to :meth:`subscribe_status`.

    Gallery down: queries fail fast, tracks show ``SEARCH_UNAVAILABLE`` and are re-queried
    every ``TrackerConfig.retry_ms``; matching resumes by itself when Milvus answers again.

    Usage::

        engine = Engine.from_settings(settings)               # loads models, opens the gallery
        engine.subscribe(lambda result: ...)
        engine.start("rtsp://cam/stream")                      # background thread
        result = engine.latest()
        engine.stop(); engine.close()

        summary = engine.run("clip.mp4")                       # blocking, every frame, deterministic
    """

    def __init__(self, analyzer: FaceAnalyzer, matcher: Any | None = None, config: EngineConfig | None = None,
                 *, source_id: str = "", owned: Iterable[Any] = ()) -> None:
        self.analyzer = analyzer
        self.matcher = matcher
        self.config = config or EngineConfig()
        self.source_id = source_id
        self.metrics = Metrics(source_id)
        self._owned = list(owned)
        self._lock = threading.Lock()
        self._results: LatestSlot[FrameResult] = LatestSlot()
        self._result_subs: list[ResultCallback] = []
        self._event_subs: list[EventCallback] = []
        self._search_subs: list[SearchStatusCallback] = []
        self._status_subs: list[Callable[[Any], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._capture: Any = None
        self._summary: dict[str, Any] = {}
        self._error: BaseException | None = None
        self._output_error: OutputError | None = None
        self._outputs: set[int] = set()  # id() of the output subscribers
        self._closed = False
        self._reset()

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings, *, store: Path | None = None, gallery: Any | None = None,
                      matcher: Any | None = None, config: EngineConfig | None = None, source_id: str = "",
                      search: bool = True) -> Engine:
        """A single engine and the :class:`~lookalike_live.runtime.Runtime` behind it (closed
        with it): the settings' detector and embedder (loaded now) and, when ``search``, the
        gallery at ``settings.milvus_uri`` (opened now; its model is checked against the
        embedder's) unless ``gallery`` / ``matcher`` are given (then the caller owns them).
        Raises ModelNotInstalledError (naming the install command), GalleryError /
        GalleryUnavailableError (naming the fix) or ConfigError."""
        from .runtime import Runtime

        runtime = Runtime(settings, store=store, search=search, gallery=gallery, matcher=matcher)
        try:
            engine = runtime.engine(source_id, config or EngineConfig.from_settings(settings))
        except BaseException:
            runtime.close()
            raise
        engine._owned.append(runtime)
        return engine

    def _reset(self) -> None:
        tcfg = self.config.tracker
        if not self.config.tracking:
            tcfg = tcfg.replace(always_query=True)
        if self.config.top_k and not tcfg.top_k:
            tcfg = tcfg.replace(top_k=self.config.top_k)
        self.tracker = Tracker(tcfg)
        self.metrics = Metrics(self.source_id)  # per run
        self.metrics.detect_fps = self.metrics.analysis_fps = self.config.detect_fps
        self._outstanding: deque[_Outstanding] = deque()
        self._first_seen_wall: dict[int, float] = {}
        self._decision_wall_ms: list[float] = []
        self._decision_video_ms: list[float] = []
        self._faces = 0
        self._frames = 0
        self._search_ok = True
        self._last_result: FrameResult | None = None
        self._sync = False
        self._t_start = time.monotonic()
        self._t_end: float | None = None

    # -- subscriptions ---------------------------------------------------------------------------
    def _add(self, subs: list[Any], cb: Any, output: bool) -> Callable[[], None]:
        with self._lock:
            subs.append(cb)
            if output:
                self._outputs.add(id(cb))

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                subs.remove(cb)
                self._outputs.discard(id(cb))

        return unsubscribe

    # ``output=True``: the callback writes an output of the run (a video, an events file): when it
    # fails, the run stops with its error (see _call)
    def subscribe(self, callback: ResultCallback, output: bool = True) -> Callable[[], None]:
        """Call ``callback(FrameResult)`` for every processed frame; returns an unsubscribe function."""
        return self._add(self._result_subs, callback, output)

    def subscribe_events(self, callback: EventCallback, output: bool = True) -> Callable[[], None]:
        """Call ``callback(TrackEvent, FrameResult)`` for every track event (started, identity
        decided/changed, ended), with the result of the frame it happened on."""
        return self._add(self._event_subs, callback, output)

    def subscribe_search(self, callback: SearchStatusCallback, output: bool = False) -> Callable[[], None]:
        """Call ``callback(available, message)`` when the gallery goes down or comes back."""
        return self._add(self._search_subs, callback, output)

    def subscribe_status(self, callback: Callable[[Any], None], output: bool = False) -> Callable[[], None]:
        """Call ``callback(StatusEvent)`` for the source's status changes (connecting, live, reconnecting...)."""
        return self._add(self._status_subs, callback, output)

    def _call(self, subs: list[Any], *args: Any) -> None:
        """Run the subscribers. An output subscriber that fails (a video writer, an events file:
        ``output=True``) stops the run: :meth:`run` raises its error as OutputError, once, instead
        of it being logged on every frame while the run "succeeds". Others only report: their
        failures are logged."""
        with self._lock:
            callbacks = [(cb, id(cb) in self._outputs) for cb in subs]
        for cb, critical in callbacks:
            try:
                cb(*args)
            except Exception as exc:
                if not critical:
                    log.exception("%s: subscriber %r failed", self.source_id, cb)
                    continue
                if self._output_error is None:
                    why = str(exc) if isinstance(exc, LookalikeError) else f"{type(exc).__name__}: {exc}"
                    self._output_error = OutputError(f"an output of the run failed, so it stopped: {why}")
                    self._output_error.__cause__ = exc
                    log.debug("%s: subscriber %r failed", self.source_id, cb, exc_info=True)
                self._stop.set()

    # -- latest-result slot ------------------------------------------------------------------------
    def latest(self) -> FrameResult | None:
        """The newest FrameResult (None before the first frame); never blocks."""
        return self._results.latest()

    def wait_result(self, after_index: int = -1, timeout: float | None = None) -> FrameResult | None:
        """Wait until a result for a frame index > ``after_index`` exists; None on timeout."""
        return self._results.wait_latest(lambda r: r.frame.index > after_index, timeout)

    @property
    def capture(self) -> Any:
        """The CaptureThread of the current run (None before the first run)."""
        return self._capture

    # -- one frame -----------------------------------------------------------------------------------
    def process(self, frame: Frame, decoded_at: float | None = None) -> FrameResult:
        """Process one frame (BGR uint8) on the caller's thread: apply finished searches, detect,
        track, embed and submit the faces that need a query; publish and return the result."""
        t0 = time.perf_counter()
        mono0 = time.monotonic()
        timings: dict[str, float] = {}
        if frame.decode_ms is not None:
            self.metrics.record("decode", frame.decode_ms)
        image = frame.image
        self._resolve(wait=self._sync, ts_ms=frame.ts_ms)
        td = time.perf_counter()
        dets = self.analyzer.detect(image, frame.ts_ms)
        timings["detect"] = (time.perf_counter() - td) * 1e3
        quality = None
        if len(dets):
            from .align import face_quality

            quality = face_quality(image, dets)
        plan = self.tracker.assign(dets, frame.ts_ms, frame.index, quality)
        if len(plan.relook_rows) and getattr(self.analyzer.embedder, "busy", False):
            # the shared embedder is busy with other cameras' faces: first looks go first, a
            # decided track's re-check waits for a frame that finds the model idle
            self.metrics.incr("relooks_deferred", len(plan.relook_rows))
            plan = plan.without_relooks()
        rows = plan.query_rows
        if len(rows):
            crops, emb = self.analyzer.embed_faces(image, dets[rows], timings,
                                                   quality=None if quality is None else quality[rows])
            self.metrics.record("align", timings["align"])
            self.metrics.record("embed", timings["embed"])
            self.metrics.incr("embeddings", len(rows))
            plan = self.tracker.reidentify(plan, rows, emb.vectors)
            if self.matcher is not None:
                qids = [self.tracker.queried(int(plan.track_ids[r]), float(crops.quality[i]), frame.ts_ms, frame.index)
                        for i, r in enumerate(rows.tolist())]
                self._submit(emb.vectors, qids)
        tracks = self.tracker.finish_frame(frame.ts_ms)
        events = self.tracker.drain_events()
        self._faces += len(dets)
        self._frames += 1
        self.metrics.record("detect", timings["detect"])
        self.metrics.incr("faces", len(dets))
        timings["frame"] = (time.perf_counter() - t0) * 1e3
        base = decoded_at if decoded_at is not None else self._decoded_at(frame, mono0)
        timings["latency"] = (time.monotonic() - base) * 1e3
        result = FrameResult(frame, dets, tracks, timings)
        self._publish(result, events, base)
        return result

    def _submit(self, vectors: np.ndarray, qids: list[int]) -> None:
        k = max(1, self.config.top_k, self.tracker.config.top_k)
        submitted = time.monotonic()
        fut = self.matcher.submit(self.source_id, vectors, k,  # type: ignore[union-attr]
                                  thumbnails=self.config.with_thumbnails)
        self.metrics.incr("queries", len(qids))

        def done(f: concurrent.futures.Future) -> None:
            if not f.cancelled() and f.exception() is None:
                self.metrics.record("search", (time.monotonic() - submitted) * 1e3)

        fut.add_done_callback(done)
        self._outstanding.append(_Outstanding(fut, qids, submitted))

    def _resolve(self, wait: bool, ts_ms: float | None = None) -> None:
        """Apply finished searches to the tracker (all outstanding ones when ``wait``)."""
        if not self._outstanding:
            return
        if wait:
            concurrent.futures.wait([o.future for o in self._outstanding], timeout=self.config.search_timeout)
        keep: deque[_Outstanding] = deque()
        while self._outstanding:
            o = self._outstanding.popleft()
            if not o.future.done():
                keep.append(o)
                continue
            self._apply(o, ts_ms)
        self._outstanding = keep

    def _apply(self, o: _Outstanding, ts_ms: float | None) -> None:
        fut = o.future
        if fut.cancelled():
            self.metrics.incr("search_dropped", len(o.query_ids))
            for q in o.query_ids:
                self.tracker.failed(q, ts_ms, unavailable=False)
            return
        exc = fut.exception()
        if exc is not None:
            self.metrics.incr("search_failures", len(o.query_ids))
            for q in o.query_ids:
                self.tracker.failed(q, ts_ms, unavailable=True)
            self._search_state(False, str(exc), unavailable=isinstance(exc, GalleryUnavailableError))
            return
        answers = fut.result()
        self.metrics.incr("answers", len(o.query_ids))
        for q, matches in zip(o.query_ids, answers, strict=False):
            self.tracker.answer(q, matches, ts_ms)
        self._search_state(True, "")

    def _search_state(self, ok: bool, message: str, unavailable: bool = True) -> None:
        if ok == self._search_ok:
            return
        self._search_ok = ok
        self.metrics.search_available = ok
        if ok:
            log.info("%s: gallery search is available again", self.source_id)
        else:
            log.warning("%s: gallery search %s: %s", self.source_id,
                        "unavailable" if unavailable else "failed", message)
        self._call(self._search_subs, ok, message)

    def _decoded_at(self, frame: Frame, fallback: float) -> float:
        if frame.captured_at is not None:  # stamped by the capture thread
            return frame.captured_at
        cap = self._capture
        if cap is not None and getattr(cap.source, "live", False) and cap.started_at:
            # live sources stamp frames with the capture thread's clock (ms since start)
            wall = cap.started_at + frame.ts_ms / 1000.0
            return time.monotonic() - max(0.0, time.time() - wall)
        return fallback

    def _note(self, events: list[TrackEvent], now: float, decoded_at: float | None = None) -> None:
        """Decision latencies: face first decoded -> its identity decided (wall and source time)."""
        for ev in events:
            tid = ev.track.track_id
            if ev.kind == "track_started" and decoded_at is not None:
                self._first_seen_wall[tid] = decoded_at
            elif ev.kind == "identity_decided":
                first = self._first_seen_wall.get(tid)
                if first is not None:
                    self._decision_wall_ms.append((now - first) * 1e3)
                self._decision_video_ms.append(ev.ts_ms - ev.first_seen_ms)
            elif ev.kind == "track_ended":
                self._first_seen_wall.pop(tid, None)

    def _idle(self) -> None:
        """Between frames: apply the searches that finished and publish the decisions they make
        now (with the last frame's result), not when the next frame comes (200 ms at 5 fps)."""
        self._resolve(wait=False)
        if self._last_result is None:
            return
        events = self.tracker.drain_events()
        if events:
            self._note(events, time.monotonic())
            self.metrics.incr("events", len(events))
            for ev in events:
                self._call(self._event_subs, ev, self._last_result)

    def _publish(self, result: FrameResult, events: list[TrackEvent], decoded_at: float) -> None:
        now = time.monotonic()
        self._note(events, now, decoded_at)
        self.metrics.record("frame", result.timings.get("frame", 0.0))
        self.metrics.record("latency", result.timings.get("latency", 0.0))
        self.metrics.incr("events", len(events))
        self.metrics.frame_done(now)
        self._results.put(result)
        self._last_result = result
        self._call(self._result_subs, result)
        for ev in events:
            self._call(self._event_subs, ev, result)

    # -- running a source -------------------------------------------------------------------------
    def _open(self, source: Any, realtime: bool, capture_kwargs: dict[str, Any]) -> tuple[Any, bool]:
        from .capture import CaptureThread, FrameSource, make_source, open_source, parse_source

        if isinstance(source, CaptureThread):
            source.subscribe(self._on_status)
            if self.config.detect_fps is not None:
                source.sample_fps = self.config.detect_fps
            return source, False
        capture_kwargs.setdefault("sample_fps", self.config.detect_fps)
        src_kwargs = {k: capture_kwargs.pop(k) for k in _MAKE_SOURCE_KEYS if k in capture_kwargs}
        fsrc = source if isinstance(source, FrameSource) else make_source(parse_source(source), **src_kwargs)
        capture_kwargs.setdefault("source_id", self.source_id or None)
        cap = open_source(fsrc, realtime=realtime, on_status=self._on_status, **capture_kwargs)
        return cap, True

    def _on_status(self, event: Any) -> None:
        self.metrics.status = event.status.value
        if event.status.value == "reconnecting":
            self.metrics.incr("reconnects")
        self._call(self._status_subs, event)

    def run(self, source: Any, *, realtime: bool = False, max_frames: int | None = None,
            **capture_kwargs: Any) -> dict[str, Any]:
        """Process ``source`` (file path, URL, webcam index, FrameSource or a CaptureThread) on the
        caller's thread until it ends, ``max_frames`` frames were processed, or :meth:`stop`.

        ``realtime=False`` (files): every frame is processed, as fast as possible, and searches
        are awaited one frame later, so the run is deterministic. ``realtime=True``: files play
        at their frame rate; frames the engine is too slow for are dropped (counted).
        ``capture_kwargs`` go to :func:`~lookalike_live.capture.open_source` / ``make_source``
        (``loop``, ``rtsp_transport``, ``stall_timeout``, ``backoff``, ...). Returns :meth:`summary`.
        """
        if self._closed:
            raise ConfigError("this Engine is closed; create a new one")
        self._reset()
        self._stop.clear()
        wait = self.config.wait_for_search
        cap, owned = self._open(source, realtime, dict(capture_kwargs))
        self._capture = cap
        if not self.metrics.source_id:
            self.metrics.source_id = str(cap.source_id)
        self._sync = (not realtime and not getattr(cap.source, "live", True)) if wait is None else bool(wait)
        self._t_start = time.monotonic()
        self._output_error = None
        try:
            self._loop(cap, max_frames)
        finally:
            if owned:
                cap.stop()
            self._finish()
        if self._output_error is not None:
            raise self._output_error
        return self.summary()

    def _loop(self, cap: Any, max_frames: int | None) -> None:
        while not self._stop.is_set():
            # while searches are out, wake up often to apply their answers as they come
            frame = cap.read(timeout=IDLE_POLL_S if self._outstanding else self.config.read_timeout)
            if frame is None:
                if cap.status.final and not cap.slot.pending:
                    break
                if self._sync:  # deterministic runs apply answers at the next frame only
                    self._resolve(wait=False)
                else:
                    self._idle()
                continue
            try:
                self.process(frame)
            except LookalikeError as exc:  # a frame the stages refuse (e.g. a garbled image): skip it
                log.warning("%s: frame %d skipped: %s", self.source_id, frame.index, exc)
                self.metrics.incr("frames_refused")
            self._update_capture_counters(cap)
            if max_frames is not None and self._frames >= max_frames:
                break

    def _update_capture_counters(self, cap: Any) -> None:
        st = cap.stats()
        self.metrics.set_counter("policy_skips", st.skipped)  # not analysed by policy (detect_fps)
        self.metrics.set_counter("capture_drops", st.drops)
        self.metrics.set_counter("corrupt", st.corrupt)  # frames the capture could not decode

    def _finish(self) -> None:
        """Apply the searches still running (bounded wait), end every track, publish their events."""
        if self._outstanding:
            self._resolve(wait=True)
        ts = self._last_result.frame.ts_ms if self._last_result is not None else 0.0
        self.tracker.finish_frame(ts)
        self.tracker.end_all(ts)
        events = self.tracker.drain_events()
        if self._last_result is not None:
            for ev in events:
                if ev.kind == "identity_decided":
                    self._decision_video_ms.append(ev.ts_ms - ev.first_seen_ms)
                self._call(self._event_subs, ev, self._last_result)
        if self._capture is not None:
            self._update_capture_counters(self._capture)
        self._t_end = time.monotonic()

    def summary(self) -> dict[str, Any]:
        """Counts of the current/last run: frames, seconds, fps (frames per wall second), faces,
        tracks, decided_tracks, median_decision_latency_ms and p95_decision_latency_ms (wall: face
        decoded -> decision published), median_decision_latency_video_ms (source time), drops (frames dropped by the capture),
        search_dropped (queries dropped by the matcher), corrupt (frames that did not decode),
        frames_refused (decoded frames the stages refused), embeddings, queries, skipped
        (frames not analysed by policy: ``detect_fps``), detect_fps (the configured rate)."""
        end = self._t_end if self._t_end is not None else time.monotonic()
        seconds = max(end - self._t_start, 1e-9)
        c = self.tracker.counters

        def median(xs: list[float]) -> float | None:
            return round(statistics.median(xs), 2) if xs else None

        def p95(xs: list[float]) -> float | None:
            return round(float(np.percentile(xs, 95)), 2) if xs else None

        return {
            "frames": self._frames,
            "seconds": round(seconds, 3),
            "fps": round(self._frames / seconds, 2),
            "faces": self._faces,
            "tracks": c["tracks"],
            "decided_tracks": c["decided"],
            "median_decision_latency_ms": median(self._decision_wall_ms),
            "p95_decision_latency_ms": p95(self._decision_wall_ms),
            "median_decision_latency_video_ms": median(self._decision_video_ms),
            "drops": self.metrics.counter("capture_drops"),  # frames dropped (a newer one replaced them)
            "skipped": self.metrics.counter("policy_skips"),  # frames not analysed by policy (detect_fps)
            "detect_fps": self.config.detect_fps,
            "search_dropped": self.metrics.counter("search_dropped"),  # queries dropped (matcher queue full)
            "embeddings": self.metrics.counter("embeddings"),
            "embeddings_per_frame": round(self.metrics.counter("embeddings") / max(self._frames, 1), 3),
            "queries": self.metrics.counter("queries"),
            "relooks_deferred": self.metrics.counter("relooks_deferred"),  # re-checks put off (embedder busy)
            "search_failures": self.metrics.counter("search_failures"),
            "reconnects": self.metrics.counter("reconnects"),
            "corrupt": self.metrics.counter("corrupt"),  # frames the capture could not decode
            "frames_refused": self.metrics.counter("frames_refused"),  # decoded frames the stages refused
        }

    def start(self, source: Any, *, realtime: bool = True, **capture_kwargs: Any) -> Engine:
        """Run ``source`` on a background inference thread (see :meth:`run`); returns self."""
        if self._thread is not None and self._thread.is_alive():
            raise ConfigError("the engine is already running: stop() it first")
        self._error = None
        self._stop.clear()

        def target() -> None:
            try:
                self._summary = self.run(source, realtime=realtime, **capture_kwargs)
            except LookalikeError as exc:  # an expected failure, with its message: wait()/stop() raise it
                self._error = exc
                log.debug("%s: engine stopped: %s", self.source_id, exc, exc_info=True)
            except BaseException as exc:  # a bug: logged with its traceback, and raised by wait()/stop()
                self._error = exc
                log.exception("%s: engine failed", self.source_id)

        name = f"engine[{self.source_id or 'source'}]"
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()
        return self

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the background run (None while it runs or when it ended well);
        :meth:`wait` raises it."""
        return self._error

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background run to end (the source finished); False on timeout.
        Re-raises an error that stopped the run."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        return True

    def request_stop(self) -> None:
        """Ask the run to stop after the current frame, without waiting (see :meth:`stop`)."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """Stop the background run (the capture thread too, if the engine opened it); returns the summary."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: inference thread did not stop within %.1f s", self.source_id, timeout)
        return self.summary()

    def close(self, timeout: float = 10.0) -> None:
        """Stop and release what the engine created (matcher, gallery, models). Idempotent.
        Nothing is closed under a running inference thread: when it does not stop within
        ``timeout`` (stuck in a subscriber, a slow model call), the release waits for it on a
        background thread and happens as soon as it ends."""
        if self._closed:
            return
        self.stop(timeout)
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            def release_later() -> None:
                thread.join()
                self._release_owned()
                log.info("%s: released after its inference thread ended", self.source_id)

            threading.Thread(target=release_later, name=f"engine-close[{self.source_id}]", daemon=True).start()
            return
        self._release_owned()

    def _release_owned(self) -> None:
        close_all(self._owned)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
