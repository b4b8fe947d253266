"""Config as the spec writes it: durations ("24h", "30m", "6h", "90s"), the spec's keys, the
spec's dev / prod / offline examples, and the warning for a chain the dimension check empties."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from modelcache.errors import ConfigError
from modelcache.registry import get_registry
from modelcache.serving.tiers import TierPlan
from modelcache.settings import Settings, dimension_warnings, load_settings, parse_duration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "configs"

#: every duration setting: (section, key, the unit in seconds)
DURATIONS = [
    ("model_cache", "validation_interval", 1), ("model_cache", "download_timeout", 1),
    ("download", "backoff_base", 1), ("download", "backoff_max", 1), ("download", "connect_timeout", 1),
    ("download", "file_deadline_min_s", 1), ("download", "pull_deadline_s", 1),
    ("fallback", "retry_preferred_after_s", 1), ("fallback", "first_load_deadline_s", 1),
    ("embedding", "keep_alive_s", 1), ("embedding", "max_batch_wait_ms", 0.001),
]


@pytest.mark.parametrize(("text", "seconds"), [
    ("24h", 86_400), ("30m", 1800), ("6h", 21_600), ("90s", 90), ("7d", 604_800), ("1h30m", 5400),
    ("250ms", 0.25), (" 2H ", 7200), ("1.5h", 5400), ("1w", 604_800)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("section", "key", "unit"), DURATIONS)
def test_every_duration_setting_takes_the_spec_form_and_numbers(section: str, key: str, unit: float) -> None:
    value = "30s" if key in ("backoff_base", "connect_timeout", "max_batch_wait_ms") else "30m"
    seconds = 30 if value == "30s" else 1800
    if key == "max_batch_wait_ms":
        value, seconds = "2s", 2  # the limit is 10 s
    got = getattr(getattr(load_settings({section: {key: value}}), section), key)
    assert got == pytest.approx(seconds / unit)
    assert getattr(getattr(load_settings({section: {key: 7}}), section), key) == 7  # numbers: the field's unit


@pytest.mark.parametrize("bad", ["soon", "6x", "1h and a bit", "", "-5m"])
def test_a_bad_duration_names_the_key_and_the_forms(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"model_cache": {"validation_interval": bad}})
    assert info.value.key == "model_cache.validation_interval"
    assert "'24h'" in str(info.value) or "greater than" in str(info.value)


def test_idle_days_and_remote_timeouts_take_durations_too() -> None:
    s = load_settings({"model_cache": {"max_idle_days": "2w"},
                       "remote": [{"url": "http://127.0.0.1:9/v1", "model": "m", "timeout_s": "90s"}]})
    assert s.model_cache.max_idle_days == 14 and s.remote[0].timeout_s == 90
    assert load_settings({"model_cache": {"max_idle_days": "12h"}}).model_cache.max_idle_days == 0.5


def test_duration_limits_still_apply() -> None:
    with pytest.raises(ConfigError, match="less than or equal to 3600"):
        load_settings({"download": {"backoff_max": "2h"}})


def test_spec_keys_and_their_defaults() -> None:
    s = Settings()
    assert (s.download.enabled, s.download.auto_download, s.download.compression, s.download.chunk_size_kb) == (
        True, True, True, 1024)
    assert (s.model_cache.validation_on_startup, s.fallback.bundled_models_only) == (False, False)
    assert (s.monitoring.enabled, s.monitoring.metrics_port, s.monitoring.metrics_host) == (False, None, "127.0.0.1")


@pytest.mark.parametrize(("config", "key", "text"), [
    ({"fallback": {"bundled_models_only": True, "bundled": False}}, "fallback", "needs bundled: true"),
    ({"monitoring": {"metrics_port": 9090}}, "monitoring", "needs enabled: true"),
    ({"monitoring": {"alerts": True}}, "monitoring.alerts", "allowed: enabled, metrics_host, metrics_port"),
    ({"download": {"chunk_size_kb": 0}}, "download.chunk_size_kb", "greater than or equal to 4"),
    ({"monitoring": "on"}, "monitoring", "mapping"),
])
def test_spec_keys_refuse_what_they_cannot_do(config: dict, key: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert info.value.key == key and text in str(info.value)


def test_profiles_say_what_the_spec_examples_say() -> None:
    dev, prod, offline = (load_settings(profile=name) for name in ("dev", "prod", "offline"))
    assert dev.model_cache.validation_interval == 3600 and dev.download.auto_download and dev.download.enabled
    assert prod.model_cache.validation_interval == 86_400 and prod.model_cache.validation_on_startup
    assert not prod.download.auto_download and prod.download.enabled and prod.download.backoff_max == 60
    assert prod.fallback.strategy == "strict" and prod.model_cache.cleanup_policy == "manual"
    assert offline.offline and not offline.download.enabled and offline.fallback.bundled


@pytest.mark.parametrize("name", ["dev", "prod", "offline"])
def test_spec_example_configs_load(name: str) -> None:
    settings = load_settings(EXAMPLES / f"{name}.yaml")
    assert settings.profile == name


def test_dev_example_means_what_it_says() -> None:
    s = load_settings(EXAMPLES / "dev.yaml")
    assert (s.model_cache.max_size_gb, s.model_cache.cleanup_policy, s.model_cache.validation_interval) == (
        5, "lru", 3600)
    assert s.download.auto_download and s.embedding.keep_alive_s == 1800
    assert dimension_warnings(s) == []  # a 384-d fallback for a 384-d model: usable
    plan = TierPlan(s.fallback, s.fallback.strategy, get_registry().get)
    tiers = {t.name: t for t in plan.tiers(s.model, s.fallback.models)}
    assert tiers["fallback:all-MiniLM-L12-v2"].enabled


def test_prod_example_warns_that_its_fallbacks_are_disabled(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        s = load_settings(EXAMPLES / "prod.yaml")
    assert s.model == "all-mpnet-base-v2" and s.model_cache.validation_interval == 86_400
    assert not s.download.auto_download and s.download.pull_deadline_s == 21_600
    assert s.monitoring.enabled and s.monitoring.metrics_port == 9090
    warned = [r.getMessage() for r in caplog.records if "dimension check" in r.getMessage()]
    assert len(warned) == 1
    for text in ("all-MiniLM-L6-v2 (384 dims)", "bundled-mini (384 dims)", "768 dims", "keyword mode",
                 "allow_dimension_mismatch: true"):
        assert text in warned[0]
    # and that is what the chain does: both fallback tiers disabled, keyword the only one left
    plan = TierPlan(s.fallback, s.fallback.strategy, get_registry().get)
    tiers = plan.tiers(s.model, s.fallback.models)
    enabled = [t.name for t in tiers if t.enabled]
    assert enabled == ["preferred", "keyword"], [(t.name, t.reason) for t in tiers]


def test_the_fixes_silence_the_warning() -> None:
    base = {"model": "all-mpnet-base-v2", "fallback": {"models": ["all-MiniLM-L6-v2"]}}
    assert dimension_warnings(load_settings(base))
    assert not dimension_warnings(load_settings({**base, "fallback": {**base["fallback"],
                                                                      "allow_dimension_mismatch": True}}))
    assert not dimension_warnings(load_settings({**base, "fallback": {"models": ["msmarco-distilbert-base-v4"],
                                                                      "bundled": False}}))


def test_offline_example_serves_only_the_bundled_model() -> None:
    s = load_settings(EXAMPLES / "offline.yaml")
    assert s.offline and not s.download.enabled and s.fallback.bundled_models_only
    assert s.model_cache.validation_interval == 21_600
    plan = TierPlan(s.fallback, s.fallback.strategy, get_registry().get)
    tiers = plan.tiers(s.model, ["all-MiniLM-L12-v2"])
    assert [t.name for t in tiers if t.enabled] in (["bundled", "keyword"], ["keyword"])  # bundled: if installed
    assert all(t.kind in ("bundled", "keyword") for t in tiers if t.enabled)
    preferred = next(t for t in tiers if t.name == "preferred")
    assert not preferred.enabled and "bundled_models_only" in (preferred.reason or "")
    assert plan.dims == 384
