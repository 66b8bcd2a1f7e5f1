"""Closing what a component owns: in order, each once, a failure logged (at debug) and never
masking the error that made the caller close."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["close_all"]


def close_all(objs: Iterable[Any]) -> None:
    """``close()`` every object in order (None skipped); one that fails does not stop the rest."""
    for obj in objs:
        if obj is None:
            continue
        try:
            obj.close()
        except Exception:  # noqa: BLE001 - closing must not mask the real error
            log.debug("error while closing %s", obj, exc_info=True)
