"""Prometheus metrics for the model lifecycle (extra ``metrics``: prometheus_client).

Two ways to use it:

- Your own registry: ``m = Metrics(registry=my_registry)`` and call its methods, or
  ``metrics.enable(my_registry)`` so modelcache's own code reports into it.
- The hook API the core calls (``observe_pull``, ``record_hit``, ``record_miss``, ...): each
  is a global read and a ``None`` test when metrics are not enabled, so it costs nothing and
  never imports prometheus_client.

Every name is under ``modelcache_``. prometheus_client is imported lazily; without it
:class:`~modelcache.errors.BackendUnavailableError` names the ``metrics`` extra.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from modelcache.errors import BackendUnavailableError

log = logging.getLogger("modelcache")

#: seconds buckets for downloads (tiny configs ... multi-GB weights)
DOWNLOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


def _prometheus():
    try:
        import prometheus_client
    except ImportError as exc:
        raise BackendUnavailableError("metrics (prometheus_client)", "metrics", str(exc)) from exc
    return prometheus_client


def resident_memory_bytes() -> float:
    """Current resident set size of this process (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return float(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        try:
            import resource  # POSIX only: imported here so that this module imports on Windows
        except ImportError:
            return 0.0  # Windows: neither /proc nor getrusage
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(peak if os.uname().sysname == "Darwin" else peak * 1024)


class Metrics:
    """The modelcache metric family, registered in ``registry`` (a new one if None)."""

    def __init__(self, registry: Any = None):
        prom = _prometheus()
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        r = self.registry
        C, G, H = prom.Counter, prom.Gauge, prom.Histogram  # noqa: N806
        self.download_seconds = H("modelcache_download_duration_seconds", "Wall time of pulls that used the network.",
                                  ["repo_id"], buckets=DOWNLOAD_BUCKETS, registry=r)
        self.download_bytes = C("modelcache_download_bytes", "Bytes downloaded into the cache.", ["repo_id"],
                                registry=r)
        self.download_retries = C("modelcache_download_retries", "HTTP retries during pulls.", ["repo_id"], registry=r)
        self.rate_limited = C("modelcache_download_rate_limited", "429 answers met during pulls.", ["repo_id"],
                              registry=r)
        self.download_failures = C("modelcache_download_failures", "Pulls that failed on every endpoint.",
                                   ["repo_id"], registry=r)
        self.cache_size = G("modelcache_cache_size_bytes", "Bytes of model blobs in the cache.", registry=r)
        self.cache_models = G("modelcache_cache_models", "Models (repos) in the cache.", registry=r)
        self.hits = C("modelcache_cache_hits", "Model requests served from the cache.", ["repo_id"], registry=r)
        self.misses = C("modelcache_cache_misses", "Model requests that needed a download.", ["repo_id"], registry=r)
        self.evictions = C("modelcache_cache_evictions", "Models evicted to stay within the budget.",
                           ["policy"], registry=r)
        self.validation_failures = C("modelcache_validation_failures", "Failed integrity checks by type.",
                                     ["check"], registry=r)
        self.load_seconds = H("modelcache_model_load_seconds", "Time to load a model into memory.", ["model"],
                              buckets=LOAD_BUCKETS, registry=r)
        self.resident_memory = G("modelcache_resident_memory_bytes", "Resident memory of this process.", registry=r)
        self.resident_memory.set_function(resident_memory_bytes)
        self.fallback_activations = C("modelcache_fallback_activations", "Times the fallback chain moved to a tier.",
                                      ["tier", "reason"], registry=r)
        self.degraded = G("modelcache_degraded", "1 while serving from a degraded tier or health is degraded.",
                          registry=r)

    # -- the lifecycle --------------------------------------------------------------------
    def observe_pull(self, result: Any) -> None:
        """A :class:`~modelcache.hub.pull.PullResult`; cache hits and dry runs count nothing."""
        if getattr(result, "dry_run", False) or not getattr(result, "requests_made", True):
            return
        repo = result.repo_id
        self.download_seconds.labels(repo).observe(result.seconds)
        self.download_bytes.labels(repo).inc(result.bytes_downloaded)
        stats = getattr(result, "stats", None)
        if stats is not None:
            self.observe_retries(repo, stats)

    def observe_retries(self, repo_id: str, stats: Any) -> None:
        """Retries and 429s from a :class:`~modelcache.hub.retry.RetryStats`."""
        if stats.retries:
            self.download_retries.labels(repo_id).inc(stats.retries)
        if stats.rate_limited:
            self.rate_limited.labels(repo_id).inc(stats.rate_limited)

    def record_download_failure(self, repo_id: str, stats: Any = None) -> None:
        self.download_failures.labels(repo_id).inc()
        if stats is not None:
            self.observe_retries(repo_id, stats)

    def record_hit(self, repo_id: str) -> None:
        self.hits.labels(repo_id).inc()

    def record_miss(self, repo_id: str) -> None:
        self.misses.labels(repo_id).inc()

    def record_eviction(self, policy: str, count: int = 1) -> None:
        self.evictions.labels(policy).inc(count)

    def record_validation_failure(self, check: str) -> None:
        self.validation_failures.labels(_check_label(check)).inc()

    def observe_load(self, model: str, seconds: float) -> None:
        self.load_seconds.labels(model).observe(seconds)

    def record_fallback(self, tier: str, reason: str = "") -> None:
        self.fallback_activations.labels(tier, _reason_label(reason)).inc()

    def set_degraded(self, degraded: bool) -> None:
        self.degraded.set(1 if degraded else 0)

    # -- live values at scrape time -------------------------------------------------------
    def bind_cache(self, store: Any) -> None:
        """Read the cache's size and model count from ``store`` at every scrape."""
        self.cache_size.set_function(lambda: float(sum(r.size for r in store.repos())))
        self.cache_models.set_function(lambda: float(sum(1 for r in store.repos() if r.commits)))

    def bind_health(self, probe: Callable[[], str], ttl_s: float = 30.0) -> None:
        """Set the degraded gauge from ``probe()`` (``"ok"`` / ``"degraded"`` / ``"failed"``),
        re-run at most every ``ttl_s`` seconds."""
        state = {"at": -ttl_s - 1.0, "value": 0.0}
        lock = threading.Lock()

        def value() -> float:
            with lock:
                if time.monotonic() - state["at"] > ttl_s:
                    try:
                        state["value"] = 0.0 if probe() == "ok" else 1.0
                    except Exception as exc:  # noqa: BLE001 - a failing probe is itself degraded
                        log.warning("health probe for metrics failed: %s", exc)
                        state["value"] = 1.0
                    state["at"] = time.monotonic()
                return state["value"]

        self.degraded.set_function(value)

    def exposition(self) -> bytes:
        """The text format, as a scrape would see it."""
        return _prometheus().generate_latest(self.registry)


def _check_label(check: str) -> str:
    """Keep label values few: ``"sha256 (registry)"`` -> ``"sha256"``."""
    return (check or "unknown").split(" ")[0].strip("()") or "unknown"


def _reason_label(reason: str) -> str:
    return (reason or "unknown").split(":")[0].strip()[:40] or "unknown"


# -- the hook API the core calls ----------------------------------------------------------
_active: Metrics | None = None


def enable(registry: Any = None) -> Metrics:
    """Report modelcache's own events into ``registry`` (a new one if None); returns the sink."""
    global _active
    _active = Metrics(registry)
    return _active


def disable() -> None:
    global _active
    _active = None


def active() -> Metrics | None:
    return _active


def observe_pull(result: Any) -> None:
    if _active is not None:
        _active.observe_pull(result)


def record_download_failure(repo_id: str, stats: Any = None) -> None:
    if _active is not None:
        _active.record_download_failure(repo_id, stats)


def record_hit(repo_id: str) -> None:
    if _active is not None:
        _active.record_hit(repo_id)


def record_miss(repo_id: str) -> None:
    if _active is not None:
        _active.record_miss(repo_id)


def record_eviction(policy: str, count: int = 1) -> None:
    if _active is not None:
        _active.record_eviction(policy, count)


def record_validation_failure(check: str) -> None:
    if _active is not None:
        _active.record_validation_failure(check)


def observe_load(model: str, seconds: float) -> None:
    if _active is not None:
        _active.observe_load(model, seconds)


def record_fallback(tier: str, reason: str = "") -> None:
    if _active is not None:
        _active.record_fallback(tier, reason)


def set_degraded(degraded: bool) -> None:
    if _active is not None:
        _active.set_degraded(degraded)


def serve(metrics: Metrics, port: int = 0, host: str = "127.0.0.1"):
    """An HTTP server for ``/metrics`` on ``host:port`` (0 picks a free port), not yet serving.

    Call ``serve_forever()`` (or ``handle_request()`` once) on it; ``server_address[1]`` is
    the bound port; ``server_close()`` releases it.
    """
    from http.server import ThreadingHTTPServer

    handler = _prometheus().exposition.MetricsHandler.factory(metrics.registry)
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


__all__ = ["Metrics", "enable", "disable", "active", "observe_pull", "record_download_failure", "record_hit",
           "record_miss", "record_eviction", "record_validation_failure", "observe_load", "record_fallback",
           "set_degraded", "serve", "resident_memory_bytes"]
