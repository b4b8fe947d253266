"""Runtime failure handling: a model that passed verification but fails to load (its bytes changed
in place, so the stat-stamp fast check still trusts them) is cleared and fetched once more; a
model that fails again is the model's own failure and the chain moves on."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from modelcache.manager import ModelManager
from modelcache.serving.service import EmbeddingService
from modelcache.settings import load_settings
from tests.support.hub import TINY_REPO


def corrupt_in_place(path: Path) -> None:
    """Overwrite the file's first bytes, keeping size, mtime and inode (the warm check's stamp)."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.write(b"\xff" * 8)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_verified_model_that_fails_to_load_is_refetched_once(hub, isolated_env, caplog):
    settings = load_settings({"download": {"endpoints": [hub.endpoint]}})
    first = ModelManager(settings).pull(TINY_REPO)
    corrupt_in_place((first.snapshot / "tokenizer.json").resolve())  # read by every backend
    assert ModelManager(settings).verify(TINY_REPO).ok  # the fast check trusts the stamp

    svc = EmbeddingService(settings, TINY_REPO, background_recovery=False)
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        out = svc.embed(["hello"])
    assert out.shape == (1, 32) and svc.active_tier == "preferred" and not svc.degraded
    assert any("fetching it once more" in r.getMessage() for r in caplog.records)
    quarantined = list((Path(settings.cache_dir) / "models--tiny-org--tiny-st" / "quarantine").iterdir())
    assert any(p.name.endswith("tokenizer.json") for p in quarantined)  # kept aside, not deleted
    assert ModelManager(settings).verify(TINY_REPO, full=True).ok  # the new copy is whole


def test_offline_nothing_is_refetched_and_the_chain_moves_on(hub, isolated_env):
    settings = load_settings({"download": {"endpoints": [hub.endpoint]}})
    snap = ModelManager(settings).pull(TINY_REPO).snapshot
    corrupt_in_place((snap / "tokenizer.json").resolve())
    offline = load_settings({"offline": True, "download": {"endpoints": [hub.endpoint]},
                             "fallback": {"bundled": False}})
    svc = EmbeddingService(offline, TINY_REPO, background_recovery=False)
    with pytest.warns(Warning):
        svc.embed(["hello"])
    assert svc.active_tier == "keyword"  # nothing fetched; the model's failure is reported
    assert "preferred" in {t["name"] for t in svc.status()["tiers"] if t["ok"] is False}


def test_a_timed_out_download_is_retried_with_a_longer_timeout(proxy, isolated_env):
    fault_proxy = proxy
    # every GET of the weights answers 1.5 s late, twice; the read timeout is 1 s: the first try
    # times out, the retry waits 2 s and gets the file (with a fixed timeout both would time out)
    fault_proxy.add_fault("delay", path_contains="model.safetensors", times=2, seconds=1.5)
    settings = load_settings({"download": {"endpoints": [fault_proxy.endpoint], "retries": 1, "backoff_base": 0.05},
                              "model_cache": {"download_timeout": 1.0}})
    result = ModelManager(settings).pull(TINY_REPO)
    assert (result.snapshot / "model.safetensors").exists()
    assert fault_proxy.count("GET", "model.safetensors") == 2
