"""The validation report: a status per file (Valid / Invalid / Missing / Corrupted / Unknown) in
`modelcache verify` (text and --json), the performance test of `verify --full`, and `doctor`
naming when each model is next due for re-validation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelcache.cache import validation as vs
from modelcache.ops.cli.common import app
from tests.support.hub import TINY_REPO, LocalHub


@pytest.fixture
def cached(hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MODELCACHE_CACHE_DIR", str(cache))
    monkeypatch.setenv("MODELCACHE_ENDPOINTS", hub.endpoint)
    (tmp_path / "c.yaml").write_text(f"model: {TINY_REPO}\nfallback: {{bundled: false}}\n"
                                     "model_cache: {validation_interval: 6h}\n")
    monkeypatch.setenv("MODELCACHE_CONFIG", str(tmp_path / "c.yaml"))
    result = CliRunner().invoke(app, ["pull", TINY_REPO, "--json"])
    assert result.exit_code == 0, result.output
    return cache / "models--tiny-org--tiny-st"


def verify(*args: str, code: int = 0) -> dict:
    result = CliRunner().invoke(app, ["verify", TINY_REPO, *args, "--json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)["models"][0]


def test_statuses_per_file_in_json_and_text(cached: Path) -> None:
    report = verify()
    assert report["validation_status"] == "Valid" and set(report["status"].values()) == {"Valid"}
    assert sorted(report["status"]) == sorted(report["checked"])

    snapshot = next((cached / "snapshots").iterdir())
    weights = snapshot / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.resolve().write_bytes(bytes(data))
    (snapshot / "tokenizer_config.json").resolve().unlink()
    report = verify("--full", code=1)
    assert report["status"]["model.safetensors"] == "Corrupted"
    assert report["status"]["tokenizer_config.json"] == "Missing"
    assert report["status"]["config.json"] == "Valid"
    assert report["validation_status"] == "Corrupted" and report["performance"] is None  # no perf test on bad files
    from modelcache.cache.store import CacheStore

    assert CacheStore(cached.parent).read_meta(TINY_REPO)["validation_status"] == "Corrupted"

    text = CliRunner().invoke(app, ["verify", TINY_REPO]).output
    assert "Missing" in text or "Corrupted" in text  # quarantined files are reported again as missing


def test_full_verify_reports_the_performance_test(cached: Path) -> None:
    report = verify("--full")
    perf = report["performance"]
    assert perf["load_s"] > 0 and perf["embed_s"] > 0 and perf["texts"] == 16
    assert perf["model_memory_bytes"] > 0 and perf["rss_bytes"] > 0
    text = CliRunner().invoke(app, ["verify", TINY_REPO, "--full"]).output
    assert "performance: load" in text and "model memory" in text and "Valid" in text


def test_doctor_reports_when_validation_is_due(cached: Path) -> None:
    from modelcache.cache.store import CacheStore

    def validation() -> dict:
        result = CliRunner().invoke(app, ["doctor", "--no-network", "--no-load", "--json"])
        return next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "validation")

    check = validation()
    assert check["data"]["due"] == [] and 0 < check["data"]["next_due_s"] <= 6 * 3600
    assert "next due in" in check["detail"]
    CacheStore(cached.parent).update_meta(TINY_REPO, last_validated=time.time() - 7 * 3600)  # the old format
    check = validation()
    assert check["data"]["due"] == [TINY_REPO] and "due now" in check["detail"]
    # and the next load re-hashes it (periodic validation on load when due)
    report = verify()
    assert "validation_interval" in report["due"] and sorted(report["hashed"]) == sorted(report["checked"])


@pytest.mark.parametrize(("check", "status"), [
    ("exists", "Missing"), ("size", "Corrupted"), ("sha256", "Corrupted"), ("sha256 (registry)", "Corrupted"),
    ("git-sha1", "Corrupted"), ("format", "Invalid"), ("functional", "Invalid")])
def test_status_of_each_failed_check(check: str, status: str) -> None:
    assert vs.file_status(check) == status


def test_a_model_is_as_bad_as_its_worst_file() -> None:
    assert vs.overall({"a": "Valid", "b": "Unknown"}) == "Unknown"
    assert vs.overall({"a": "Valid", "b": "Invalid", "c": "Corrupted"}) == "Corrupted"
    assert vs.overall({}) == "Unknown"
