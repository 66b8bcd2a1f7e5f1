"""Ordered, bounded parallel map for I/O-bound stages (reading and decoding images)."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int = 2, ahead: int = 16
) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """Yield ``(item, result, error)`` in input order while up to ``ahead`` items run on
    ``workers`` threads (OpenCV decoding releases the GIL). An exception in ``fn`` is
    returned as ``error`` instead of stopping the stream, so a long job can skip bad items."""
    if workers <= 0:
        for item in items:
            try:
                yield item, fn(item), None
            except Exception as exc:  # noqa: BLE001 - reported to the caller, who logs and skips
                yield item, None, exc
        return
    pending: collections.deque[tuple[T, Future[R]]] = collections.deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prefetch") as pool:
        it = iter(items)
        try:
            for item in it:
                pending.append((item, pool.submit(fn, item)))
                if len(pending) >= ahead:
                    yield _pop(pending)
            while pending:
                yield _pop(pending)
        finally:
            for _, fut in pending:
                fut.cancel()


def _pop(pending: collections.deque) -> tuple:
    item, fut = pending.popleft()
    try:
        return item, fut.result(), None
    except Exception as exc:  # noqa: BLE001
        return item, None, exc
