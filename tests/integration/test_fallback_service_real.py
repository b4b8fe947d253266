"""``EmbeddingService`` with the real ``ModelManager`` and real (tiny) models: no fakes.

The chain's rungs are registry specs over real model sources:

- a model that *works* is ``source: local:<tiny dir>`` (``tiny_model_dir`` / ``tiny_model_dir_v2``:
  different weights, so different fingerprints; two specs over the same dir share a fingerprint);
- a model that is *unavailable* is a Hub repo with ``download.endpoints`` at a dead port;
- a model that *comes back* is ``local:<dir>`` whose files are missing, then copied in;
- the *bundled* rung is a real ``package:<module>`` spec: a package on ``sys.path`` shipping a
  tiny model (or naming a module that is not installed, so the manager falls back to the dead Hub);
- a model that *loads but fails to encode* is the tiny model with a broken
  ``sentence_bert_config.json`` (max_seq_length beyond its 512 position embeddings): short texts
  embed, a long one raises inside torch's forward pass (the ONNX backend caps the length at the
  tokenizer's 512: there it just works, so those tests run on torch).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import pytest

from modelcache.cache.modelfiles import dims_from_dir
from modelcache.errors import ModelUnavailableError
from modelcache.manager import ModelManager
from modelcache.registry import Registry, spec_from_dict
from modelcache.serving.service import EmbeddingService
from modelcache.serving.tiers import bundled_installed
from modelcache.settings import load_settings

DEAD = "http://127.0.0.1:9"
BUNDLED_PKG = "mc_test_tiny_bundled"
MISSING_PKG = "mc_test_no_such_package"
LONG_TEXT = " ".join(["memory"] * 900)  # > 512 tokens: past the broken model's position embeddings
needs_bundled = pytest.mark.skipif(not bundled_installed(), reason="the bundled tier needs modelcache[bundled]")


@pytest.fixture(scope="module")
def bundled_pkg(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    """A real package on sys.path shipping the tiny model as ``<pkg>/model``."""
    root = tmp_path_factory.mktemp("pkgs")
    pkg = root / BUNDLED_PKG
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copytree(tiny_model_dir, pkg / "model")
    sys.path.insert(0, str(root))
    yield pkg
    sys.path.remove(str(root))
    sys.modules.pop(BUNDLED_PKG, None)


@pytest.fixture(scope="module")
def long_broken_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """tiny_model_dir's weights (same fingerprint), but a max_seq_length its model cannot run."""
    dest = tmp_path_factory.mktemp("broken") / "tiny-broken"
    shutil.copytree(tiny_model_dir, dest)
    conf = dest / "sentence_bert_config.json"
    data = json.loads(conf.read_text())
    data["max_seq_length"] = 2048
    conf.write_text(json.dumps(data))
    return dest


@pytest.fixture
def models(tiny_model_dir: Path, tiny_model_dir_v2: Path, long_broken_dir: Path, bundled_pkg: Path,
           tmp_path: Path) -> dict:
    return {"v1": f"local:{tiny_model_dir}", "v2": f"local:{tiny_model_dir_v2}", "dead": "hub",
            "broken": f"local:{long_broken_dir}", "pkg": f"package:{BUNDLED_PKG}",
            "nopkg": f"package:{MISSING_PKG}", "later": f"local:{tmp_path / 'arrives-later'}"}


def make_registry(models: dict, pref="dead", twin="dead", other="v2", bundled="nopkg") -> Registry:
    """The unit file's SPECS, each over a real source (see the module docstring)."""
    return Registry([spec_from_dict(d) for d in [
        {"name": "pref", "repo_id": "org/pref", "dims": 32, "same_space": ["twin"], "source": models[pref]},
        {"name": "twin", "repo_id": "mirror/pref", "dims": 32, "same_space": ["pref"], "source": models[twin]},
        {"name": "other", "repo_id": "org/other", "dims": 32, "source": models[other]},
        {"name": "big", "repo_id": "org/big", "dims": 16},
        {"name": "bundled-mini", "repo_id": "bundled/pref", "dims": 32, "source": models[bundled],
         "aliases": ["bundled"], "same_space": ["pref"]},
    ]])


