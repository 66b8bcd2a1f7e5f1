"""Engine -> Qt. :class:`EngineBridge` owns the live :class:`~lookalike_live.pipeline.Engine`:

* the engine is built (models loaded, gallery opened) on a worker thread; the GUI gets
  ``loaded(LoadedEngine)`` or ``loadFailed(exception)``;
* results are pulled: a QTimer on the GUI thread polls ``Engine.latest()`` (it never blocks) and
  emits ``resultReady(FrameResult)`` for each new one, so the display rate does not depend on
  the capture rate and the GUI thread never waits on capture, inference or Milvus;
* engine callbacks (gallery up/down, source status), which run on engine threads, are re-emitted
  as Qt signals (queued into the GUI thread);
* stopping and closing the engine (which join its threads) also run on worker threads;
* photos are matched on a worker thread (:class:`~lookalike_live.gui.session.PhotoMatcher`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PyQt6.QtCore import QObject, Qt, QTimer, pyqtSignal

from ..capture import SourceSpec, parse_source
from ..config import Settings
from ..types import FrameResult
from .session import LoadedEngine, PhotoMatcher, load_engine

log = logging.getLogger(__name__)

__all__ = ["EngineBridge"]


class EngineBridge(QObject):
    """The window's handle on the engine. All public methods are for the GUI thread and return at once."""

    loading = pyqtSignal()
    loaded = pyqtSignal(object)  # LoadedEngine
    loadFailed = pyqtSignal(object)  # the exception
    resultReady = pyqtSignal(object)  # FrameResult, each new one once, on the GUI thread
    runStarted = pyqtSignal(object)  # SourceSpec
    runEnded = pyqtSignal(str)  # "" when the source ended or was stopped, else the error
    searchStatus = pyqtSignal(bool, str)  # gallery search available, message
    sourceStatus = pyqtSignal(object)  # capture StatusEvent
    photoReady = pyqtSignal(object, str)  # FrameResult, photo name
    photoFailed = pyqtSignal(object, str)  # exception, photo name

    _loadDone = pyqtSignal(int, object, object)  # generation, LoadedEngine | None, exception | None
    _photoDone = pyqtSignal(int, object, object, str)  # generation, FrameResult | None, exception | None, name

    def __init__(self, settings: Settings, *, store: Path | None = None, top_k: int = 10, loop_files: bool = True,
                 poll_ms: int = 10, gallery_timeout: float = 5.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self.store = store
        self.top_k = int(top_k)
        self.loop_files = bool(loop_files)
        self.gallery_timeout = float(gallery_timeout)
        self._gen = 0
        self._loaded: LoadedEngine | None = None
        self._loading = False
        self._running = False
        self._source: SourceSpec | None = None
        self._pending_source: SourceSpec | None = None
        self._pending_photo: tuple[Any, str] | None = None
        self._last: FrameResult | None = None
        self._unsubs: list[Callable[[], None]] = []
        self._workers: list[threading.Thread] = []
        self._photo_matcher: PhotoMatcher | None = None
        self._photo_lock = threading.Lock()
        self._photo_busy = False
        self._loadDone.connect(self._on_load_done, Qt.ConnectionType.QueuedConnection)  # type: ignore[call-arg]
        self._photoDone.connect(self._on_photo_done, Qt.ConnectionType.QueuedConnection)  # type: ignore[call-arg]
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(int(poll_ms))
        self._timer.timeout.connect(self._poll)
        self._timer.start()

    # -- state -----------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def engine_info(self) -> LoadedEngine | None:
        return self._loaded

    @property
    def engine(self) -> Any:
        return self._loaded.engine if self._loaded is not None else None

    @property
    def is_loading(self) -> bool:
        return self._loading

    @property
    def is_running(self) -> bool:
        """A run was started and has not ended (or is about to start once the engine is loaded)."""
        return self._running or self._pending_source is not None

    @property
    def source(self) -> SourceSpec | None:
        return self._source

    @property
    def latest(self) -> FrameResult | None:
        return self._last

    def metrics(self) -> dict[str, Any] | None:
        eng = self.engine
        return eng.metrics.as_dict() if eng is not None else None

    # -- loading -----------------------------------------------------------------------------------
    def configure(self, settings: Settings, *, top_k: int | None = None, loop_files: bool | None = None) -> None:
        """New settings: the engine is rebuilt (in the background) when they change; a running source restarts."""
        top_k = self.top_k if top_k is None else int(top_k)
        if loop_files is not None:
            self.loop_files = bool(loop_files)
        if settings == self._settings and top_k == self.top_k:
            return
        source = self._source if self.is_running else None
        self._settings, self.top_k = settings, top_k
        self.unload()
        if source is not None:
            self.start(source)

    def load(self) -> None:
        """Build the engine on a worker thread (no-op when loaded or loading)."""
        if self._loaded is not None or self._loading:
            return
        self._gen += 1
        gen, settings = self._gen, self._settings
        self._loading = True
        self.loading.emit()

        def work() -> None:
            try:
                loaded = load_engine(settings, store=self.store, top_k=self.top_k,
                                     gallery_timeout=self.gallery_timeout)
            except BaseException as exc:  # noqa: BLE001 - handed to the GUI as a banner
                log.error("loading the engine failed: %s", exc)
                self._loadDone.emit(gen, None, exc)
                return
            self._loadDone.emit(gen, loaded, None)

        self._spawn(work, "gui-engine-load")

    def reload(self) -> None:
        """Close the engine and build it again (Retry after fixing the gallery or the model)."""
        source = self._source if self.is_running else None
        self.unload()
        if source is not None:
            self.start(source)
        else:
            self.load()

    def _on_load_done(self, gen: int, loaded: LoadedEngine | None, exc: BaseException | None) -> None:
        if gen != self._gen:  # superseded (unloaded or reconfigured meanwhile)
            if loaded is not None:
                self._spawn(loaded.close, "gui-engine-close")
            return
        self._loading = False
        if loaded is None:
            self._pending_source = None
            pending_photo, self._pending_photo = self._pending_photo, None
            self.loadFailed.emit(exc)
            if pending_photo is not None:
                self.photoFailed.emit(exc, pending_photo[1])
            return
        self._loaded = loaded
        eng = loaded.engine
        self._unsubs = [
            eng.subscribe_search(lambda ok, msg: self.searchStatus.emit(bool(ok), str(msg))),
            eng.subscribe_status(self.sourceStatus.emit),
        ]
        log.info("engine ready in %.2f s: model %s, backend %s, search %s", loaded.load_seconds, loaded.model,
                 loaded.backend, "on" if loaded.search else "off")
        self.loaded.emit(loaded)
        if self._pending_source is not None and not eng.running:
            spec, self._pending_source = self._pending_source, None
            self._start_now(spec)
        if self._pending_photo is not None:
            photo, self._pending_photo = self._pending_photo, None
            self.match_photo(*photo)

    def unload(self) -> None:
        """Stop the run and close the engine in the background; cancels a load in progress."""
        self._gen += 1
        self._loading = False
        self._running = False
        self._pending_source = None
        for unsub in self._unsubs:
            unsub()
        self._unsubs = []
        loaded, self._loaded = self._loaded, None
        matcher, self._photo_matcher = self._photo_matcher, None
        if loaded is not None:
            loaded.engine.request_stop()

            def close() -> None:
                with self._photo_lock:
                    if matcher is not None:
                        matcher.close()
                loaded.close()

            self._spawn(close, "gui-engine-close")

    # -- running -----------------------------------------------------------------------------------
    def start(self, source: str | int | SourceSpec) -> SourceSpec:
        """Play ``source`` (webcam index, file, rtsp/http URL). Raises SourceError for a source that
        cannot be parsed (missing file, malformed URL); anything later arrives as signals."""
        spec = parse_source(source)
        self._source = spec
        eng = self.engine
        if eng is None:
            self._pending_source = spec
            self.load()
        elif eng.running:  # still stopping the previous run: start when it has ended (see _poll)
            eng.request_stop()
            self._pending_source = spec
        else:
            self._start_now(spec)
        return spec

    def _start_now(self, spec: SourceSpec) -> None:
        kwargs: dict[str, Any] = {}
        if spec.kind == "file":
            kwargs["loop"] = self.loop_files
        elif spec.kind == "stream":
            kwargs["open_timeout"] = 8.0
        self.engine.start(spec, realtime=True, **kwargs)
        self._running = True
        self.runStarted.emit(spec)

    def pause(self, paused: bool) -> bool:
        """Pause or resume reading a video file (True when the source is a file and now paused);
        live sources keep streaming (the window freezes its display instead)."""
        eng = self.engine
        cap = getattr(eng, "capture", None) if eng is not None else None
        if cap is None:
            return False
        cap.pause(paused)
        return bool(cap.paused)

    def stop(self) -> None:
        """Stop the run; the engine's threads are joined on a worker thread."""
        self._pending_source = None
        eng = self.engine
        if eng is None or not eng.running:
            if self._running:
                self._running = False
                self.runEnded.emit("")
            return
        eng.request_stop()
        self._spawn(eng.stop, "gui-engine-stop")

    def _poll(self) -> None:
        eng = self.engine
        if eng is None:
            return
        res = eng.latest()
        if res is not None and res is not self._last:
            self._last = res
            self.resultReady.emit(res)
        if self._running and not eng.running:
            self._running = False
            message = ""
            try:
                eng.wait(0)
            except BaseException as exc:  # noqa: BLE001 - the run's error, shown as a banner
                message = str(exc) or type(exc).__name__
            self.runEnded.emit(message)
        if self._pending_source is not None and not eng.running:
            spec, self._pending_source = self._pending_source, None
            self._start_now(spec)

    # -- photos ------------------------------------------------------------------------------------
    def match_photo(self, image: np.ndarray | str | Path, name: str = "") -> None:
        """Match every face of a photo (path or BGR uint8 image) on a worker thread;
        ``photoReady(FrameResult, name)`` or ``photoFailed(exception, name)`` follows."""
        name = name or (Path(image).name if isinstance(image, (str, Path)) else "photo")
        if self._loaded is None:
            self._pending_photo = (image, name)
            self.load()
            return
        gen, loaded, top_k = self._gen, self._loaded, max(1, self.top_k)
        self._photo_busy = True

        def work() -> None:
            from ..imageio import read_image

            try:
                img = read_image(image) if isinstance(image, (str, Path)) else image
                with self._photo_lock:
                    if self._photo_matcher is None or self._photo_matcher.loaded is not loaded:
                        self._photo_matcher = PhotoMatcher(loaded, store=self.store)
                    result = self._photo_matcher.match(img, top_k=top_k, source_id=name)
            except BaseException as exc:  # noqa: BLE001 - handed to the GUI as a banner
                log.error("photo %s: %s", name, exc)
                self._photoDone.emit(gen, None, exc, name)
                return
            self._photoDone.emit(gen, result, None, name)

        self._spawn(work, "gui-photo")

    @property
    def photo_busy(self) -> bool:
        return self._photo_busy

    def _on_photo_done(self, gen: int, result: FrameResult | None, exc: BaseException | None, name: str) -> None:
        self._photo_busy = False
        if gen != self._gen:
            return
        if result is None:
            self.photoFailed.emit(exc, name)
        else:
            self.photoReady.emit(result, name)

    # -- threads -----------------------------------------------------------------------------------
    def _spawn(self, fn: Callable[[], Any], name: str) -> threading.Thread:
        self._workers = [t for t in self._workers if t.is_alive()]
        t = threading.Thread(target=fn, name=name, daemon=True)
        self._workers.append(t)
        t.start()
        return t

    def shutdown(self, timeout: float = 15.0) -> bool:
        """Stop polling, close the engine and wait (bounded) for the worker threads: for the
        window's close, after it is hidden. True when every worker finished."""
        self._timer.stop()
        self.unload()
        import time

        deadline = time.monotonic() + timeout
        for t in list(self._workers):
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._workers if t.is_alive()]
        if alive:
            log.warning("still running after %.0f s: %s", timeout, ", ".join(alive))
        return not alive
