"""``ModelPool``: the loaded encoders of a process, lazy and bounded.

- lazy: nothing is loaded until :meth:`ModelPool.get` (or :meth:`ModelPool.preload`) asks;
- single flight: two threads asking for the same key load it once, the second waits;
  different keys load concurrently;
- LRU (a cachetools ``LRUCache``) under ``max_loaded_models`` and an optional memory limit,
  each entry weighing its estimated bytes (:func:`estimate_bytes`);
- idle unload: an entry unused for ``keep_alive_s`` is dropped by a daemon reaper thread
  (or by :meth:`ModelPool.unload_idle`, which tests call with an injected clock).

An evicted encoder is only dropped from the pool: callers still holding it keep a working
object, and the memory is freed when the last reference goes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cachetools import Cache, LRUCache

from modelcache import metrics

log = logging.getLogger("modelcache")

__all__ = ["ModelPool", "estimate_bytes"]


def estimate_bytes(encoder: Any) -> int:
    """Estimated resident bytes of a loaded encoder.

    ``encoder.memory_bytes`` when the backend reports it (the ONNX backend: its weights
    file), else the parameter bytes of ``encoder.model`` (a torch module), else 0 (the
    entry then only counts against ``max_loaded_models``).
    """
    size = getattr(encoder, "memory_bytes", None)
    if isinstance(size, int | float) and size >= 0:
        return int(size)
    model = getattr(encoder, "model", None)
    params = getattr(model, "parameters", None)
    if callable(params):
        try:
            total = sum(p.numel() * p.element_size() for p in params())
            buffers = getattr(model, "buffers", None)
            if callable(buffers):
                total += sum(b.numel() * b.element_size() for b in buffers())
            return int(total)
        except (AttributeError, TypeError, RuntimeError):
            return 0
    return 0


@dataclass
class _Entry:
    """A pooled encoder and the weight it counts for in the LRU."""

    value: Any
    size: int
    weight: float


@dataclass
class _Flight:
    """One in-progress load; waiters block on ``done``."""

    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class _BoundedLRU(LRUCache):
    """An LRUCache bounded by weight (``maxsize``) *and* by entry count; reports evictions."""

    def __init__(self, maxsize: float, getsizeof: Callable[[Any], float], max_items: int,
                 on_evict: Callable[[Hashable, Any], None]):
        super().__init__(maxsize, getsizeof)
        self.max_items = max_items
        self._on_evict = on_evict

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        while len(self) > self.max_items:
            self.popitem()

    def popitem(self):
        key, value = super().popitem()
        self._on_evict(key, value)
        return key, value

    def peek(self, key):
        """The value without touching the LRU order."""
        return Cache.__getitem__(self, key)


class ModelPool:
    """Loaded encoders keyed by any hashable, bounded by count and memory.

    ``loader(key)`` builds a missing entry (or pass ``factory`` to :meth:`get`).
    ``warm(name)`` is what :meth:`preload` calls for each name; by default :meth:`get`.
    Pass a loader that itself goes through this pool (like ``ModelManager.load``) as
    ``warm`` so an entry is never stored twice.
    """

    def __init__(self, loader: Callable[[Hashable], Any] | None = None, *, max_loaded_models: int = 2,
                 max_memory_bytes: int | None = None, keep_alive_s: float | None = None,
                 sizeof: Callable[[Any], int] = estimate_bytes, clock: Callable[[], float] = time.monotonic,
                 warm: Callable[[str], Any] | None = None, reaper: bool = True):
        if max_loaded_models < 1:
            raise ValueError("max_loaded_models must be >= 1")
        if max_memory_bytes is not None and max_memory_bytes <= 0:
            raise ValueError("max_memory_bytes must be > 0 (or None for no memory limit)")
        if keep_alive_s is not None and keep_alive_s <= 0:
            raise ValueError("keep_alive_s must be > 0 (or None to keep models loaded)")
        self.loader = loader
        self.max_loaded_models = max_loaded_models
        self.max_memory_bytes = max_memory_bytes
        self.keep_alive_s = keep_alive_s
        self._sizeof = sizeof
        self._clock = clock
        self._warm = warm
        self._use_reaper = reaper
        self._lock = threading.RLock()
        self._last_used: dict[Hashable, float] = {}
        self._flights: dict[Hashable, _Flight] = {}
        self._counters = {"hits": 0, "misses": 0, "loads": 0, "load_errors": 0, "evictions": 0,
                          "idle_unloads": 0, "unloads": 0, "load_seconds": 0.0}
        limit = float(max_memory_bytes) if max_memory_bytes else math.inf
        self._cache = _BoundedLRU(limit, lambda entry: entry.weight, max_loaded_models, self._evicted)
        self._reaper_stop: threading.Event | None = None
        self._closed = False

    # -- lookups ------------------------------------------------------------------------
    def get(self, key: Hashable, factory: Callable[[], Any] | None = None) -> Any:
        """The encoder for ``key``, loading it (once, whatever the number of callers) if needed."""
        with self._lock:
            if key in self._cache:
                self._counters["hits"] += 1
                self._last_used[key] = self._clock()
                return self._cache[key].value  # __getitem__ marks it most recently used
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
                self._counters["misses"] += 1
        assert flight is not None
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        return self._load(key, factory, flight)

    def _load(self, key: Hashable, factory: Callable[[], Any] | None, flight: _Flight) -> Any:
        build = factory or (lambda: self._default_load(key))
        t0 = time.perf_counter()
        try:
            value = build()
        except BaseException as exc:
            flight.error = exc
            with self._lock:
                self._counters["load_errors"] += 1
                self._flights.pop(key, None)
            flight.done.set()
            raise
        seconds = time.perf_counter() - t0
        with self._lock:
            self._counters["loads"] += 1
            self._counters["load_seconds"] += seconds
            self._store(key, value)
            self._flights.pop(key, None)
        flight.value = value
        flight.done.set()
        log.info("pool: loaded %s in %.2fs (%d loaded, %.1f MB)", _label(key), seconds,
                 len(self._cache), self._total_bytes() / 1e6)
        self._start_reaper()
        return value

    def _default_load(self, key: Hashable) -> Any:
        if self.loader is None:
            raise KeyError(f"{_label(key)} is not loaded and the pool has no loader; pass factory=")
        return self.loader(key)

    def _store(self, key: Hashable, value: Any) -> None:
        size = max(0, int(self._sizeof(value)))
        if self.max_memory_bytes is not None and size > self.max_memory_bytes:
            log.warning("pool: %s needs ~%.1f MB, over the %.1f MB memory limit; keeping it as the only "
                        "loaded model", _label(key), size / 1e6, self.max_memory_bytes / 1e6)
        limit = self.max_memory_bytes
        # clamped to the limit: a model bigger than the limit evicts the others instead of raising
        weight = float(min(size, limit)) if limit else 1.0
        self._last_used[key] = self._clock()
        self._cache[key] = _Entry(value, size, weight)
        metrics.set_model_memory(_label(key), size)

    def _total_bytes(self) -> int:
        return sum(self._cache.peek(k).size for k in self._cache.keys())

    def _evicted(self, key: Hashable, value: Any, reason: str = "lru") -> None:
        """Bookkeeping for a dropped entry; ``lru`` is what a popitem() inside the LRU means."""
        counter = {"lru": "evictions", "idle": "idle_unloads"}.get(reason, "unloads")
        self._counters[counter] += 1
        self._last_used.pop(key, None)
        metrics.set_model_memory(_label(key), None)
        log.info("pool: unloaded %s (%s)", _label(key), reason)

    # -- management -----------------------------------------------------------------------
    def preload(self, names: Iterable[str]) -> list[Any]:
        """Load ``names`` now (at start-up) so the first request does not pay for it."""
        warm = self._warm or self.get
        return [warm(name) for name in names]

    def unload(self, key: Hashable) -> bool:
        """Drop one entry; True if it was loaded."""
        with self._lock:
            if key not in self._cache:
                return False
            entry = self._cache.pop(key)
            self._evicted(key, entry, "manual")
            return True

    def clear(self) -> None:
        with self._lock:
            for key in self._lru_keys():
                self.unload(key)

    def unload_idle(self, now: float | None = None) -> list[Hashable]:
        """Drop entries unused for ``keep_alive_s``; returns their keys."""
        if self.keep_alive_s is None:
            return []
        dropped = []
        with self._lock:
            now = self._clock() if now is None else now
            for key in self._lru_keys():
                if now - self._last_used.get(key, now) >= self.keep_alive_s:
                    entry = self._cache.pop(key)
                    self._evicted(key, entry, "idle")
                    dropped.append(key)
        return dropped

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._cache

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def keys(self) -> list[Hashable]:
        """Loaded keys, least recently used first."""
        with self._lock:
            return self._lru_keys()

    def _lru_keys(self) -> list[Hashable]:
        return sorted(self._cache.keys(), key=lambda k: self._last_used.get(k, 0.0))

    def stats(self) -> dict:
        """Counters and the loaded entries (for metrics / ``health``)."""
        with self._lock:
            now = self._clock()
            loaded = [{"key": _label(k), "bytes": self._cache.peek(k).size,
                       "idle_s": round(now - self._last_used.get(k, now), 3)} for k in self._lru_keys()]
            return {"loaded": loaded, "count": len(loaded), "bytes": sum(e["bytes"] for e in loaded),
                    "max_loaded_models": self.max_loaded_models, "max_memory_bytes": self.max_memory_bytes,
                    "keep_alive_s": self.keep_alive_s, "loading": len(self._flights),
                    **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in self._counters.items()}}

    # -- idle reaper ----------------------------------------------------------------------
    def _start_reaper(self) -> None:
        if self.keep_alive_s is None or not self._use_reaper or self._closed:
            return
        with self._lock:
            if self._reaper_stop is not None:
                return
            self._reaper_stop = stop = threading.Event()
        interval = max(0.05, min(self.keep_alive_s / 4, 30.0))
        thread = threading.Thread(target=_reap, args=(weakref.ref(self), stop, interval),
                                  name="modelcache-pool-reaper", daemon=True)
        thread.start()

    def close(self) -> None:
        """Stop the reaper and unload everything."""
        self._closed = True
        if self._reaper_stop is not None:
            self._reaper_stop.set()
        self.clear()

    def __enter__(self) -> ModelPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reap(pool_ref: weakref.ref, stop: threading.Event, interval: float) -> None:
    """Reaper loop; holds the pool only weakly so an abandoned pool can be collected."""
    while not stop.wait(interval):
        pool = pool_ref()
        if pool is None:
            return
        try:
            pool.unload_idle()
        except Exception:  # never let the reaper die silently mid-run
            log.exception("pool: idle unload failed")
        del pool


def _label(key: Hashable) -> str:
    if isinstance(key, tuple) and key:
        return "/".join(str(k)[:40] for k in key[:2])
    return str(key)