def service(models: dict, *, strategy=None, fallback_models=None, cool_down=60.0, background=False,
            offline=False, fallback=None, backend="auto", **sources):
    settings = load_settings({"offline": offline, "embedding": {"backend": backend},
                              "download": {"endpoints": [DEAD], "retries": 0, "connect_timeout": 2},
                              "fallback": {"retry_preferred_after_s": cool_down, "first_try_retries": 0,
                                           **(fallback or {})}})
    manager = ModelManager(settings, registry=make_registry(models, **sources))
    svc = EmbeddingService(settings, "pref", strategy=strategy, fallback_models=fallback_models,
                           manager=manager, background_recovery=background)
    return svc, manager


def cache_is_empty(mgr: ModelManager) -> bool:
    """No model in the pool and no file in the cache."""
    root = Path(mgr.settings.cache_dir)
    return len(mgr.pool) == 0 and not (root.exists() and any(p.is_file() for p in root.rglob("*")))


def test_construction_loads_nothing_and_status_lists_the_chain(models) -> None:
    svc, mgr = service(models, pref="v1", twin="v1", fallback_models=["other", "big"])
    status = svc.status()
    assert cache_is_empty(mgr) and status["active_tier"] is None and status["dims"] == 32
    names = [t["name"] for t in status["tiers"]]
    assert names == ["preferred", "fallback:other", "fallback:big", "fallback:twin", "bundled", "keyword"]
    big = status["tiers"][2]
    assert big["enabled"] is False and "16 dims" in big["reason"]
    assert cache_is_empty(mgr)  # status() plans the chain, loads nothing


def test_preferred_first(models) -> None:
    svc, mgr = service(models, pref="v1", twin="v1")
    assert svc.embed(["a"]).shape == (1, 32)
    assert svc.active_tier == "preferred" and not svc.degraded
    assert svc.fingerprint.startswith("mc1-") and svc.fingerprint == mgr.load("pref").fingerprint
    assert svc.status()["tiers"][1]["ok"] is None  # the twin was never tried


def test_same_space_alternative_is_not_degraded_another_model_is(models) -> None:
    svc, _ = service(models, twin="v1")
    svc.embed(["a"])
    assert svc.active_tier == "fallback:twin" and not svc.degraded
    svc2, _ = service(models, other="v2", fallback_models=["other"])
    svc2.embed(["a"])
    assert svc2.active_tier == "fallback:other" and svc2.degraded


def test_declared_same_space_with_another_fingerprint_is_degraded(models) -> None:
    # twin is declared same-space, but its weights (v2) differ from the preferred model's (v1)
    # torch: the ONNX backend caps the length at the tokenizer's 512 and does not fail
    svc, _ = service(models, pref="broken", twin="v2", backend="torch")
    svc.embed(["a"])  # learns the preferred fingerprint
    assert svc.active_tier == "preferred"
    svc.embed([LONG_TEXT])  # the preferred model fails to encode; it cools down, twin answers
    assert svc.active_tier == "fallback:twin" and svc.degraded


def test_keyword_tier_has_the_preferred_dims(models) -> None:
    svc, _ = service(models, fallback={"bundled": False})
    vectors = svc.embed(["a memory", ""])
    assert svc.active_tier == "keyword" and svc.degraded and vectors.shape == (2, 32)
    assert svc.fingerprint == "keyword-hash-32"


def test_encode_failure_moves_down_the_chain(models, caplog: pytest.LogCaptureFixture) -> None:
    svc, _ = service(models, pref="broken", twin="v1", backend="torch")
    svc.embed(["a"])
    assert svc.active_tier == "preferred"
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        out = svc.embed([LONG_TEXT, "b"])
    assert any("tier preferred (pref) failed to encode" in r.getMessage() for r in caplog.records)
    tiers = {t["name"]: t for t in svc.status()["tiers"]}
    assert out.shape == (2, 32)
    assert svc.active_tier == "fallback:twin" and not svc.degraded  # same weights: same fingerprint
    assert tiers["preferred"]["ok"] is False and tiers["preferred"]["reason"]
    assert svc.counters["tier_failures:preferred"] == 1


def test_cool_down_then_recovery_inline(models, tiny_model_dir: Path, tmp_path: Path) -> None:
    cool_down = 1.0
    svc, _ = service(models, pref="later", cool_down=cool_down)
    svc.embed(["a"])
    assert svc.active_tier == "keyword"
    assert "FileNotFoundError" in svc.status()["tiers"][0]["reason"]
    tries = svc.counters["tier_failures:preferred"]
    shutil.copytree(tiny_model_dir, tmp_path / "arrives-later")  # the preferred model's files arrive
    svc.embed(["b"])
    assert svc.counters["tier_failures:preferred"] == tries and svc.active_tier == "keyword"  # cooling down
    time.sleep(cool_down)
    svc.embed(["c"])
    assert svc.active_tier == "preferred" and svc.counters["recoveries"] == 1 and not svc.degraded


