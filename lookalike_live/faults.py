"""Fault injection for tests: with ``LOOKALIKE_FAULT=<point>`` in the environment the process
kills itself (SIGKILL, as a power cut or the OOM killer would) the first time it reaches that
point. Off unless the variable names a point; the points are listed in POINTS.

``<point>@N``: the N-th time this process reaches it, not the first. ``<point>=TEXT``: the first
time it is reached with a key (a photo's path) that contains TEXT, every time in every process
(a photo that always crashes its reader). Points in RAISING raise an AttributeError (a bug, as
an internal error would look) instead of killing the process. With ``LOOKALIKE_FAULT_ONCE=FILE``
the fault fires once, in the first process that reaches it (FILE records that it fired): a
transient crash.
"""

from __future__ import annotations

import collections
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
    "prepare:crash",  # a prepare worker, before it reads a photo: the worker dies
    "prepare:bug",  # a prepare worker, before it reads a photo: an internal error (RAISING)
)
RAISING = frozenset({"prepare:bug"})

_reached: collections.Counter[str] = collections.Counter()


def point(name: str, key: str = "") -> None:
    """Die (or raise, RAISING) here if ``$LOOKALIKE_FAULT`` names this point (tests only)."""
    spec = os.environ.get("LOOKALIKE_FAULT")
    if not spec or not spec.startswith(name):
        return
    rest = spec[len(name):]
    if rest.startswith("@"):
        _reached[name] += 1
        if _reached[name] != int(rest[1:]):
            return
    elif rest.startswith("="):
        if rest[1:] not in key:
            return
    elif rest:
        return  # another point whose name starts with this one's
    once = os.environ.get("LOOKALIKE_FAULT_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # fired already, in this process or another
    if name in RAISING:
        raise AttributeError(f"'NoneType' object has no attribute 'shape' (injected at {name})")
    log.warning("fault injection: killed at %s%s", name, f" ({key})" if key else "")
    os.kill(os.getpid(), signal.SIGKILL)
