"""``embedding.preload_models``: the models a process loads when its embedding service starts.

:class:`~modelcache.manager.ModelManager` starts this once, with the first model it loads (an
embedding service starts by loading its first tier): the listed models are then loaded in a
background thread through the pool's ``warm`` (``ModelManager.load``: pulled, verified, pooled),
so the caller's first embed does not wait for them and their own first use does not load. A
model that fails is logged and skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from modelcache.backends.pool import ModelPool

log = logging.getLogger("modelcache")


def _run(pool: ModelPool, names: Sequence[str]) -> None:
    for name in names:
        try:
            pool.preload([name])
        except Exception as exc:  # noqa: BLE001 - a preload is an optimisation: log it, go on
            log.warning("preload of %s (embedding.preload_models) failed: %s", name, exc)


def start_preload(pool: ModelPool, names: Sequence[str]) -> threading.Thread:
    """Load ``names`` into ``pool`` in a daemon thread; returns the thread (join it to wait)."""
    thread = threading.Thread(target=_run, args=(pool, list(names)), name="modelcache-preload", daemon=True)
    thread.start()
    return thread


__all__ = ["start_preload"]