def test_recovery_in_background(models, tiny_model_dir: Path, tmp_path: Path) -> None:
    svc, _ = service(models, pref="later", cool_down=0, background=True)
    svc.embed(["a"])
    assert svc.active_tier == "keyword"
    shutil.copytree(tiny_model_dir, tmp_path / "arrives-later")
    out = svc.embed(["b"])  # answered by the current tier while the retry runs
    assert out.shape == (1, 32)
    svc.wait_recovery(timeout=30)
    assert svc.active_tier == "preferred"


@needs_bundled
def test_strict_raises_with_every_reason(models) -> None:
    svc, _ = service(models, strategy="strict", fallback_models=["other"])
    assert [t.name for t in svc.tiers] == ["preferred", "fallback:twin", "bundled"]  # same space only
    with pytest.raises(ModelUnavailableError) as err:
        svc.embed(["a"])
    assert set(err.value.failures) >= {"preferred", "fallback:twin", "bundled"}
    assert "DownloadError" in err.value.failures["preferred"] and DEAD in err.value.failures["preferred"]
    assert "DownloadError" in err.value.failures["bundled"]  # package missing: the Hub, which is down


@needs_bundled
def test_strict_uses_a_same_space_tier(models) -> None:
    svc, _ = service(models, bundled="pkg", strategy="strict")
    svc.embed(["a"])
    assert svc.active_tier == "bundled" and svc.active_model == "bundled-mini" and not svc.degraded


def test_manual_uses_only_what_is_listed(models) -> None:
    svc, _ = service(models, strategy="manual", fallback_models=["bundled", "keyword"])
    assert [t.name for t in svc.tiers] == ["preferred", "bundled", "keyword"]
    svc2, _ = service(models, strategy="manual", twin="v1", other="v2")  # usable, but not listed
    with pytest.raises(ModelUnavailableError):
        svc2.embed(["a"])
    assert svc2.active_tier is None


def test_unknown_preferred_model_is_a_failed_tier(models) -> None:
    settings = load_settings({})
    manager = ModelManager(settings, registry=make_registry(models))
    svc = EmbeddingService(settings, "no-such-model-xyz", manager=manager, dims=8)
    svc.embed(["a"])
    assert svc.active_tier == "keyword" and "Unknown model" in svc.status()["tiers"][0]["reason"]
    strict = EmbeddingService(settings, "no-such-model-xyz", manager=manager, strategy="strict")
    with pytest.raises(ModelUnavailableError):
        strict.embed(["a"])


def test_input_validation_loads_nothing(models) -> None:
    svc, mgr = service(models, pref="v1")
    assert svc.embed([]).shape == (0, 32) and cache_is_empty(mgr)
    with pytest.raises(TypeError, match="single str"):
        svc.embed("text")
    with pytest.raises(TypeError, match=r"texts\[1\] is bytes"):
        svc.embed(["ok", b"bytes"])
    with pytest.raises(TypeError, match="got dict"):
        svc.embed({"a": 1})
    with pytest.raises(ValueError, match="kind"):
        svc.embed(["a"], kind="passage")
    assert cache_is_empty(mgr) and svc.active_tier is None
    assert svc.embed([""]).shape == (1, 32)


async def test_aembed_runs_off_the_event_loop(models) -> None:
    svc, _ = service(models, pref="v1")
    vectors = await asyncio.gather(svc.aembed(["a"]), svc.aembed(["b", "c"], kind="query"))
    assert [v.shape for v in vectors] == [(1, 32), (2, 32)]
    # the loop keeps turning while a batch is embedded (a blocking call would finish in one step)
    task = asyncio.create_task(svc.aembed([f"text number {i}" for i in range(256)]))
    ticks = 0
    while not task.done():
        await asyncio.sleep(0)
        ticks += 1
    assert task.result().shape == (256, 32) and ticks > 2


def test_offline_error_reason_is_kept(models) -> None:
    svc, _ = service(models, offline=True)
    svc.embed(["a"])
    assert svc.status()["tiers"][0]["reason"].startswith("OfflineError: pref: the model is not in the cache")


def test_dims_from_dir(tmp_path, tiny_model_dir: Path) -> None:
    assert dims_from_dir(tiny_model_dir) == 32
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
