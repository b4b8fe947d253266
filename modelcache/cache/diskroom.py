"""A pull that does not fit on the disk: make room by evicting (``model_cache.evict_on_disk_full``).

Least recently used unpinned models go (never the repo being pulled) until the download plus
``download.disk_margin_mb`` fits; when even every unpinned model would not free enough, nothing
is evicted and :class:`DiskSpaceError` says so. The eviction itself is the budget's
(:func:`modelcache.cache.budget.apply`: each repo under its lock, moved to the trash at once).
"""

from __future__ import annotations

import logging
import shutil

from modelcache.cache.budget import CacheOwner, Plan, _order, apply, entries
from modelcache.cache.store import CacheStore
from modelcache.errors import DiskSpaceError

log = logging.getLogger("modelcache")


def make_disk_room(mgr: CacheOwner, needed_bytes: int, margin_mb: float, repo_id: str | None = None) -> list[str]:
    """A pull of ``needed_bytes`` into ``repo_id`` does not fit on the cache's disk: evict least
    recently used unpinned models (never ``repo_id``) until it fits (``model_cache.evict_on_disk_full``).
    Returns the evicted repo ids; raises :class:`DiskSpaceError` and evicts nothing when even
    every unpinned model would not free enough."""
    store: CacheStore = mgr.store
    store.root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(store.root).free
    want = needed_bytes + int(margin_mb * 1024 * 1024)
    if want <= free:
        return []
    items = entries(store)
    chosen: list[dict] = []
    gain = 0
    for e in _order([e for e in items if not e.pinned and e.repo_id != repo_id], "lru"):
        if free + gain >= want:
            break
        chosen.append({"repo_id": e.repo_id, "size": e.size, "last_access": e.last_access,
                       "downloaded_at": e.downloaded_at, "reason": "disk full (evict_on_disk_full)"})
        gain += e.size
    if free + gain < want:
        err = DiskSpaceError(str(store.root), want, free)
        err.args = (f"{err} Evicting every unpinned model ({gain:,} bytes) would not be enough; nothing was "
                    "evicted.",)
        raise err
    p = Plan("lru", None, None, sum(e.size for e in items), len(items), needed=needed_bytes, evict=chosen,
             reason="disk full")
    done = apply(mgr, p)["evicted"]
    log.warning("disk full: evicted %s (least recently used, unpinned) to make room for %s bytes",
                ", ".join(done) or "nothing", f"{needed_bytes:,}")
    return done


__all__ = ["make_disk_room"]
