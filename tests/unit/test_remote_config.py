"""The ``remote:`` config (YAML, validation, redaction) and the chain's order; no server needed."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import pytest

from modelcache.backends.remote import endpoint_of, parse_retry_after, server_label
from modelcache.errors import ConfigError
from modelcache.serving.service import EmbeddingService
from modelcache.settings import RemoteSection, load_settings

YAML = """
model: all-MiniLM-L6-v2
remote:
  - url: http://gpu-box:8000/v1/
    model: sentence-transformers/all-MiniLM-L6-v2
    token: sk-remote-secret
    timeout_s: 2.5
    batch_size: 64
  - url: http://user:pw@tei.internal:8080
    model: all-MiniLM-L6-v2
    api: tei
"""


def test_yaml_remote_list(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(YAML)
    settings = load_settings(path)
    first, second = settings.remote
    assert (first.url, first.api, first.timeout_s, first.batch_size) == ("http://gpu-box:8000/v1", "openai", 2.5, 64)
    assert first.token is not None and first.token.get_secret_value() == "sk-remote-secret"
    assert second.api == "tei" and second.token is None and second.timeout_s == 10.0
    shown = str(settings.redacted())
    assert "sk-remote-secret" not in shown and "pw@" not in shown and "***@tei.internal" in shown
    assert endpoint_of(first) == "http://gpu-box:8000/v1/embeddings"
    assert endpoint_of(second) == "http://user:pw@tei.internal:8080/embed"
    assert server_label(first) == "remote:gpu-box:8000/sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.parametrize("entry, key, fix", [
    ({"url": "http://x", "model": "m", "tokn": "t"}, "remote.0.tokn", "allowed: api, batch_size, model"),
    ({"url": "http://x", "model": "m", "api": "grpc"}, "remote.0.api", "'openai' or 'tei'"),
    ({"url": "ftp://x", "model": "m"}, "remote.0.url", "http:// or https://"),
    ({"url": "http://x"}, "remote.0.model", "Field required"),
    ({"url": "http://x", "model": "m", "timeout_s": 0}, "remote.0.timeout_s", "greater than 0"),
])
def test_bad_entries_name_the_key_and_the_fix(entry: dict, key: str, fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"remote": [entry]})
    assert info.value.key == key and fix in str(info.value)


def test_remote_tiers_come_first_and_once() -> None:
    entry = {"url": "http://127.0.0.1:9/v1", "model": "m"}
    svc = EmbeddingService({"remote": [entry, entry, {**entry, "url": "http://127.0.0.1:10/v1"}], "offline": True})
    assert [t.kind for t in svc.tiers] == ["remote", "remote", "preferred", "bundled", "keyword"]
    assert [t.name for t in svc.tiers[:2]] == ["remote:127.0.0.1:9/m", "remote:127.0.0.1:10/m"]
    strict = EmbeddingService({"remote": [entry], "fallback": {"strategy": "strict"}, "offline": True})
    assert strict.tiers[0].kind == "remote"  # kept: used only when the probe puts it in the model's space


def test_from_options_takes_remote_entries() -> None:
    svc = EmbeddingService.from_options(remote=[RemoteSection(url="http://127.0.0.1:9/v1", model="m")],
                                        offline=True)
    assert svc.tiers[0].name == "remote:127.0.0.1:9/m"


def test_retry_after_forms() -> None:
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("nan") is None
    assert parse_retry_after("-5") == 0.0 and parse_retry_after("1e9") == 3600.0
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 <= parse_retry_after(in_a_minute) <= 61
