"""The one way a verified snapshot becomes visible in the cache: pull, install and bundle import.

Each caller first moves every verified file into ``blobs/`` (``CacheStore.install_blob``) while
holding the repo lock; then :func:`publish` — still under that lock — links the snapshot
(all at once), writes the ref, writes the lockfile entry, and records the verify stamps and the
metadata. Readers see either the old state or the whole new snapshot, never part of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from modelcache.cache.integrity import FileExpectation, StatStamp
from modelcache.cache.lockfile import LockEntry, Lockfile
from modelcache.cache.store import CacheStore, iso_now


def publish(store: CacheStore, lockfile: Lockfile, *, repo_id: str, revision: str, commit: str,
            files: dict[str, FileExpectation], staging: Path, source: str, verified: Iterable[str],
            lock: bool = True) -> Path:
    """Publish ``files`` (their blobs already in place) as ``snapshots/<commit>``; returns its path.

    ``verified`` names the files whose blobs were hashed just now: their stat stamps are
    recorded so a warm ``verify`` need not hash them again. ``lock`` False (an any-file pull
    with ``--include``, a bundle exported without a lock entry) leaves the lockfile alone. The caller holds
    ``store.lock(repo_id)``.
    """
    snapshot = store.publish_snapshot(repo_id, commit, files, staging)
    store.write_ref(repo_id, revision, commit)
    if lock:
        lockfile.set(LockEntry(repo_id, revision, commit, files))
    stamps = {p: StatStamp.of(store.blob_path(repo_id, files[p].blob_name)).as_list() for p in verified}
    meta = store.read_meta(repo_id)
    stamped = meta.get("verified", {})
    stamped.setdefault(commit, {}).update(stamps)
    now = iso_now()
    store.update_meta(repo_id, model_id=repo_id, downloaded_at=now, source_endpoint=source,
                      size=sum(e.size or 0 for e in files.values()), file_count=len(files), revision=revision,
                      commit=commit, verified=stamped, last_validated=now, validation_status="Valid",
                      access_count=int(meta.get("access_count") or 0))
    return snapshot


__all__ = ["publish"]
