"""Fault injection for tests: with ``LOOKALIKE_FAULT=<point>`` in the environment the process
kills itself (SIGKILL, as a power cut or the OOM killer would) the first time it reaches that
point. Off unless the variable names a point; the points are listed in POINTS."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

#: where a long job can be killed, in the order an index build reaches them
POINTS = (
    "build:before-upsert",  # embedded rows in hand, none written yet
    "build:after-upsert",  # the first batch written, more to come
    "build:after-last-upsert",  # every row written, before the flush and the centroids
    "centroids:written",  # identity rows written, stale ones not yet removed, not marked current
    "local-index:save",  # the local index's files written, not yet swapped in
)


def point(name: str) -> None:
    """Die here if ``$LOOKALIKE_FAULT`` names this point (tests only)."""
    if os.environ.get("LOOKALIKE_FAULT") == name:
        log.warning("fault injection: killed at %s", name)
        os.kill(os.getpid(), signal.SIGKILL)
