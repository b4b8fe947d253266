"""Update detection: which pinned models' branches moved on the Hub. Nothing upgrades silently.

:func:`outdated` compares every pin (``repo@branch`` → commit) with what the endpoint resolves
the branch to now. Moving a pin is explicit: ``modelcache pull MODEL --upgrade``. Because the
new weights name a new embedding space, :func:`record_upgrade` keeps the old fingerprint in
the repo metadata (``previous_fingerprints``) so stored vectors can be migrated (re-embedded).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from .errors import OfflineError
from .retry import RetryPolicy, RetryStats
from .store import _is_commit

log = logging.getLogger("modelcache")


@dataclass
class OutdatedEntry:
    repo_id: str
    revision: str
    pinned_commit: str
    remote_commit: str | None
    outdated: bool
    endpoint: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _resolve(mgr: Any, repo_id: str, revision: str, endpoints: list[str], timeout: float) -> tuple[str, str]:
    """(commit, endpoint) from the first endpoint that answers; raises the last error."""
    from .remote import RemoteRepo  # the HTTP stack only when we ask the Hub

    last: Exception | None = None
    for endpoint in endpoints:
        remote = RemoteRepo(endpoint, mgr.settings.token_value, timeout, RetryPolicy(retries=1, backoff_base=0.2),
                            RetryStats())
        try:
            return remote.resolve(repo_id, revision), endpoint
        except Exception as exc:  # noqa: BLE001 - try the next mirror, report the last failure
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            last = exc
    assert last is not None
    raise last


def outdated(mgr: Any, models: list[str] | None = None, endpoints: list[str] | None = None,
             timeout: float = 10.0) -> list[OutdatedEntry]:
    """Every pin on a branch or tag, with the commit the Hub resolves it to now.

    ``models`` limits the check (names, aliases or repo ids). Pins on a commit hash cannot move
    and are skipped. A failure to reach the Hub is reported per entry, not raised.
    """
    if mgr.settings.offline:
        raise OfflineError("outdated", "checking for updates needs the network and offline mode is on")
    wanted = {mgr.spec(m).repo_id for m in models} if models else None
    out = []
    for pin in sorted(mgr.lockfile.pins(), key=lambda p: (p.repo_id, p.revision)):
        if _is_commit(pin.revision) or (wanted is not None and pin.repo_id not in wanted):
            continue
        entry = OutdatedEntry(pin.repo_id, pin.revision, pin.commit, None, False)
        try:
            entry.remote_commit, entry.endpoint = _resolve(mgr, pin.repo_id, pin.revision,
                                                           endpoints or mgr.settings.endpoints, timeout)
            entry.outdated = entry.remote_commit != pin.commit
        except Exception as exc:  # noqa: BLE001 - reported per model
            entry.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        out.append(entry)
    return out


# -- migration record ---------------------------------------------------------------------
def state_before_upgrade(mgr: Any, spec: Any, revision: str | None = None) -> dict | None:
    """The pinned commit and its fingerprint, taken before a pull moves the pin (or None)."""
    revision = revision or spec.revision
    pin = mgr.lockfile.get(spec.repo_id, revision)
    if pin is None:
        return None
    snap = mgr.store.snapshot_dir(spec.repo_id, pin.commit)
    fingerprint = None
    if snap.is_dir():
        try:
            fingerprint = mgr.fingerprint(spec, snap)
        except OSError as exc:
            log.warning("no fingerprint for %s@%s: %s", spec.repo_id, pin.commit[:12], exc)
    return {"commit": pin.commit, "revision": revision, "fingerprint": fingerprint}


def record_upgrade(mgr: Any, spec: Any, before: dict | None, result: Any) -> dict | None:
    """After a pull: if the pin moved away from ``before``, append the old commit and
    fingerprint to the repo metadata's ``previous_fingerprints``. Returns the record or None."""
    if before is None or result is None or getattr(result, "dry_run", False):
        return None
    if result.commit == before["commit"]:
        return None
    record = before | {"replaced_by": result.commit, "replaced_at": time.time()}
    history = list(mgr.store.read_meta(spec.repo_id).get("previous_fingerprints", []))
    history.append(record)
    mgr.store.update_meta(spec.repo_id, previous_fingerprints=history)
    log.warning("%s moved from %s to %s: vectors made with fingerprint %s need re-embedding",
                spec.repo_id, before["commit"][:12], result.commit[:12], before.get("fingerprint"))
    return record


__all__ = ["OutdatedEntry", "outdated", "state_before_upgrade", "record_upgrade"]
