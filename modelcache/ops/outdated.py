"""Update detection: which locked models' branches moved on the Hub. Nothing upgrades silently.

:func:`outdated` compares every lock entry (``repo@branch`` → commit) with what the endpoint resolves
the branch to now. Moving a lock entry is explicit: ``modelcache pull MODEL --upgrade``. Because the
new weights name a new embedding space, :func:`modelcache.cache.history.record_upgrade` keeps the old fingerprint in
the repo metadata (``previous_fingerprints``) so stored vectors can be migrated (re-embedded).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from modelcache._util import is_commit
from modelcache.errors import OfflineError
from modelcache.hub.retry import RetryPolicy, RetryStats

if TYPE_CHECKING:
    from modelcache.manager import ModelManager

log = logging.getLogger("modelcache")


@dataclass
class OutdatedEntry:
    repo_id: str
    revision: str
    locked_commit: str
    remote_commit: str | None
    outdated: bool
    endpoint: str | None = None
    error: str | None = None
    available_revisions: list[dict] | None = None
    """The branches and tags the Hub has (``[{"name", "kind", "commit"}]``), from this check or the last one."""
    last_update_check: str | None = None
    """When the Hub was last asked for them (ISO-8601, UTC)."""

    def to_dict(self) -> dict:
        return asdict(self)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_revisions(mgr: ModelManager, repo_id: str, remote: Any) -> list[dict[str, str]]:
    """Ask ``remote`` (a :class:`~modelcache.hub.remote.RemoteRepo`) for the repo's branches and
    tags; record them and the time of the check in the repo metadata (``available_revisions``,
    ``last_update_check``, ISO-8601 UTC). Returns them."""
    available = remote.refs(repo_id)
    mgr.store.update_meta(repo_id, available_revisions=available, last_update_check=now_iso())
    return available


def _resolve(mgr: ModelManager, repo_id: str, revision: str, endpoints: list[str], timeout: float,
             revisions: bool = False) -> tuple[str, str]:
    """(commit, endpoint) from the first endpoint that answers; raises the last error. ``revisions``:
    also record the branches and tags that endpoint has (:func:`modelcache.ops.versions.check_revisions`)."""
    from modelcache.hub.remote import (
        RemoteRepo,  # the HTTP stack only when we ask the Hub
    )
    from modelcache.origins import redact_url, token_for

    last: Exception | None = None
    for endpoint in endpoints:
        remote = RemoteRepo(endpoint, token_for(mgr.settings, endpoint), timeout,
                            RetryPolicy(retries=1, backoff_base=0.2),
                            RetryStats())
        try:
            commit = remote.resolve(repo_id, revision)
            if revisions:
                try:
                    check_revisions(mgr, repo_id, remote)
                except Exception as exc:  # noqa: BLE001 - the commit is known; the listing is extra
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    log.warning("no revision list for %s from %s: %s", repo_id, redact_url(endpoint), exc)
            return commit, redact_url(endpoint)
        except Exception as exc:  # noqa: BLE001 - try the next mirror, report the last failure
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            last = exc
    assert last is not None
    raise last


def outdated(mgr: ModelManager, models: list[str] | None = None, endpoints: list[str] | None = None,
             timeout: float = 10.0) -> list[OutdatedEntry]:
    """Every lock entry on a branch or tag, with the commit the Hub resolves it to now.

    ``models`` limits the check (names, aliases or repo ids). Entries locked to a commit hash cannot move
    and are skipped. A failure to reach the Hub is reported per entry, not raised.
    """
    if mgr.settings.offline:
        raise OfflineError("outdated", "checking for updates needs the network and offline mode is on")
    wanted = {mgr.spec(m).repo_id for m in models} if models else None
    out = []
    for locked in sorted(mgr.lockfile.entries(), key=lambda p: (p.repo_id, p.revision)):
        if is_commit(locked.revision) or (wanted is not None and locked.repo_id not in wanted):
            continue
        entry = OutdatedEntry(locked.repo_id, locked.revision, locked.commit, None, False)
        try:
            entry.remote_commit, entry.endpoint = _resolve(mgr, locked.repo_id, locked.revision,
                                                           endpoints or mgr.settings.endpoints, timeout,
                                                           revisions=True)
            entry.outdated = entry.remote_commit != locked.commit
        except Exception as exc:  # noqa: BLE001 - reported per model
            entry.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        meta = mgr.store.read_meta(locked.repo_id)  # this check's answer, or the last one's when it failed
        entry.available_revisions = meta.get("available_revisions")
        entry.last_update_check = meta.get("last_update_check")
        out.append(entry)
    return out


__all__ = ["OutdatedEntry", "check_revisions", "outdated"]
