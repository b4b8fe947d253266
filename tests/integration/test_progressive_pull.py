"""Progressive pull (issue 15): configs and tokenizer are fetched and checked first; a broken or
unsupported model fails before any weight byte is fetched (counted at a proxy in front of the local Hub)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelcache.errors import IntegrityError, UnsafeFileError
from modelcache.ops.cli.common import app
from tests.reliability import manager, tiny
from tests.support.fault_proxy import FaultProxy
from tests.support.hub import BROKEN_CONFIG_REPO, TINY_REPO, HubRepo, LocalHub, files_from_dir

WEIGHTS = "model.safetensors"


def weight_gets(proxy: FaultProxy) -> int:
    return proxy.count(method="GET", path_contains=WEIGHTS)


def nothing_published(mgr, repo_id: str) -> None:
    snapshots = mgr.store.repo_dir(repo_id) / "snapshots"
    assert not snapshots.exists() or not any(snapshots.iterdir())
    assert mgr.lockfile.get(repo_id, "main") is None


def test_a_broken_config_fails_before_any_weight_byte(proxy: FaultProxy) -> None:
    mgr = manager([proxy.endpoint])
    with pytest.raises(IntegrityError) as err:
        mgr.pull(tiny(repo_id=BROKEN_CONFIG_REPO, name="broken"))
    assert err.value.file == "config.json" and err.value.check.startswith("format")
    assert "No weights were downloaded" in str(err.value) and "--revision" in str(err.value)
    assert proxy.count(method="GET", path_contains="config.json") >= 1
    assert weight_gets(proxy) == 0
    nothing_published(mgr, BROKEN_CONFIG_REPO)


def test_cli_pull_of_a_broken_config_is_one_clear_error(proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCACHE_ENDPOINTS", proxy.endpoint)
    result = CliRunner().invoke(app, ["pull", BROKEN_CONFIG_REPO, "--json"])
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["error"] == "IntegrityError" and "config.json" in out["message"]
    assert weight_gets(proxy) == 0


def test_the_weights_move_only_after_every_small_file(proxy: FaultProxy, hub: LocalHub) -> None:
    mgr = manager([proxy.endpoint], {"model_cache": {"parallel_downloads": 8}})
    result = mgr.pull(tiny())
    assert WEIGHTS in result.downloaded and len(result.downloaded) > 5
    gets = [path for method, path, _ in proxy.requests if method == "GET" and "/resolve/" in path]
    first_weight = next(i for i, p in enumerate(gets) if p.endswith(WEIGHTS))
    small = {p.rsplit("/resolve/", 1)[1].split("/", 1)[1] for p in gets[:first_weight]}
    assert small == set(result.downloaded) - {WEIGHTS}, (small, result.downloaded)
    assert mgr.verify(tiny(), full=True).ok
    assert set(hub.repos[TINY_REPO].files_at("main")) >= set(result.downloaded)


def _repo(hub: LocalHub, tiny_model_dir: Path, name: str, changes: dict[str, bytes]) -> HubRepo:
    repo = HubRepo(hub.mirrors_dir, f"progressive/{name}-{os.getpid()}-{time.monotonic_ns()}")
    repo.commit({**files_from_dir(tiny_model_dir), **changes}, name)
    return repo


def test_unsupported_models_fail_before_the_weights(proxy: FaultProxy, hub: LocalHub, tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    cases = {
        "remote-code": ({"config.json": json.dumps(config | {"auto_map": {"AutoModel": "modeling.MyModel"}}).encode()},
                        UnsafeFileError, "auto_map"),
        "no-model-type": ({"config.json": json.dumps({k: v for k, v in config.items() if k != "model_type"}).encode()},
                          IntegrityError, "model_type"),
        "pooling": ({"1_Pooling/config.json": json.dumps({"word_embedding_dimension": 32,
                                                          "pooling_mode": "telepathy"}).encode()},
                    IntegrityError, "telepathy"),
        "custom-module": ({"modules.json": json.dumps([{"idx": 0, "name": "0", "path": "", "type":
                                                        "my_package.Encoder"}]).encode()},
                          UnsafeFileError, "my_package.Encoder"),
    }
    mgr = manager([proxy.endpoint])
    for name, (changes, error, text) in cases.items():
        repo = _repo(hub, tiny_model_dir, name, changes)
        proxy.reset()
        with pytest.raises(error) as err:
            mgr.pull(tiny(repo_id=repo.repo_id, name=name))
        assert text in str(err.value), (name, str(err.value))
        assert weight_gets(proxy) == 0, name
        nothing_published(mgr, repo.repo_id)
