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
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from modelcache.errors import BackendUnavailableError

log = logging.getLogger("modelcache")

#: seconds buckets for downloads (tiny configs ... multi-GB weights)
DOWNLOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
#: seconds buckets for one request to a remote embedding server
REMOTE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


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
        self.download_seconds = H("modelcache_download_duration_seconds",
                                  "Wall time of pulls that used the network, by outcome (status ok / failed).",
                                  ["repo_id", "status"], buckets=DOWNLOAD_BUCKETS, registry=r)
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
        self.validation_failures = C("modelcache_validation_failures",
                                     "Failed integrity checks by model and failure type (sha256, size, exists, ...).",
                                     ["model_id", "failure_type"], registry=r)
        self.load_seconds = H("modelcache_model_load_seconds", "Time to load a model into memory.", ["model"],
                              buckets=LOAD_BUCKETS, registry=r)
        self.resident_memory = G("modelcache_resident_memory_bytes", "Resident memory of this process.", registry=r)
        self.resident_memory.set_function(resident_memory_bytes)
        self.model_memory = G("modelcache_model_memory_bytes",
                              "Estimated memory of each model loaded in the pool (as the backend reports it).",
                              ["model"], registry=r)
        self.memory_limit = G("modelcache_memory_limit_bytes",
                              "The loaded-model pool's memory budget (embedding.max_memory_mb); absent when none.",
                              registry=r)
        self.load_failures = C("modelcache_model_load_failures", "Tier loads that failed in the fallback chain.",
                               ["tier"], registry=r)
        self.disk_free = G("modelcache_disk_free_bytes", "Free bytes on the cache's filesystem.", registry=r)
        self.fallback_activations = C("modelcache_fallback_activations", "Times the fallback chain moved to a tier.",
                                      ["tier", "reason"], registry=r)
        self.remote_requests = C("modelcache_remote_requests", "Requests to remote embedding servers by outcome.",
                                 ["tier", "outcome"], registry=r)
        self.remote_seconds = H("modelcache_remote_request_duration_seconds",
                                "Latency of requests to remote embedding servers.", ["tier"],
                                buckets=REMOTE_BUCKETS, registry=r)
        self.degraded = G("modelcache_degraded", "1 while serving from a degraded tier or health is degraded.",
                          registry=r)

    # -- the lifecycle --------------------------------------------------------------------
    def observe_pull(self, result: Any) -> None:
        """A :class:`~modelcache.hub.pull.PullResult`; cache hits and dry runs count nothing."""
        if getattr(result, "dry_run", False) or not getattr(result, "requests_made", True):
            return
        repo = result.repo_id
        self.download_seconds.labels(repo, "ok").observe(result.seconds)
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

    def record_download_failure(self, repo_id: str, stats: Any = None, seconds: float | None = None) -> None:
        self.download_failures.labels(repo_id).inc()
        if seconds is not None:
            self.download_seconds.labels(repo_id, "failed").observe(seconds)
        if stats is not None:
            self.observe_retries(repo_id, stats)

    def record_hit(self, repo_id: str) -> None:
        self.hits.labels(repo_id).inc()

    def record_miss(self, repo_id: str) -> None:
        self.misses.labels(repo_id).inc()

    def record_eviction(self, policy: str, count: int = 1) -> None:
        self.evictions.labels(policy).inc(count)

    def record_validation_failure(self, check: str, model_id: str = "unknown") -> None:
        self.validation_failures.labels(model_id or "unknown", _check_label(check)).inc()

    def set_model_memory(self, model: str, size: float | None) -> None:
        """The memory of one loaded model; ``None`` when it is unloaded (the series goes away)."""
        if size is None:
            try:
                self.model_memory.remove(model)
            except KeyError:
                pass
        else:
            self.model_memory.labels(model).set(size)

    def record_load_failure(self, tier: str) -> None:
        self.load_failures.labels(tier).inc()

    def observe_load(self, model: str, seconds: float) -> None:
        self.load_seconds.labels(model).observe(seconds)

    def record_fallback(self, tier: str, reason: str = "") -> None:
        self.fallback_activations.labels(tier, _reason_label(reason)).inc()

    def set_degraded(self, degraded: bool) -> None:
        self.degraded.set(1 if degraded else 0)

    def observe_remote(self, tier: str, outcome: str, seconds: float) -> None:
        """One request to a remote tier: ``outcome`` is ``ok``, ``http_<status>``, ``timeout``,
        ``unreachable`` or ``invalid`` (an answer that is not valid vectors)."""
        self.remote_requests.labels(tier, outcome).inc()
        self.remote_seconds.labels(tier).observe(seconds)

    # -- live values at scrape time -------------------------------------------------------
    def bind_cache(self, store: Any) -> None:
        """Read the cache's size, model count and free disk from ``store`` at every scrape."""
        self.cache_size.set_function(lambda: float(sum(r.size for r in store.repos())))
        self.cache_models.set_function(lambda: float(sum(1 for r in store.repos() if r.commits)))

        def free() -> float:
            probe = store.root
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            return float(shutil.disk_usage(probe).free)

        self.disk_free.set_function(free)

    def bind_pool(self, pool: Any) -> None:
        """Report ``pool``'s memory budget (``max_memory_bytes``) as ``modelcache_memory_limit_bytes``."""
        if getattr(pool, "max_memory_bytes", None):
            self.memory_limit.set(float(pool.max_memory_bytes))

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


