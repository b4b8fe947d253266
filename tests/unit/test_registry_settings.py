"""Registry lookups, spec validation, settings precedence, integrity primitives."""

from __future__ import annotations

import json
import struct
import subprocess

import pytest

from modelcache.cache.integrity import (
    FileExpectation,
    check_format,
    git_blob_sha1,
    verify_file,
)
from modelcache.errors import ConfigError, IntegrityError, UnknownModelError
from modelcache.registry import Registry, get_registry, spec_from_dict
from modelcache.settings import load_settings

SEED_MODELS = {
    "all-MiniLM-L6-v2": 384, "all-mpnet-base-v2": 768, "multilingual-e5-small": 384,
    "msmarco-distilbert-base-v4": 768, "paraphrase-multilingual-mpnet-base-v2": 768,
    "st-codesearch-distilroberta-base": 768, "all-MiniLM-L12-v2": 384,
    "distiluse-base-multilingual-cased-v2": 512, "bge-m3": 1024, "bundled-mini": 384,
}


def test_seed_models_with_dims_and_prompts():
    reg = get_registry()
    for name, dims in SEED_MODELS.items():
        assert reg.get(name).dims == dims
    e5 = reg.get("multilingual-e5-small")
    assert (e5.query_prompt, e5.document_prompt) == ("query: ", "passage: ")
    assert reg.default().name == "all-MiniLM-L6-v2"
    # only the hash we know for sure is in the data file
    assert {s.name for s in reg.specs() if s.sha256} == {"all-MiniLM-L6-v2", "bundled-mini"}


def test_lookup_by_alias_repo_id_and_case():
    reg = get_registry()
    assert reg.get("sentence-transformers/all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"
    assert reg.get("ALL-minilm-l6-V2").name == "all-MiniLM-L6-v2"
    assert reg.get("e5-small").name == "multilingual-e5-small"
    custom = reg.get("some-org/some-model")
    assert custom.custom and custom.repo_id == "some-org/some-model"


def test_local_dir_becomes_custom_spec(tmp_path):
    spec = get_registry().get(str(tmp_path))
    assert spec.custom and spec.local_dir == tmp_path.resolve()


def test_unknown_model_lists_close_matches_and_how_to_register():
    with pytest.raises(UnknownModelError) as err:
        get_registry().get("all-MiniLM-L6")
    assert "all-minilm-l6-v2" in [s.lower() for s in err.value.suggestions]
    assert "register" in str(err.value) and "modelcache list" in str(err.value)


def test_spec_validation_names_the_key():
    with pytest.raises(ConfigError, match="dims"):
        spec_from_dict({"name": "x", "repo_id": "a/b", "dims": -1})
    with pytest.raises(ConfigError, match="colour"):
        spec_from_dict({"name": "x", "repo_id": "a/b", "colour": 1})
    reg = Registry([spec_from_dict({"name": "x", "repo_id": "a/b", "dims": 8, "default": True})])
    assert reg.get("a/b").dims == 8


def test_settings_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_cache: {directory: /from/file}\ndownload: {endpoints: ['http://file']}\n")
    monkeypatch.delenv("MODELCACHE_CACHE_DIR")
    s = load_settings(cfg)
    assert str(s.cache_dir) == "/from/file"  # file beats HF defaults, env MODELCACHE_CACHE_DIR beats file
    monkeypatch.setenv("MODELCACHE_CACHE_DIR", "/from/env")
    monkeypatch.setenv("HF_ENDPOINT", "http://hf-endpoint")
    s = load_settings(cfg)
    assert str(s.cache_dir) == "/from/env" and s.endpoints == ["http://file"]
    monkeypatch.delenv("MODELCACHE_CACHE_DIR")
    assert load_settings().endpoints == ["http://hf-endpoint"]
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    s = load_settings()
    assert s.token_value == "hf_secret_value" and "hf_secret_value" not in json.dumps(s.redacted())
    assert "hf_secret_value" not in repr(s)


def test_settings_errors_name_key_and_allowed_values(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings({"fallback": {"strategy": "sometimes"}})
    assert err.value.key == "fallback.strategy" and "auto" in str(err.value) and "strict" in str(err.value)
    with pytest.raises(ConfigError, match="model_cache.colour"):
        load_settings({"model_cache": {"colour": "red"}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")


def test_git_blob_sha1_matches_git(tmp_path):
    f = tmp_path / "f.json"
    f.write_text('{"a": 1}\n')
    out = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True)
    assert git_blob_sha1(f) == out.stdout.strip()


def _safetensors(path, header: dict, data_len: int):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * data_len)


def test_format_checks(tmp_path):
    good = tmp_path / "model.safetensors"
    _safetensors(good, {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 8)
    check_format(good, "model.safetensors")
    bad = tmp_path / "bad.safetensors"
    _safetensors(bad, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8)
    with pytest.raises(IntegrityError, match="outside the file"):
        check_format(bad, "bad.safetensors")
    broken = tmp_path / "config.json"
    broken.write_text("{nope")
    with pytest.raises(IntegrityError, match="JSON"):
        check_format(broken, "config.json")


def test_verify_file_reports_expected_and_actual(tmp_path):
    f = tmp_path / "vocab.txt"
    f.write_text("hello\n")
    with pytest.raises(IntegrityError) as err:
        verify_file(f, FileExpectation("vocab.txt", size=6, blob_id="0" * 40))
    assert err.value.expected == "0" * 40 and err.value.actual == git_blob_sha1(f)
    with pytest.raises(IntegrityError, match="size"):
        verify_file(f, FileExpectation("vocab.txt", size=7))
