"""The shipped profiles load; unknown keys and bad values are errors naming the key and what is allowed."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from modelcache.errors import ConfigError
from modelcache.settings import Settings, load_settings

PROFILES = ("dev", "prod", "offline")


@pytest.mark.parametrize("name", PROFILES)
def test_profile_file_is_valid_on_its_own(name: str) -> None:
    data = yaml.safe_load(resources.files("modelcache").joinpath(f"data/profiles/{name}.yaml").read_text())
    settings = Settings.model_validate(data)  # strict: extra keys would fail here
    assert settings.profile == name


def test_profiles_apply_their_values() -> None:
    dev, prod, offline = (load_settings(profile=name) for name in PROFILES)
    assert (dev.profile, dev.offline, dev.fallback.strategy, dev.model_cache.validation_interval) == (
        "dev", False, "auto", 3600)
    assert (prod.fallback.strategy, prod.model_cache.cleanup_policy, prod.download.retries) == ("strict", "manual", 8)
    assert offline.offline is True and offline.fallback.bundled and offline.fallback.keyword


def test_profile_from_the_environment_and_file_values_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "modelcache.yaml"
    config.write_text("model_cache:\n  cleanup_policy: lru\n  max_size_gb: 2.5\n")
    monkeypatch.setenv("MODELCACHE_PROFILE", "prod")
    monkeypatch.setenv("MODELCACHE_CONFIG", str(config))
    settings = load_settings()
    assert settings.profile == "prod" and settings.fallback.strategy == "strict"  # from the profile
    assert settings.model_cache.cleanup_policy == "lru" and settings.model_cache.max_size_gb == 2.5  # the file wins


def test_unknown_profile_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="allowed: dev, prod, offline") as info:
        load_settings({"profile": "staging"})
    assert info.value.key == "profile"


@pytest.mark.parametrize(("config", "key", "allowed"), [
    ({"model_cache": {"cleanup_policy": "random"}}, "model_cache.cleanup_policy", ["'lru'", "'fifo'", "'manual'"]),
    ({"fallback": {"strategy": "best"}}, "fallback.strategy", ["'auto'", "'manual'", "'strict'"]),
    ({"embedding": {"backend": "tensorflow"}}, "embedding.backend", ["'torch'", "'onnx'", "'auto'"]),
    ({"download": {"retries": -1}}, "download.retries", ["greater than or equal to 0"]),
    ({"model_cache": {"max_size_gb": 0}}, "model_cache.max_size_gb", ["greater than 0"]),
    ({"model_cache": {"parallel_downloads": 99}}, "model_cache.parallel_downloads", ["less than or equal to 32"]),
    ({"embedding": {"batch_size": "big"}}, "embedding.batch_size", ["integer"]),
    ({"offline": "maybe"}, "offline", ["boolean"]),
])
def test_bad_values_name_key_and_allowed_values(config: dict, key: str, allowed: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert info.value.key == key
    assert f"config {key!r}" in str(info.value)
    for text in allowed:
        assert text in str(info.value)


@pytest.mark.parametrize(("config", "key", "some_allowed"), [
    ({"model_cache": {"max_size": 1}}, "model_cache.max_size", ["max_size_gb", "max_models", "cleanup_policy"]),
    ({"download": {"mirrors": []}}, "download.mirrors", ["endpoints", "retries"]),
    ({"fallback": {"model": "x"}}, "fallback.model", ["models", "strategy", "allow_dimension_mismatch"]),
    ({"embeddings": {}}, "embeddings", ["embedding", "model_cache", "download", "fallback"]),
])
def test_unknown_keys_name_key_and_allowed_keys(config: dict, key: str, some_allowed: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert info.value.key == key
    message = str(info.value)
    assert "allowed" in message
    for name in some_allowed:
        assert name in message


def test_bad_yaml_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("model_cache: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(config)
    config.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_settings(config)


def test_yaml_file_with_every_section(tmp_path: Path) -> None:
    config = tmp_path / "modelcache.yaml"
    config.write_text(
        "model: all-MiniLM-L6-v2\noffline: false\n"
        "model_cache: {max_size_gb: 5, max_models: 3, cleanup_policy: fifo, validation_interval: 60,\n"
        "              download_timeout: 30, parallel_downloads: 2}\n"
        "download: {retries: 2, endpoints: ['http://mirror.internal'], connect_timeout: 5}\n"
        "fallback: {models: [bundled-mini], strategy: manual, allow_dimension_mismatch: false}\n"
        "embedding: {batch_size: 16, max_batch_wait_ms: 2, queue_size: 100}\n")
    s = load_settings(config)
    assert (s.model_cache.max_models, s.model_cache.cleanup_policy, s.download.retries) == (3, "fifo", 2)
    assert s.endpoints == ["http://mirror.internal"] and s.embedding.queue_size == 100
