"""A model that verified but fails to load: its snapshot is cleared and fetched once more.

A warm start trusts each file's stat stamp (size, mtime, inode), so bytes changed in place behind
our back (a disk fault, a tool writing into the cache) can pass the fast check and only show when
the backend reads them. Then, once per snapshot and process, when the cache is writable, online
and the model comes from a Hub: its files are quarantined (kept aside, never silently deleted), the
lock entry of that commit dropped, and the model pulled and loaded again. A second failure is the
model's own: it is raised, and the chain moves on as for any load failure.
"""

from __future__ import annotations

import logging
import threading

from modelcache.errors import ModelCacheError

log = logging.getLogger("modelcache")

_refetched: set[tuple[str, str, str]] = set()
_lock = threading.Lock()


def load_or_refetch(manager, spec, revision: str | None = None, retries: int | None = None):
    """``manager.load(spec, revision)``; on a load error of verified files, clear and re-fetch once."""
    try:
        return manager.load(spec, revision, retries=retries)
    except ModelCacheError:
        raise  # already says what is wrong (offline, integrity, backend missing, precision...)
    except Exception as exc:  # noqa: BLE001 - whatever the backend raised on reading the files
        if spec is None or spec.source != "hub" or manager.settings.offline or manager.store.read_only:
            raise
        local = manager.ensure(spec, revision, download=False)
        key = (str(manager.settings.cache_dir), spec.repo_id, local.commit)
        with _lock:
            if key in _refetched:
                raise
            _refetched.add(key)
        log.warning("%s@%s passed verification but failed to load (%s: %s); clearing its snapshot and "
                    "fetching it once more", spec.name, local.commit[:12], type(exc).__name__, exc)
        store = manager.store
        with store.lock(spec.repo_id):
            for path, link in store.snapshot_files(spec.repo_id, local.commit).items():
                store.quarantine(spec.repo_id, link.resolve(), path)
                store.drop_link(spec.repo_id, local.commit, path)
            manager.lockfile.remove(spec.repo_id, commit=local.commit)
            store.update_meta(spec.repo_id, verified={})
        return manager.load(spec, revision, retries=retries)
