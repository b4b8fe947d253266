"""Prometheus metrics scraped from a real HTTP endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from modelcache import metrics  # noqa: E402
from modelcache.manager import ModelManager  # noqa: E402
from modelcache.settings import load_settings  # noqa: E402
from tests.support.fault_proxy import FaultProxy  # noqa: E402
from tests.support.hub import TINY_REPO, LocalHub  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` from a /metrics URL."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def sink():
    registry = prometheus_client.CollectorRegistry()
    m = metrics.enable(registry)
    yield m
    metrics.disable()


def test_callers_registry_served_over_http(hub: LocalHub, sink: metrics.Metrics, tmp_path: Path) -> None:
    """Pull through a proxy that rate-limits once, then scrape the caller's own registry."""
    with FaultProxy(hub.endpoint) as proxy:
        proxy.add_fault("429", path_contains="/api/models/", retry_after="0")
        mgr = ModelManager(load_settings({"model_cache": {"directory": str(tmp_path / "cache")},
                                          "download": {"endpoints": [proxy.endpoint], "backoff_base": 0}}))
        result = mgr.pull(TINY_REPO)
    assert result.stats.rate_limited == 1
    if not _core_is_wired():
        metrics.observe_pull(result)  # download.py calls it itself once wired
    metrics.record_miss(TINY_REPO)
    metrics.record_hit(TINY_REPO)
    metrics.record_validation_failure("sha256 (registry)", TINY_REPO)
    metrics.observe_load("tiny", 0.2)
    metrics.record_fallback("bundled-mini", "all-MiniLM-L6-v2: DownloadError: every endpoint failed")
    metrics.set_degraded(True)
    sink.bind_cache(mgr.store)

    server = metrics.serve(sink, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        samples = scrape(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    repo = (("repo_id", TINY_REPO),)
    assert samples[("modelcache_download_bytes_total", repo)] == result.bytes_downloaded > 0
    assert samples[("modelcache_download_duration_seconds_count", repo + (("status", "ok"),))] == 1
    assert samples[("modelcache_download_retries_total", repo)] >= 1
    assert samples[("modelcache_download_rate_limited_total", repo)] == 1
    assert samples[("modelcache_cache_hits_total", repo)] == 1
    assert samples[("modelcache_cache_misses_total", repo)] == 1
    assert samples[("modelcache_validation_failures_total", (("failure_type", "sha256"), ("model_id", TINY_REPO)))] == 1
    assert samples[("modelcache_model_load_seconds_count", (("model", "tiny"),))] == 1
    assert samples[("modelcache_fallback_activations_total", (("reason", "all-MiniLM-L6-v2"),
                                                              ("tier", "bundled-mini")))] == 1
    assert samples[("modelcache_degraded", ())] == 1
    assert samples[("modelcache_cache_size_bytes", ())] == sum(r.size for r in mgr.store.repos()) > 0
    assert samples[("modelcache_cache_models", ())] == 1
    assert samples[("modelcache_resident_memory_bytes", ())] > 10 * 1024 * 1024
    assert all(name.startswith("modelcache_") for name, _ in samples)


def test_cli_metrics_endpoint(hub: LocalHub, tmp_path: Path) -> None:
    """`modelcache metrics --port 0 --once` in its own process, scraped once."""
    env = {**os.environ, "MODELCACHE_CACHE_DIR": str(tmp_path / "cache"), "MODELCACHE_ENDPOINTS": hub.endpoint,
           "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "modelcache", "pull", TINY_REPO, "--json"], env=env, check=True,
                   capture_output=True, timeout=300)
    (tmp_path / "config.yaml").write_text(f"model: {TINY_REPO}\nfallback: {{bundled: false}}\n")
    env["MODELCACHE_CONFIG"] = str(tmp_path / "config.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "modelcache", "metrics", "--port", "0", "--once", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = json.loads(proc.stdout.readline())
        assert started["ok"] and started["url"].startswith("http://127.0.0.1:")
        samples = scrape(started["url"])
        assert proc.wait(timeout=30) == 0  # --once: exits after one request
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert samples[("modelcache_cache_models", ())] == 1
    assert samples[("modelcache_cache_size_bytes", ())] > 0
    assert samples[("modelcache_degraded", ())] == 0  # the configured model is cached and verifies
    assert samples[("modelcache_resident_memory_bytes", ())] > 0


def test_hooks_cost_nothing_without_prometheus_client() -> None:
    """With the extra missing: hooks are no-ops, and enabling names the `metrics` extra."""
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "from modelcache import metrics\n"
            "metrics.record_hit('a/b'); metrics.observe_pull(None); metrics.set_degraded(True)\n"
            "try:\n    metrics.enable()\nexcept ImportError as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.startswith("BackendUnavailableError") and "pip install 'modelcache[metrics]'" in out


def test_two_registries_do_not_clash() -> None:
    a = metrics.Metrics(prometheus_client.CollectorRegistry())
    b = metrics.Metrics(prometheus_client.CollectorRegistry())
    a.record_hit("x/y")
    assert a.registry.get_sample_value("modelcache_cache_hits_total", {"repo_id": "x/y"}) == 1
    assert b.registry.get_sample_value("modelcache_cache_hits_total", {"repo_id": "x/y"}) is None
    assert b"modelcache_degraded 0.0" in b.exposition()


def _core_is_wired() -> bool:
    return "metrics.observe_pull" in (ROOT / "modelcache" / "hub" / "pull.py").read_text()


@pytest.mark.skipif(not _core_is_wired(), reason="download.py does not call the metrics hooks yet")
def test_core_reports_by_itself(hub: LocalHub, sink: metrics.Metrics, tmp_path: Path) -> None:
    mgr = ModelManager(load_settings({"model_cache": {"directory": str(tmp_path / "cache")},
                                      "download": {"endpoints": [hub.endpoint]}}))
    mgr.ensure(TINY_REPO)
    mgr.ensure(TINY_REPO)
    get = sink.registry.get_sample_value
    assert get("modelcache_download_bytes_total", {"repo_id": TINY_REPO}) > 0
    assert get("modelcache_cache_misses_total", {"repo_id": TINY_REPO}) == 1
    assert get("modelcache_cache_hits_total", {"repo_id": TINY_REPO}) == 1