def record_download_failure(repo_id: str, stats: Any = None, seconds: float | None = None) -> None:
    if _active is not None:
        _active.record_download_failure(repo_id, stats, seconds)


def record_hit(repo_id: str) -> None:
    if _active is not None:
        _active.record_hit(repo_id)


def record_miss(repo_id: str) -> None:
    if _active is not None:
        _active.record_miss(repo_id)


def record_eviction(policy: str, count: int = 1) -> None:
    if _active is not None:
        _active.record_eviction(policy, count)


def record_validation_failure(check: str, model_id: str = "unknown") -> None:
    if _active is not None:
        _active.record_validation_failure(check, model_id)


def set_model_memory(model: str, size: float | None) -> None:
    if _active is not None:
        _active.set_model_memory(model, size)


def record_load_failure(tier: str) -> None:
    if _active is not None:
        _active.record_load_failure(tier)


def observe_load(model: str, seconds: float) -> None:
    if _active is not None:
        _active.observe_load(model, seconds)


def record_fallback(tier: str, reason: str = "") -> None:
    if _active is not None:
        _active.record_fallback(tier, reason)


def set_degraded(degraded: bool) -> None:
    if _active is not None:
        _active.set_degraded(degraded)


def observe_remote(tier: str, outcome: str, seconds: float) -> None:
    if _active is not None:
        _active.observe_remote(tier, outcome, seconds)


#: the metrics servers ``monitoring.metrics_port`` started, by (host, port): one per process
_servers: dict[tuple[str, int], Any] = {}
_servers_lock = threading.Lock()


def apply_monitoring(settings: Any, store: Any = None, pool: Any = None, serve_port: bool = False) -> Metrics | None:
    """What ``monitoring.*`` says: ``enabled`` records metrics (in the active sink, else a new one);
    ``metrics_port`` with ``serve_port`` also serves ``/metrics`` from a daemon thread, once per process
    (a port already taken is a warning, never a failed start). Returns the sink, or None when off."""
    mon = getattr(settings, "monitoring", None)
    if mon is None or not mon.enabled:
        return None
    sink = _active or enable()
    if store is not None:
        sink.bind_cache(store)
    if pool is not None:
        sink.bind_pool(pool)
    if serve_port and mon.metrics_port is not None:
        with _servers_lock:
            key = (mon.metrics_host, mon.metrics_port)
            if key not in _servers:
                try:
                    server = serve(sink, mon.metrics_port, mon.metrics_host)
                except OSError as exc:
                    log.warning("monitoring.metrics_port: cannot serve metrics on %s:%s (%s)", *key, exc)
                    return sink
                threading.Thread(target=server.serve_forever, name="modelcache-metrics", daemon=True).start()
                _servers[key] = server
                log.info("metrics at http://%s:%s/metrics", key[0], server.server_address[1])
    return sink


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
           "set_degraded", "serve", "resident_memory_bytes", "set_model_memory", "record_load_failure",
           "apply_monitoring"]
