"""``ModelPool``: the loaded encoders of a process, lazy and bounded.

- lazy: nothing is loaded until :meth:`ModelPool.get` (or :meth:`ModelPool.preload`) asks;
- single flight: two threads asking for the same key load it once, the second waits;
  different keys load concurrently;
- eviction under ``max_loaded_models`` and an optional memory limit (entries weigh their
  :func:`estimate_bytes`) by ``policy``: ``lru`` / ``fifo`` (cachetools ``LRUCache`` /
  ``FIFOCache``), ``manual`` (nothing goes: past a limit :class:`~modelcache.errors.PoolFullError`);
- memory pressure (``min_available_bytes``): below it, models go in policy order (never the one
  just loaded; not under ``manual``), after each load and in the reaper;
- idle unload: an entry unused for ``keep_alive_s`` is dropped by a daemon reaper thread
  (or by :meth:`ModelPool.unload_idle`, which tests call with an injected clock).

An evicted encoder is only dropped from the pool: callers still holding it keep a working
object, and the memory is freed when the last reference goes.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cachetools import Cache, FIFOCache, LRUCache

from modelcache import metrics
from modelcache.errors import PoolFullError

log = logging.getLogger("modelcache")

__all__ = ["POLICIES", "ModelPool", "available_memory_bytes", "estimate_bytes"]

POLICIES = ("lru", "fifo", "manual")


def available_memory_bytes() -> int | None:
    """Memory the system can give without swapping (psutil's ``available``, else Linux's
    ``MemAvailable``); None when neither can be read."""
    try:
        import psutil  # optional: not a dependency

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


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


class _Bounded:
    """A cachetools cache bounded by weight (``maxsize``) *and* by entry count; reports evictions."""

    def __init__(self, maxsize: float, getsizeof: Callable[[Any], float], max_items: float,
                 on_evict: Callable[[Hashable, Any], None]):
        super().__init__(maxsize, getsizeof)  # type: ignore[call-arg]  # the cachetools base
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
        """The value without touching the eviction order."""
        return Cache.__getitem__(self, key)


class _BoundedLRU(_Bounded, LRUCache):
    """Evicts the least recently used entry first."""


class _BoundedFIFO(_Bounded, FIFOCache):
    """Evicts the entry loaded first."""


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
                 warm: Callable[[str], Any] | None = None, reaper: bool = True, policy: str = "lru",
                 min_available_bytes: int | None = None,
                 available_memory: Callable[[], int | None] = available_memory_bytes):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if min_available_bytes is not None and min_available_bytes <= 0:
            raise ValueError("min_available_bytes must be > 0 (or None: no memory-pressure eviction)")
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
        self.policy = policy
        self.min_available_bytes = min_available_bytes
        self._available = available_memory
        limit = float(max_memory_bytes) if max_memory_bytes and policy != "manual" else math.inf
        kind = _BoundedFIFO if policy == "fifo" else _BoundedLRU
        self._cache = kind(limit, lambda entry: entry.weight, max_loaded_models if policy != "manual" else math.inf,
                           self._evicted)
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
                if self.policy == "manual" and len(self._cache) + len(self._flights) >= self.max_loaded_models:
                    raise PoolFullError(_label(key), f"{len(self._cache)} models are loaded (and {len(self._flights)} "
                                        f"loading), embedding.max_loaded_models is {self.max_loaded_models}")
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
            try:
                self._store(key, value)
            except BaseException as exc:  # PoolFullError (manual policy): the waiters get it too
                flight.error = exc
                raise
            finally:
                self._flights.pop(key, None)
                if flight.error is not None:
                    flight.done.set()
        flight.value = value
        flight.done.set()
        self.relieve_pressure(keep=key)
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
        if self.policy == "manual" and limit is not None and self._total_bytes() + size > limit:
            raise PoolFullError(_label(key), f"it needs ~{size / 1e6:.1f} MB and {self._total_bytes() / 1e6:.1f} MB "
                                f"of embedding.max_memory_mb {limit / 1e6:g} are loaded")
        # clamped to the limit: a model bigger than the limit evicts the others instead of raising
        weight = float(min(size, limit)) if limit else 1.0
        self._last_used[key] = self._clock()
        self._cache[key] = _Entry(value, size, weight)
        metrics.set_model_memory(_label(key), size)

    def _total_bytes(self) -> int:
        return sum(self._cache.peek(k).size for k in self._cache.keys())

    def _evicted(self, key: Hashable, value: Any, reason: str = "lru") -> None:
        """Bookkeeping for a dropped entry; ``lru`` is what a popitem() inside the LRU means."""
        counter = {"lru": "evictions", "memory": "evictions", "idle": "idle_unloads"}.get(reason, "unloads")
        self._counters[counter] += 1
        self._last_used.pop(key, None)
        metrics.set_model_memory(_label(key), None)
        log.info("pool: unloaded %s (%s)", _label(key), reason)

    def relieve_pressure(self, keep: Hashable | None = None) -> list[Hashable]:
        """While the system's available memory is below ``min_available_bytes``, evict loaded models
        in policy order (never ``keep``; nothing under ``manual``). Returns the evicted keys."""
        if self.min_available_bytes is None:
            return []
        dropped: list[Hashable] = []
        with self._lock:
            while (available := self._available()) is not None and available < self.min_available_bytes:
                order = list(self._cache.keys()) if self.policy == "fifo" else self._lru_keys()
                victims = [k for k in order if k != keep]
                if self.policy == "manual" or not victims:
                    log.warning("pool: %.0f MB available, under embedding.min_available_memory_mb (%.0f); %s",
                                available / 1e6, self.min_available_bytes / 1e6,
                                "policy manual: nothing unloaded" if victims else "nothing left to unload")
                    break
                entry = self._cache.pop(victims[0])
                self._evicted(victims[0], entry, "memory")
                dropped.append(victims[0])
                gc.collect()  # an unloaded model's memory comes back only once it is collected
        return dropped

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
                    "keep_alive_s": self.keep_alive_s, "loading": len(self._flights), "policy": self.policy,
                    "min_available_bytes": self.min_available_bytes,
                    **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in self._counters.items()}}

    # -- idle reaper ----------------------------------------------------------------------
    def _start_reaper(self) -> None:
        if (self.keep_alive_s is None and self.min_available_bytes is None) or not self._use_reaper or self._closed:
            return
        with self._lock:
            if self._reaper_stop is not None:
                return
            self._reaper_stop = stop = threading.Event()
        interval = max(0.05, min(self.keep_alive_s / 4, 30.0)) if self.keep_alive_s else 5.0
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
            pool.relieve_pressure()
        except Exception:  # never let the reaper die silently mid-run
            log.exception("pool: idle unload failed")
        del pool


def _label(key: Hashable) -> str:
    if isinstance(key, tuple) and key:
        return "/".join(str(k)[:40] for k in key[:2])
    return str(key)
