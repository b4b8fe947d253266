"""Reliability and security scenarios (issue 6): faults, abuse, bad input; nothing lost.

Each test carries ``@pytest.mark.scenario("Rn")`` and records its figures with
``record_property``; ``benchmarks/reliability_report.py`` runs this package plus the R-tests of
``tests/integration/test_pull.py`` and prints the table. Helpers shared by the modules live here.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from modelcache.manager import ModelManager
from modelcache.registry import ModelSpec
from modelcache.settings import Settings, load_settings
from tests.support.hub import TINY_REPO

ROOT = Path(__file__).resolve().parents[2]
FAST_RETRY = {"retries": 3, "backoff_base": 0.05, "backoff_max": 0.2}


def settings(endpoints: list[str], config: dict | None = None, **download) -> Settings:
    """Settings for the local Hub with fast retries; ``config`` adds other sections."""
    return load_settings({**(config or {}), "download": {"endpoints": endpoints, **FAST_RETRY, **download}})


def manager(endpoints: list[str], config: dict | None = None, **download) -> ModelManager:
    return ModelManager(settings(endpoints, config, **download))


def tiny(dims: int = 32, repo_id: str = TINY_REPO, name: str = "tiny") -> ModelSpec:
    return ModelSpec(name=name, repo_id=repo_id, dims=dims, custom=True)


def leftovers(root: Path) -> dict[str, list[str]]:
    """What a failed or interrupted write must not leave in a cache: partial files (``*.incomplete``,
    ``*.part``, our ``*.tmp``), staging directories, trash, and snapshot links without a blob."""
    root = Path(root)
    out: dict[str, list[str]] = {"incomplete": [], "staging": [], "trash": [], "dangling": []}
    if not root.exists():
        return out
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.name.endswith((".incomplete", ".part", ".tmp")):
            out["incomplete"].append(rel)
        if p.is_symlink() and "/snapshots/" in f"/{rel}" and not p.exists():
            out["dangling"].append(rel)
    state = root / ".locks" / "modelcache"
    for name in ("staging", "trash"):
        if (state / name).is_dir():
            out[name] = sorted(p.name for p in (state / name).iterdir())
    return out


def blobs_match_their_names(repo_dir: Path) -> list[str]:
    """Blobs whose content does not hash to their name (a partial or corrupt file); [] if all good."""
    bad = []
    blobs = Path(repo_dir) / "blobs"
    if not blobs.is_dir():
        return bad
    for blob in blobs.iterdir():
        data = blob.read_bytes()
        if len(blob.name) == 64:
            ok = hashlib.sha256(data).hexdigest() == blob.name
        else:
            ok = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob.name
        if not ok:
            bad.append(blob.name)
    return bad


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
