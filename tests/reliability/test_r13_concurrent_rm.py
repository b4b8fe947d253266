"""R13: 32 threads embed while another process runs ``modelcache rm`` and ``modelcache prune``.

Must hold: no thread crashes (each either keeps embedding, with the loaded model or a re-pulled
one, or gets a clear ``ModelCacheError``); the disk is never seen half-removed (a visible
snapshot never has a dangling link: ``rm`` renames the whole repo away under its lock); at the
end the repo is entirely gone or entirely there and verifies, and a re-pull verifies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from modelcache.errors import ModelCacheError
from tests.reliability import leftovers, manager, tiny, wait_for
from tests.support.hub import TINY_REPO

THREADS = 32


def _dangling_links(repo_dir: Path) -> list[str]:
    """Links of a visible snapshot whose blob is missing (a half-removed or half-written repo)."""
    bad = []
    try:
        for link in (repo_dir / "snapshots").rglob("*"):
            if link.is_symlink() and not link.exists() and os.path.lexists(link):
                bad.append(str(link.relative_to(repo_dir)))
    except (FileNotFoundError, NotADirectoryError):
        pass  # renamed away while we looked: gone as a whole
    return bad


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelcache", *args, "--json"], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120)


@pytest.mark.scenario("R13")
@pytest.mark.slow
def test_rm_and_prune_in_another_process_while_32_threads_embed(hub, monkeypatch, record_property):
    monkeypatch.setenv("MODELCACHE_ENDPOINTS", hub.endpoint)
    mgr = manager([hub.endpoint])
    spec = tiny()
    mgr.pull(spec)
    repo_dir = mgr.store.repo_dir(TINY_REPO)
    lock = threading.Lock()
    counts: Counter[str] = Counter()
    errors: list[str] = []
    crashes: list[str] = []
    half_states: list[list[str]] = []
    stop = threading.Event()

    def embed(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                vec = mgr.load(spec).encode([f"thread {i} memory {n}"])
                assert vec.shape == (1, 32) and np.all(np.isfinite(vec))
                with lock:
                    counts["embeds"] += 1
            except ModelCacheError as exc:  # a clear error is allowed; say which
                with lock:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                time.sleep(0.01)
            except BaseException:  # noqa: BLE001 - anything else is a crash of the scenario
                with lock:
                    crashes.append(traceback.format_exc())
                return

    def watch() -> None:
        while not stop.is_set():
            if bad := _dangling_links(repo_dir):
                half_states.append(bad)
            time.sleep(0.005)

    workers = [threading.Thread(target=embed, args=(i,), name=f"embed-{i}") for i in range(THREADS)]
    watcher = threading.Thread(target=watch, name="watch")
    t0 = time.perf_counter()
    for t in [*workers, watcher]:
        t.start()
    try:
        assert wait_for(lambda: counts["embeds"] >= 2 * THREADS, timeout=120), (counts, errors[:3], crashes[:1])
        removed = _cli("rm", TINY_REPO)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        after_rm = counts["embeds"]
        assert wait_for(lambda: counts["embeds"] >= after_rm + 2 * THREADS or bool(crashes), timeout=120)
        pruned = _cli("prune", "--max-size-gb", "0.000001", "--yes")
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
        after_prune = counts["embeds"]
        assert wait_for(lambda: counts["embeds"] >= after_prune + 2 * THREADS or bool(crashes), timeout=120)
    finally:
        stop.set()
        for t in [*workers, watcher]:
            t.join(timeout=120)
    seconds = time.perf_counter() - t0
    assert half_states == [], half_states[:3]
    assert json.loads(removed.stdout)["removed"] is True
    # the end state: entirely gone or entirely there (and then it verifies)
    fresh = manager([hub.endpoint])
    if repo_dir.exists():
        assert fresh.verify(spec, full=True).ok
    fresh.pull(spec)
    assert fresh.verify(spec, full=True).ok
    record_property("embeds", counts["embeds"])
    record_property("crashes", len(crashes))
    assert crashes == [], crashes[0]
    trash = mgr.store.state_dir / "trash"
    assert leftovers(mgr.store.root) == {"incomplete": [], "staging": [], "trash": [], "dangling": []}, [
        str(p.relative_to(trash)) for p in trash.rglob("*")]
    record_property("threads", THREADS)
    record_property("clear_errors", len(errors))
    record_property("error_kinds", ",".join(sorted({e.split(":")[0] for e in errors})) or "-")
    record_property("evicted_by_prune", ",".join(json.loads(pruned.stdout)["applied"]["evicted"]) or "-")
    record_property("seconds", round(seconds, 1))
