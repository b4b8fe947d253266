"""The record of a lock entry that moved: which commit (and embedding space) a ``pull --upgrade`` replaced.

The new weights name a new embedding space, so the old commit and its fingerprint are kept
in the repo metadata (``previous_fingerprints``): stored vectors can then be found and
re-embedded. Disk only; :mod:`modelcache.ops.outdated` finds what could move.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from modelcache.cache.lockfile import Lockfile
from modelcache.cache.store import CacheStore, iso_now
from modelcache.registry import ModelSpec

log = logging.getLogger("modelcache")


def state_before_upgrade(store: CacheStore, lockfile: Lockfile, spec: ModelSpec, revision: str | None,
                         fingerprint: Callable[[ModelSpec, Path], str]) -> dict | None:
    """The locked commit and its fingerprint, taken before a pull moves the lock entry (or None)."""
    revision = revision or spec.revision
    locked = lockfile.get(spec.repo_id, revision)
    if locked is None:
        return None
    snap = store.snapshot_dir(spec.repo_id, locked.commit)
    fp = None
    if snap.is_dir():
        try:
            fp = fingerprint(spec, snap)
        except OSError as exc:
            log.warning("no fingerprint for %s@%s: %s", spec.repo_id, locked.commit[:12], exc)
    return {"commit": locked.commit, "revision": revision, "fingerprint": fp}


def record_upgrade(store: CacheStore, spec: ModelSpec, before: dict | None, commit: str | None,
                   dry_run: bool = False) -> dict | None:
    """After a pull to ``commit``: if the lock entry moved away from ``before``, append the old commit and
    fingerprint to the repo metadata's ``previous_fingerprints``. Returns the record or None."""
    if before is None or commit is None or dry_run or commit == before["commit"]:
        return None
    record = before | {"replaced_by": commit, "replaced_at": iso_now()}
    history = list(store.read_meta(spec.repo_id).get("previous_fingerprints", []))
    history.append(record)
    store.update_meta(spec.repo_id, previous_fingerprints=history)
    log.warning("%s moved from %s to %s: vectors made with fingerprint %s need re-embedding",
                spec.repo_id, before["commit"][:12], commit[:12], before.get("fingerprint"))
    return record


__all__ = ["record_upgrade", "state_before_upgrade"]
