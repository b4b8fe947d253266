"""The spec's metrics: download duration by status, validation failures by model and failure
type, memory per loaded model, load failures, free disk (real pulls from the local Hub)."""

from __future__ import annotations

from pathlib import Path

import pytest

prometheus_client = pytest.importorskip("prometheus_client")

from modelcache import metrics  # noqa: E402
from modelcache.errors import DownloadError  # noqa: E402
from modelcache.manager import ModelManager  # noqa: E402
from modelcache.settings import load_settings  # noqa: E402
from tests.support.hub import TINY_REPO, LocalHub  # noqa: E402

DEAD = "http://127.0.0.1:9"


@pytest.fixture
def sink():
    m = metrics.enable(prometheus_client.CollectorRegistry())
    yield m
    metrics.disable()


def value(sink: metrics.Metrics, name: str, **labels: str) -> float | None:
    return sink.registry.get_sample_value(name, labels)


def test_download_duration_has_a_status(hub: LocalHub, sink: metrics.Metrics, tmp_path: Path) -> None:
    dead = ModelManager(load_settings({"model_cache": {"directory": str(tmp_path / "a")},
                                       "download": {"endpoints": [DEAD], "retries": 0}}))
    with pytest.raises(DownloadError):
        dead.pull(TINY_REPO)
    assert value(sink, "modelcache_download_duration_seconds_count", repo_id=TINY_REPO, status="failed") == 1
    assert value(sink, "modelcache_download_duration_seconds_count", repo_id=TINY_REPO, status="ok") is None
    good = ModelManager(load_settings({"model_cache": {"directory": str(tmp_path / "b")},
                                       "download": {"endpoints": [hub.endpoint]}}))
    good.pull(TINY_REPO)
    assert value(sink, "modelcache_download_duration_seconds_count", repo_id=TINY_REPO, status="ok") == 1


def test_validation_failures_name_the_model_and_the_failure(hub: LocalHub, sink: metrics.Metrics,
                                                            tmp_path: Path) -> None:
    mgr = ModelManager(load_settings({"model_cache": {"directory": str(tmp_path / "c")},
                                      "download": {"endpoints": [hub.endpoint]}}))
    mgr.pull(TINY_REPO)
    weights = next(mgr.store.snapshot_dir(TINY_REPO, c) for c in mgr.store.repos()[0].commits) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.resolve().write_bytes(bytes(data))
    assert not mgr.verify(TINY_REPO, full=True).ok
    assert value(sink, "modelcache_validation_failures_total", model_id=TINY_REPO, failure_type="sha256") == 1


def test_memory_per_loaded_model(hub: LocalHub, sink: metrics.Metrics, tmp_path: Path) -> None:
    mgr = ModelManager(load_settings({"model_cache": {"directory": str(tmp_path / "d")},
                                      "download": {"endpoints": [hub.endpoint]},
                                      "embedding": {"max_memory_mb": 500}}))
    sink.bind_pool(mgr.pool)
    sink.bind_cache(mgr.store)
    mgr.load(TINY_REPO)
    series = [s for f in sink.registry.collect() if f.name == "modelcache_model_memory_bytes" for s in f.samples]
    assert len(series) == 1 and series[0].labels["model"].startswith(TINY_REPO) and series[0].value > 0
    assert value(sink, "modelcache_memory_limit_bytes") == 500e6
    assert value(sink, "modelcache_disk_free_bytes") > 0
    mgr.pool.clear()
    assert not [s for f in sink.registry.collect() if f.name == "modelcache_model_memory_bytes" for s in f.samples]


def test_load_failures_by_tier(sink: metrics.Metrics, tmp_path: Path) -> None:
    from modelcache.serving.service import EmbeddingService

    settings = load_settings({"model_cache": {"directory": str(tmp_path / "e")}, "offline": True,
                              "fallback": {"bundled": False}})
    service = EmbeddingService(settings, model=TINY_REPO, background_recovery=False)
    service.embed(["hello"])  # not cached, offline: the preferred tier fails, keyword serves
    assert value(sink, "modelcache_model_load_failures_total", tier="preferred") == 1
