"""Switching back up the chain: after a tier's cool-down, try the better tiers again (in a thread).

:class:`RecoveryMixin` is the part of :class:`~modelcache.serving.service.EmbeddingService` that
does it; the service provides the chain (``_chain``, ``_active``, ``_cooled_down``, ``_load``,
``_succeed``, ``_fail``, ``_switch``), its locks and ``background_recovery``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelcache.errors import DeadlineExceededError

if TYPE_CHECKING:
    from modelcache.serving.tiers import Tier

log = logging.getLogger("modelcache")


def call_within(fn: Callable[[], Any], seconds: float, what: str, setting: str) -> Any:
    """``fn()`` in a worker thread, waited for at most ``seconds``: past it, :class:`DeadlineExceededError`
    (the caller moves on: the next tier serves) while ``fn`` finishes in its thread — a model it
    loads lands in the manager's pool, and recovery switches back to it."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    worker = threading.Thread(target=work, name=f"modelcache-{what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise DeadlineExceededError(what, seconds, setting,
                                    hint="the next tier serves meanwhile; the load goes on in the background")
    if "error" in box:
        raise box["error"]
    return box["value"]


class RecoveryMixin:
    """Background recovery of the better tiers (see the module docstring)."""

    # provided by the service
    background_recovery: bool
    counters: Counter
    _active: Tier | None
    _lock: threading.RLock
    _recover_lock: threading.Lock
    _recovery: threading.Thread | None

    def _chain(self) -> list[Tier]:
        raise NotImplementedError

    def _cooled_down(self, tier: Tier) -> bool:
        raise NotImplementedError

    def _load(self, tier: Tier, retries: int | None = None) -> Any:
        raise NotImplementedError

    def _succeed(self, tier: Tier, encoder: Any) -> None:
        raise NotImplementedError

    def _fail(self, tier: Tier, exc: BaseException, during: str = "load") -> None:
        raise NotImplementedError

    def _switch(self, tier: Tier) -> None:
        raise NotImplementedError

    def _better_due(self) -> list[Tier]:
        active = self._active
        chain = self._chain()
        if active is None or active not in chain:
            return []
        better = chain[:chain.index(active)]
        return [t for t in better if (t.spec is not None or t.kind in ("keyword", "remote")) and self._cooled_down(t)]

    def _maybe_recover(self) -> None:
        if not self._better_due():
            return
        if not self.background_recovery:
            self.try_recover()
            return
        with self._lock:
            if self._recovery is not None and self._recovery.is_alive():
                return
            self._recovery = threading.Thread(target=self.try_recover, name="modelcache-recover", daemon=True)
            self._recovery.start()

    def try_recover(self) -> bool:
        """Try the tiers better than the active one (cool-down permitting); True if it switched."""
        if not self._recover_lock.acquire(blocking=False):
            return False
        try:
            for tier in self._better_due():
                try:
                    encoder = tier.encoder or self._load(tier)
                except Exception as exc:
                    with self._lock:
                        self._fail(tier, exc)
                    continue
                with self._lock:
                    self._succeed(tier, encoder)
                    self._switch(tier)
                    self.counters["recoveries"] += 1
                log.info("embeddings recovered to %s (%s)", tier.name, tier.model)
                return True
            return False
        finally:
            self._recover_lock.release()

    def wait_recovery(self, timeout: float | None = None) -> None:
        """Wait for a background recovery attempt in flight (tests, shutdown)."""
        thread = self._recovery
        if thread is not None:
            thread.join(timeout)
