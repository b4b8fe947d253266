"""Idle cleanup (issue 15): models unused for ``model_cache.max_idle_days`` go, by last access, never a
pinned one; ``modelcache prune`` shows them first (a dry run unless --yes); a pull that writes removes them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelcache.cache.store import CacheStore
from modelcache.ops.cli.common import app
from tests.integration.test_ops_cli import new_repo, repo_dirs, use_cache, write_config
from tests.support.hub import TINY_REPO, LocalHub, files_from_dir

DAY = 86_400


def run(*args: str, code: int | None = 0) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"])
    if code is not None:
        assert result.exit_code == code, f"{args} -> {result.exit_code}\n{result.output}\n{result.exception!r}"
    return json.loads(result.stdout)


def folder(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


@pytest.fixture
def online(hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> LocalHub:
    monkeypatch.setenv("MODELCACHE_ENDPOINTS", hub.endpoint)
    return hub


def last_used(cache: Path, repo_id: str, days_ago: float) -> None:
    """The model was last used ``days_ago`` days ago (what ``store.touch`` records on each load)."""
    CacheStore(cache).update_meta(repo_id, last_access=time.time() - days_ago * DAY)


def test_prune_shows_then_removes_models_unused_past_max_idle_days(
        online: LocalHub, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = use_cache(monkeypatch, tmp_path / "cache")
    idle, pinned_idle = (new_repo(online, f"idle{i}", files_from_dir(tiny_model_dir)) for i in range(2))
    for repo_id in (TINY_REPO, idle.repo_id, pinned_idle.repo_id):
        run("pull", repo_id)
    run("pin", pinned_idle.repo_id)
    last_used(cache, idle.repo_id, 10)
    last_used(cache, pinned_idle.repo_id, 30)
    last_used(cache, TINY_REPO, 2)
    everything = sorted(folder(r) for r in (TINY_REPO, idle.repo_id, pinned_idle.repo_id))

    # no setting: nothing is idle
    assert run("prune")["evict"] == []
    # the default is a dry run: it shows what would go and why, removes nothing
    shown = run("prune", "--max-idle-days", "7")
    assert shown["dry_run"] and [e["repo_id"] for e in shown["evict"]] == [idle.repo_id]
    assert shown["evict"][0]["reason"].startswith("unused for 10.0 days (max_idle_days 7)")
    assert repo_dirs(cache) == everything
    human = CliRunner().invoke(app, ["prune", "--max-idle-days", "7"]).stdout
    assert f"would remove model {idle.repo_id}" in human and "dry run: nothing was removed" in human
    assert repo_dirs(cache) == everything

    # the setting, then --yes: the idle unpinned model goes; the pinned one and the recent one stay
    write_config(tmp_path, monkeypatch, "model_cache: {max_idle_days: 7}\n")
    from modelcache.ops.cli.common import _manager
    from modelcache.ops.health import check_budget

    budget = check_budget(_manager())  # an unused model is no health problem: shown, not degraded
    assert budget.status == "ok" and "1 unused past max_idle_days" in budget.detail
    done = run("prune", "--yes")
    assert done["applied"]["evicted"] == [idle.repo_id]
    assert repo_dirs(cache) == sorted(folder(r) for r in (TINY_REPO, pinned_idle.repo_id))
    assert run("verify", TINY_REPO)["ok"] and run("info", idle.repo_id)["cached"] is False

    # a load counts as a use: the model becomes fresh again
    last_used(cache, TINY_REPO, 8)
    run("embed", "used again", "--model", TINY_REPO)
    assert run("prune")["evict"] == []
    assert run("prune", "--max-idle-days", "0", code=1)["error"] == "ValueError"


def test_a_pull_that_writes_removes_idle_models_and_says_so(
        online: LocalHub, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = use_cache(monkeypatch, tmp_path / "cache")
    old, new = (new_repo(online, f"auto{i}", files_from_dir(tiny_model_dir)) for i in range(2))
    run("pull", old.repo_id)
    last_used(cache, old.repo_id, 40)
    write_config(tmp_path, monkeypatch, "model_cache: {max_idle_days: 30}\n")
    pulled = run("pull", new.repo_id)
    assert [e["repo_id"] for e in pulled["evicted"]] == [old.repo_id]
    assert "max_idle_days 30" in pulled["evicted"][0]["reason"]
    assert repo_dirs(cache) == [folder(new.repo_id)]
    assert run("pull", new.repo_id)["evicted"] == []  # cached: nothing written, nothing evicted
