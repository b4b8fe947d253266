"""The cache budget: eviction order per policy, pinned models, ensure_room, housekeeping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from modelcache.cache import budget
from modelcache.cache.lockfile import LockEntry, Lockfile
from modelcache.cache.store import CacheStore, repo_folder
from modelcache.settings import load_settings

MB = 1024 * 1024
OLD = time.time() - 3600


def make_mgr(root: Path, **model_cache) -> SimpleNamespace:
    """What budget needs of a ModelManager: settings, store, lockfile."""
    store = CacheStore(root, read_only=False)
    return SimpleNamespace(settings=load_settings({"model_cache": model_cache}), store=store,
                           lockfile=Lockfile(store.state_dir / "lock.json"))


def add_repo(mgr: SimpleNamespace, repo_id: str, size_mb: float, last_access: float, downloaded_at: float,
             pinned: bool = False) -> None:
    d = mgr.store.repo_dir(repo_id)
    blob = d / "blobs" / ("a" * 64)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x" * int(size_mb * MB))
    commit = "c" * 40
    (d / "snapshots" / commit).mkdir(parents=True)
    os.symlink("../../blobs/" + "a" * 64, d / "snapshots" / commit / "model.safetensors")
    (d / "refs").mkdir()
    (d / "refs" / "main").write_text(commit)
    meta = {"last_access": last_access, "downloaded_at": downloaded_at, "pinned": pinned, "access_count": 1}
    (d / "modelcache.json").write_text(json.dumps(meta))
    mgr.lockfile.set(LockEntry(repo_id, "main", commit, {}))


@pytest.fixture
def mgr(tmp_path: Path) -> SimpleNamespace:
    m = make_mgr(tmp_path / "cache", max_size_gb=3 * MB / budget.GB, cleanup_policy="lru")
    # a: oldest download, most recently used; b: newest download, least recently used
    add_repo(m, "org/a", 1, last_access=300, downloaded_at=100)
    add_repo(m, "org/b", 1, last_access=200, downloaded_at=300)
    add_repo(m, "org/c", 1, last_access=250, downloaded_at=200)
    return m


def cached(m: SimpleNamespace) -> set[str]:
    return {r.repo_id for r in m.store.repos()}


def test_within_budget_plans_nothing(mgr: SimpleNamespace) -> None:
    p = budget.plan(mgr)
    assert p.evict == [] and not p.over_budget and p.size_before == 3 * MB and p.models_before == 3


def test_lru_evicts_least_recently_used(mgr: SimpleNamespace) -> None:
    p = budget.plan(mgr, needed=MB // 2, for_repo="org/new")
    assert [e["repo_id"] for e in p.evict] == ["org/b"]
    assert p.size_after == 2 * MB


def test_fifo_evicts_oldest_download(mgr: SimpleNamespace) -> None:
    p = budget.plan(mgr, needed=MB // 2, policy="fifo")
    assert [e["repo_id"] for e in p.evict] == ["org/a"]


def test_max_models_counts_the_new_repo(mgr: SimpleNamespace) -> None:
    assert budget.plan(mgr, max_models=3, max_size_gb=1).evict == []
    p = budget.plan(mgr, max_models=3, max_size_gb=1, for_repo="org/new")
    assert [e["repo_id"] for e in p.evict] == ["org/b"]
    # an update of a repo already cached needs no new slot
    assert budget.plan(mgr, max_models=3, max_size_gb=1, for_repo="org/a").evict == []


def test_pinned_never_evicted(mgr: SimpleNamespace) -> None:
    budget.set_pinned(mgr.store, "org/b")
    p = budget.plan(mgr, needed=MB // 2)
    assert [e["repo_id"] for e in p.evict] == ["org/c"]
    budget.set_pinned(mgr.store, "org/a")
    budget.set_pinned(mgr.store, "org/c")
    p = budget.plan(mgr, needed=MB // 2)
    assert p.over_budget and p.evict == [] and "pinned: org/a, org/b, org/c" in p.reason
    budget.set_pinned(mgr.store, "org/b", False)
    assert [e["repo_id"] for e in budget.plan(mgr, needed=MB // 2).evict] == ["org/b"]


def test_pin_needs_a_cached_repo(mgr: SimpleNamespace) -> None:
    with pytest.raises(FileNotFoundError, match="org/nope is not in the cache"):
        budget.set_pinned(mgr.store, "org/nope")


def test_ensure_room_evicts_first(mgr: SimpleNamespace) -> None:
    evicted = budget.ensure_room(mgr, MB // 2, "org/new")
    assert evicted == ["org/b"]
    assert cached(mgr) == {"org/a", "org/c"}
    assert [p.repo_id for p in mgr.lockfile.entries()] == ["org/a", "org/c"]  # its pin went with it
    assert budget.ensure_room(mgr, MB // 2, "org/new") == []  # fits now


def test_ensure_room_fails_with_the_numbers(mgr: SimpleNamespace) -> None:
    for repo in ("org/a", "org/b", "org/c"):
        budget.set_pinned(mgr.store, repo)
    with pytest.raises(budget.BudgetExceededError) as info:
        budget.ensure_room(mgr, 2 * MB, "org/new")
    msg = str(info.value)
    assert f"{3 * MB:,} bytes cached + {2 * MB:,} needed" in msg and "max_size_gb" in msg
    assert info.value.needed == 2 * MB and info.value.current == 3 * MB and isinstance(info.value, OSError)
    assert cached(mgr) == {"org/a", "org/b", "org/c"}  # nothing evicted for nothing


def test_manual_policy_never_evicts(tmp_path: Path) -> None:
    m = make_mgr(tmp_path / "cache", max_models=1, cleanup_policy="manual")
    add_repo(m, "org/a", 1, 1, 1)
    with pytest.raises(budget.BudgetExceededError, match="manual"):
        budget.ensure_room(m, 10, "org/new")
    add_repo(m, "org/b", 1, 2, 2)
    with pytest.raises(budget.BudgetExceededError, match="2 models \\(max_models 1\\)"):
        budget.prune(m)
    assert cached(m) == {"org/a", "org/b"}


def test_no_budget_is_a_no_op(tmp_path: Path) -> None:
    m = make_mgr(tmp_path / "cache")
    add_repo(m, "org/a", 1, 1, 1)
    assert budget.ensure_room(m, 10**15, "org/new") == []


def test_skips_a_repo_locked_by_another_process(mgr: SimpleNamespace) -> None:
    """A model being pulled right now (its lock held) is not evicted from under the puller."""
    lock = mgr.store.state_dir / "locks" / f"{repo_folder('org/b')}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    code = ("import sys, time; from filelock import FileLock\n"
            f"l = FileLock({str(lock)!r}); l.acquire(); print('locked', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(budget.BudgetExceededError, match="in use by another process"):
            budget.ensure_room(mgr, MB // 2, "org/new")
        assert "org/b" in cached(mgr)
    finally:
        holder.kill()
        holder.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_housekeeping_finds_partials_and_quarantine(mgr: SimpleNamespace) -> None:
    staging = mgr.store.state_dir / "staging"
    dead_old = staging / f"{dead_pid()}-aaaa"
    dead_young = staging / f"{dead_pid()}-bbbb"
    alive_old = staging / f"{os.getpid()}-cccc"
    for d in (dead_old, dead_young, alive_old):
        (d / "dl1").mkdir(parents=True)
        (d / "dl1" / "model.safetensors").write_bytes(b"p" * 1000)
    for d in (dead_old, alive_old):
        for p in (d, d / "dl1", d / "dl1" / "model.safetensors"):
            os.utime(p, (OLD, OLD))
    incomplete = mgr.store.repo_dir("org/a") / "blobs" / ("f" * 64 + ".incomplete")
    incomplete.write_bytes(b"i" * 10)
    os.utime(incomplete, (OLD, OLD))
    fresh_incomplete = mgr.store.repo_dir("org/a") / "blobs" / ("e" * 64 + ".incomplete")
    fresh_incomplete.write_bytes(b"i" * 10)
    part = mgr.store.partial_path("org/b", "d" * 64)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"r" * 5)
    os.utime(part, (OLD, OLD))
    fresh_part = mgr.store.partial_path("org/b", "9" * 64)
    fresh_part.write_bytes(b"r" * 5)
    q = mgr.store.repo_dir("org/c") / "quarantine" / "20240101T000000-abc-model.safetensors"
    q.parent.mkdir()
    q.write_bytes(b"q" * 100)

    dry = budget.prune(mgr, dry_run=True)
    assert [x["path"] for x in dry["partials"]] == [str(dead_old), str(part), str(incomplete)]
    assert [x["kind"] for x in dry["partials"]] == ["staging", "resumable", "incomplete"]
    assert [x["path"] for x in dry["quarantined"]] == [str(q)]
    assert dry["freed"] == 1000 + 5 + 10 + 100 and dry["evict"] == []
    assert dead_old.exists() and incomplete.exists() and q.exists()  # dry run touched nothing

    out = budget.prune(mgr)
    assert out["applied"]["partials"] == 3 and out["applied"]["quarantined"] == 1
    assert not dead_old.exists() and not incomplete.exists() and not q.exists() and not part.exists()
    assert dead_young.exists() and alive_old.exists() and fresh_incomplete.exists() and fresh_part.exists()
    assert cached(mgr) == {"org/a", "org/b", "org/c"}


def test_prune_applies_the_plan(mgr: SimpleNamespace) -> None:
    dry = budget.prune(mgr, dry_run=True, max_models=1)
    assert [e["repo_id"] for e in dry["evict"]] == ["org/b", "org/c"] and dry["models_after"] == 1
    assert cached(mgr) == {"org/a", "org/b", "org/c"}
    out = budget.prune(mgr, max_models=1)
    assert out["applied"]["evicted"] == ["org/b", "org/c"] and out["applied"]["freed"] == 2 * MB
    assert cached(mgr) == {"org/a"}
    assert not any((mgr.store.state_dir / "trash").iterdir())


def test_eviction_is_counted_in_metrics(mgr: SimpleNamespace) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from modelcache import metrics

    registry = prometheus_client.CollectorRegistry()
    metrics.enable(registry)
    try:
        budget.prune(mgr, max_models=2)
    finally:
        metrics.disable()
    assert registry.get_sample_value("modelcache_cache_evictions_total", {"policy": "lru"}) == 1.0


def test_a_puller_is_enough_for_ensure_room(tmp_path: Path) -> None:
    """download.py calls ``ensure_room(self, ...)`` from inside the Puller."""
    from modelcache.manager import ModelManager

    real = ModelManager(load_settings({"model_cache": {"directory": str(tmp_path / "cache"), "max_models": 1}}))
    add_repo(real, "org/a", 1, 1, 1)
    assert budget.ensure_room(real.puller, 10, "org/new") == ["org/a"]
    assert cached(real) == set() and real.lockfile.entries() == []
