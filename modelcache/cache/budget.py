"""The cache budget: ``max_size_gb`` / ``max_models``, eviction by policy, and housekeeping.

- ``max_idle_days``: a model not used for that long (``last_access``, else its download date)
  is removed whatever the budget (never a pinned one): on each pull that writes
  (:func:`ensure_room`) and by ``prune`` (which shows it first: a dry run unless ``--yes``).
- Policy ``lru`` evicts the least recently used model first (``last_access``, else the
  download date), ``fifo`` the oldest download, ``manual`` nothing (over budget is an error
  that shows the numbers; you remove models yourself).
- A model marked ``pinned: true`` in its metadata (``modelcache pin MODEL``) is never evicted.
- ``prune`` also removes partial downloads (staging dirs of dead processes, stale resumable
  ``.part`` files, ``*.incomplete`` files, leftover trash) and quarantined files.
- :func:`ensure_room` is what a pull calls before downloading: it evicts first or raises
  :class:`BudgetExceededError` with the numbers.
- :func:`modelcache.cache.diskroom.make_disk_room`: a pull on a full disk, when
  ``model_cache.evict_on_disk_full`` allows it.

Everything is planned first (:func:`plan`) and applied second (:func:`apply`), so a dry run
shows exactly what would go.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout

from modelcache import metrics
from modelcache._util import pid_alive
from modelcache.cache.lockfile import Lockfile
from modelcache.cache.store import CacheStore, host_tag, remove_tree, repo_folder
from modelcache.errors import BudgetExceededError
from modelcache.settings import Settings

log = logging.getLogger("modelcache")

GB = 1024**3
#: a partial file or staging dir younger than this is left alone even if its writer looks
#: dead: a process in another container (its own PID namespace) may still be writing it
PARTIAL_GRACE_S = 300.0


class CacheOwner(Protocol):
    """What the budget works on: a ``ModelManager`` or the ``Puller`` inside it."""

    settings: Settings
    store: CacheStore
    lockfile: Lockfile


@dataclass
class Entry:
    """One cached repo as the budget sees it."""

    repo_id: str
    size: int
    pinned: bool
    last_access: float
    downloaded_at: float
    access_count: int


@dataclass
class Plan:
    """What a prune (or a pull's ``ensure_room``) would do."""

    policy: str
    max_bytes: int | None
    max_models: int | None
    size_before: int
    models_before: int
    max_size_gb: float | None = None
    max_idle_days: float | None = None
    needed: int = 0
    evict: list[dict] = field(default_factory=list)
    partials: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    over_budget: bool = False
    reason: str = ""

    @property
    def freed(self) -> int:
        return sum(x["size"] for x in (*self.evict, *self.partials, *self.quarantined))

    @property
    def size_after(self) -> int:
        return self.size_before - sum(x["size"] for x in self.evict)

    def to_dict(self) -> dict:
        return asdict(self) | {"freed": self.freed, "size_after": self.size_after,
                               "models_after": self.models_before - len(self.evict)}


# -- pinning ------------------------------------------------------------------------------
def set_pinned(store: CacheStore, repo_id: str, pinned: bool = True) -> None:
    """Mark a cached repo as never evicted (or evictable again)."""
    if not store.repo_dir(repo_id).is_dir():
        raise FileNotFoundError(f"{repo_id} is not in the cache {store.root}; pull it first")
    store._require_writable(f"{'pin' if pinned else 'unpin'} {repo_id}")
    store.update_meta(repo_id, pinned=pinned)


# -- inventory ----------------------------------------------------------------------------
def _when(value: Any) -> float | None:
    """A metadata time as a unix timestamp: a number, or an ISO-8601 string."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) or None
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def entries(store: CacheStore) -> list[Entry]:
    out = []
    for repo in store.repos():
        meta = repo.meta
        downloaded = _when(meta.get("downloaded_at")) or _mtime(repo.path)
        out.append(Entry(repo.repo_id, _blobs_size(repo.path), bool(meta.get("pinned")),
                         _when(meta.get("last_access")) or downloaded, downloaded,
                         int(meta.get("access_count", 0))))
    return out


def _blobs_size(repo_dir: Path) -> int:
    """Bytes of complete blobs (partial ``*.incomplete`` files are housekeeping's business)."""
    blobs = repo_dir / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(p.lstat().st_size for p in blobs.iterdir() if not p.name.endswith(".incomplete"))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _tree_size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _newest_mtime(path: Path) -> float:
    newest = _mtime(path)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                pass
    return newest


def partials(store: CacheStore, grace_s: float = PARTIAL_GRACE_S, now: float | None = None) -> list[dict]:
    """Leftovers of interrupted writes, each untouched for ``grace_s`` seconds: staging dirs
    whose process is gone, resumable ``*.part`` downloads (a later pull would resume them;
    pruning gives the space back instead), ``*.incomplete`` files and trash."""
    now = time.time() if now is None else now
    found = []
    staging = store.state_dir / "staging"
    if staging.is_dir():
        here = host_tag()
        for d in sorted(staging.iterdir()):
            pid, _, rest = d.name.partition("-")
            alive = pid.isdigit() and pid_alive(int(pid))
            ours = rest.split("-", 1)[0] == here  # this host and boot: a dead pid is surely gone
            if not alive and (ours or now - _newest_mtime(d) >= grace_s):
                found.append({"path": str(d), "size": _tree_size(d), "kind": "staging"})
    resumable = store.state_dir / "partial"
    if resumable.is_dir():
        for p in sorted(resumable.rglob("*.part")):
            if now - _mtime(p) >= grace_s:
                found.append({"path": str(p), "size": _tree_size(p), "kind": "resumable"})
    trash = store.state_dir / "trash"
    if trash.is_dir():
        for d in sorted(trash.iterdir()):
            if now - _newest_mtime(d) >= grace_s:
                found.append({"path": str(d), "size": _tree_size(d), "kind": "trash"})
    if store.root.is_dir():
        for repo in sorted(store.root.glob("models--*")):
            for p in sorted(repo.rglob("*.incomplete")):
                if now - _mtime(p) >= grace_s:
                    found.append({"path": str(p), "size": _tree_size(p), "kind": "incomplete"})
    return found


def quarantined(store: CacheStore) -> list[dict]:
    out = []
    if store.root.is_dir():
        for qdir in sorted(store.root.glob("models--*/quarantine")):
            repo_id = qdir.parent.name[len("models--"):].replace("--", "/")
            for p in sorted(qdir.iterdir()):
                out.append({"path": str(p), "size": _tree_size(p), "repo_id": repo_id})
    return out


# -- planning -----------------------------------------------------------------------------
def _order(items: list[Entry], policy: str) -> list[Entry]:
    key = (lambda e: (e.last_access, e.downloaded_at)) if policy == "lru" else (lambda e: (e.downloaded_at,))
    return sorted(items, key=key)


def plan(mgr: CacheOwner, needed: int = 0, for_repo: str | None = None, housekeeping: bool = True,
         max_size_gb: float | None = None, max_models: int | None = None, policy: str | None = None,
         max_idle_days: float | None = None, now: float | None = None) -> Plan:
    """What to remove so the cache (plus ``needed`` bytes for ``for_repo``) fits the budget, and
    which models were not used for ``max_idle_days``.

    ``mgr`` is anything with ``.store`` and ``.settings`` (a ModelManager or a Puller). The
    limits default to ``settings.model_cache``; ``for_repo`` and pinned models are never evicted.
    Each eviction says why (``reason``).
    """
    mc = mgr.settings.model_cache
    store: CacheStore = mgr.store
    policy = policy or mc.cleanup_policy
    gb = max_size_gb if max_size_gb is not None else mc.max_size_gb
    limit = int(gb * GB) if gb else None
    max_models = max_models if max_models is not None else mc.max_models
    idle_days = max_idle_days if max_idle_days is not None else mc.max_idle_days
    now = time.time() if now is None else now
    items = entries(store)
    new_repo = bool(for_repo) and not any(e.repo_id == for_repo for e in items)
    p = Plan(policy, limit, max_models, sum(e.size for e in items), len(items), max_size_gb=gb,
             max_idle_days=idle_days, needed=needed)
    if housekeeping:
        p.partials = partials(store)
        p.quarantined = quarantined(store)
    if idle_days:
        for e in _order(items, "lru"):
            idle = (now - e.last_access) / 86_400
            if not e.pinned and e.repo_id != for_repo and idle > idle_days:
                p.evict.append({"repo_id": e.repo_id, "size": e.size, "last_access": e.last_access,
                                "downloaded_at": e.downloaded_at,
                                "reason": f"unused for {idle:.1f} days (max_idle_days {idle_days:g})"})
        idle_gone = {x["repo_id"] for x in p.evict}
        items = [e for e in items if e.repo_id not in idle_gone]
    size = sum(e.size for e in items)
    count = len(items)
    idle_evictions = list(p.evict)

    def over(size_now: int, count_now: int) -> bool:
        return bool((limit is not None and size_now + needed > limit)
                    or (max_models is not None and count_now + (1 if new_repo else 0) > max_models))

    if not over(size, count):
        return p
    if policy == "manual":
        p.over_budget, p.reason = True, "cleanup_policy is 'manual': nothing is evicted automatically"
        return p
    candidates = [e for e in _order(items, policy) if not e.pinned and e.repo_id != for_repo]
    for e in candidates:
        if not over(size, count):
            break
        p.evict.append({"repo_id": e.repo_id, "size": e.size, "last_access": e.last_access,
                        "downloaded_at": e.downloaded_at, "reason": f"over budget (policy {policy})"})
        size -= e.size
        count -= 1
    if over(size, count):
        pinned = [e.repo_id for e in items if e.pinned]
        p.over_budget = True
        p.reason = "evicting every unpinned model would not be enough" + (
            f" (pinned: {', '.join(pinned)})" if pinned else "")
        p.evict = idle_evictions  # never evict for nothing (the idle ones go anyway)
    return p


# -- applying -----------------------------------------------------------------------------
def _evict(mgr: CacheOwner, repo_id: str, lock_timeout: float) -> bool:
    """Remove one repo unless another process holds its lock (it is being pulled right now)."""
    store: CacheStore = mgr.store
    d = store.repo_dir(repo_id)
    if not d.exists():
        return False
    lock_path = store.state_dir / "locks" / f"{repo_folder(repo_id)}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(lock_path), timeout=lock_timeout):
            if not d.exists():
                return False  # removed by another process while we waited for the lock
            trash = store.state_dir / "trash" / f"{d.name}-{uuid.uuid4().hex[:6]}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(d, trash)
    except Timeout:
        log.warning("not evicting %s: another process holds its lock", repo_id)
        return False
    store.drop_derived(d)
    remove_tree(trash)  # retries: a metadata write that raced the rename can land in the trash
    shutil.rmtree(store.state_dir / "partial" / repo_folder(repo_id), ignore_errors=True)
    mgr.lockfile.remove(repo_id)
    return True


def _remove_path(path: str) -> None:
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def apply(mgr: CacheOwner, p: Plan, lock_timeout: float = 2.0) -> dict:
    """Carry out a plan. Returns what was actually removed."""
    mgr.store._require_writable("prune")
    evicted = [e for e in p.evict if _evict(mgr, e["repo_id"], lock_timeout)]
    for item in (*p.partials, *p.quarantined):
        _remove_path(item["path"])
    if evicted:
        metrics.record_eviction(p.policy, len(evicted))
        log.info("evicted %s (policy %s)", ", ".join(e["repo_id"] for e in evicted), p.policy)
    return {"evicted": [e["repo_id"] for e in evicted], "freed": sum(e["size"] for e in evicted)
            + sum(x["size"] for x in (*p.partials, *p.quarantined)),
            "partials": len(p.partials), "quarantined": len(p.quarantined)}


def prune(mgr: CacheOwner, dry_run: bool = False, **limits: Any) -> dict:
    """Enforce the budget and clean up. ``limits`` override ``max_size_gb``, ``max_models``,
    ``policy``. Raises :class:`BudgetExceededError` (after housekeeping) if the cache still
    does not fit."""
    p = plan(mgr, **limits)
    out = p.to_dict() | {"dry_run": dry_run}
    if not dry_run:
        out["applied"] = apply(mgr, p)
    if p.over_budget and not dry_run:
        raise BudgetExceededError(0, p.size_before, p.max_bytes, p.models_before, p.max_models, p.policy, p.reason,
                                  p.max_size_gb)
    return out


def ensure_room(mgr: CacheOwner, needed_bytes: int, repo_id: str | None = None,
                report: list[dict] | None = None) -> list[str]:
    """Before a pull of ``needed_bytes`` into ``repo_id``: evict per policy, or raise
    :class:`BudgetExceededError` with the numbers. A no-op (``[]``) without a budget.

    ``mgr`` is a ModelManager or anything with ``.store``, ``.settings``, ``.lockfile``
    (the Puller qualifies). Returns the evicted repo ids; ``report`` gets ``{"repo_id", "reason"}``
    for each.
    """
    mc = mgr.settings.model_cache
    if mc.max_size_gb is None and mc.max_models is None and mc.max_idle_days is None:
        return []
    p = plan(mgr, needed=needed_bytes, for_repo=repo_id, housekeeping=False)
    if p.over_budget:
        raise BudgetExceededError(needed_bytes, p.size_before, p.max_bytes, p.models_before, p.max_models,
                                  p.policy, p.reason, p.max_size_gb)
    if not p.evict:
        return []
    done = apply(mgr, p)["evicted"]
    if report is not None:
        report.extend({"repo_id": e["repo_id"], "reason": e.get("reason", "")} for e in p.evict
                      if e["repo_id"] in done)
    if len(done) < len(p.evict):
        raise BudgetExceededError(needed_bytes, p.size_before, p.max_bytes, p.models_before, p.max_models,
                                  p.policy, "a model chosen for eviction is in use by another process", p.max_size_gb)
    return done


__all__ = ["BudgetExceededError", "Plan", "Entry", "plan", "apply", "prune", "ensure_room", "set_pinned",
           "entries", "partials", "quarantined"]
