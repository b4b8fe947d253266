"""Model versions: what the Hub has, upgrade with a probe comparison, rollback, removing an old version.

A repo keeps every snapshot it was pulled at (``snapshots/<commit>``). The lock entry of the
model's revision (``repo@main``) names the *active* one; every other kept version is locked by
its own commit (``repo@<commit>``), so its hashes stay pinned. Nothing moves silently:

- :func:`modelcache.ops.outdated.check_revisions` asks the Hub for its branches and tags and records
  them in the repo metadata (``available_revisions``, ``last_update_check`` in ISO-8601).
- :func:`upgrade` pulls the revision's new commit into the cache *without* switching, loads the
  old and the new model, embeds a fixed probe set with both and compares them (cosine per
  probe, top-k neighbour agreement); unless ``check``, it then moves the lock entry (the old
  fingerprint is recorded by :mod:`modelcache.cache.history` for re-embedding).
- :func:`rollback` moves the lock entry back to the previous (or a given) cached snapshot after
  re-hashing every file of it; a snapshot that is not cached is refused, nothing changes.
- :func:`remove_revision` deletes one inactive snapshot and the blobs only it used.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcache._util import is_commit
from modelcache.cache import history
from modelcache.cache.integrity import FileExpectation, expectation_from_blob, verify_file
from modelcache.cache.lockfile import LockEntry
from modelcache.errors import IntegrityError, OfflineError, VersionError
from modelcache.ops.outdated import _resolve
from modelcache.registry import ModelSpec

if TYPE_CHECKING:
    from modelcache.manager import ModelManager

#: the fixed probe set of an upgrade check: short queries and passages over a few topics, so the
#: top-k neighbours of each probe are meaningful in any sensible embedding space
PROBES: tuple[str, ...] = (
    "How do I reset my password?",
    "To reset your password, open Settings, choose Account and click 'Forgot password'.",
    "What is the capital of France?",
    "Paris is the capital and largest city of France.",
    "How many legs does a spider have?",
    "Spiders are arachnids with eight legs and two body segments.",
    "Best way to cook pasta",
    "Boil salted water, add the pasta and cook it for eight to ten minutes until al dente.",
    "Why is the sky blue?",
    "Sunlight is scattered by the air's molecules; blue light is scattered the most (Rayleigh scattering).",
    "python read a file line by line",
    "with open(path) as fh: for line in fh: print(line)",
)


# -- the probe comparison -----------------------------------------------------------------
def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def _neighbours(vectors: np.ndarray, k: int) -> list[set[int]]:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in sims]


def compare(old: Any, new: Any, probes: tuple[str, ...] = PROBES, k: int = 3) -> dict:
    """Embed ``probes`` with both encoders: cosine old vs new per probe (same dims only) and the
    mean share of each probe's ``k`` nearest other probes that both spaces agree on."""
    a = _unit(np.asarray(old.encode(list(probes), kind="document"), dtype=np.float64))
    b = _unit(np.asarray(new.encode(list(probes), kind="document"), dtype=np.float64))
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise IntegrityError(getattr(new, "name", "model"), "probe set", detail="an embedding is not finite")
    cosines = [round(float(x), 6) for x in np.sum(a * b, axis=1)] if a.shape == b.shape else None
    na, nb = _neighbours(a, k), _neighbours(b, k)
    agreement = [len(x & y) / k for x, y in zip(na, nb)]
    return {"probes": len(probes), "k": k, "dims_old": int(a.shape[1]), "dims_new": int(b.shape[1]),
            "cosine": cosines, "mean_cosine": round(float(np.mean(cosines)), 6) if cosines else None,
            "min_cosine": round(float(np.min(cosines)), 6) if cosines else None,
            "topk_agreement": round(float(np.mean(agreement)), 6),
            "per_probe": [{"text": t, "cosine": cosines[i] if cosines else None, "topk_agreement": agreement[i]}
                          for i, t in enumerate(probes)]}


# -- switching the lock entry -------------------------------------------------------------
def _verified_files(mgr: ModelManager, spec: ModelSpec, commit: str) -> dict[str, FileExpectation]:
    """Every file of the cached snapshot ``commit``, re-hashed now against its pin (its lock
    entry, else the blob name: the HF layout names each blob by its hash)."""
    on_disk = mgr.store.snapshot_files(spec.repo_id, commit)
    locked = mgr.lockfile.get(spec.repo_id, commit)
    expected = dict(locked.files) if locked and locked.commit == commit else {}
    if not on_disk or any(p not in on_disk for p in expected):
        raise VersionError(spec.name, f"the snapshot {commit[:12]} is not (completely) in the cache",
                           f"Pull it first: `modelcache pull {spec.name} --revision {commit}`; nothing was changed.")
    out = {}
    for path, link in sorted(on_disk.items()):
        exp = expected.get(path) or expectation_from_blob(path, link)
        if not (exp.sha256 or exp.blob_id):
            raise VersionError(spec.name, f"{path} of {commit[:12]} has no hash to check it against",
                               f"Pull the version again: `modelcache pull {spec.name} --revision {commit}`.")
        verify_file(link.resolve(), exp)  # IntegrityError names the file and the check
        out[path] = FileExpectation(path, size=os.path.getsize(link), sha256=exp.sha256, blob_id=exp.blob_id)
    return out


def _switch(mgr: ModelManager, spec: ModelSpec, revision: str, commit: str,
            files: dict[str, FileExpectation]) -> dict | None:
    """Make ``commit`` the active version of ``repo@revision``; the old one stays locked by its commit."""
    before = history.state_before_upgrade(mgr.store, mgr.lockfile, spec, revision, mgr.fingerprint)
    with mgr.store.lock(spec.repo_id):
        old = mgr.lockfile.get(spec.repo_id, revision)
        if old is not None and old.commit != commit:
            mgr.lockfile.set(LockEntry(spec.repo_id, old.commit, old.commit, old.files, old.locked_at))
        mgr.lockfile.set(LockEntry(spec.repo_id, revision, commit, files))
        mgr.store.write_ref(spec.repo_id, revision, commit)
    return history.record_upgrade(mgr.store, spec, before, commit)


def _active(mgr: ModelManager, spec: ModelSpec, revision: str) -> LockEntry:
    locked = mgr.lockfile.get(spec.repo_id, revision)
    if locked is None:
        raise VersionError(spec.name, f"no lock entry for {spec.repo_id}@{revision}",
                           f"Pull it first: `modelcache pull {spec.name}`.")
    return locked


def _find_commit(mgr: ModelManager, spec: ModelSpec, rev: str) -> str | None:
    """A cached snapshot named by a full or abbreviated (>= 7) commit, or a ref/tag of the cache."""
    commits = [r.commits for r in mgr.store.repos() if r.repo_id == spec.repo_id]
    cached = commits[0] if commits else []
    if is_commit(rev):
        return rev if rev in cached else None
    if len(rev) >= 7 and all(c in "0123456789abcdef" for c in rev):
        hits = [c for c in cached if c.startswith(rev)]
        if len(hits) == 1:
            return hits[0]
    resolved = mgr.store.resolve(spec.repo_id, rev)
    if resolved:
        return resolved
    for entry in mgr.lockfile.entries():  # a tag once pulled (``pull --revision v1.0``) is a lock entry
        if entry.repo_id == spec.repo_id and entry.revision == rev and entry.commit in cached:
            return entry.commit
    return None


def versions(mgr: ModelManager, model: str | ModelSpec) -> dict:
    """The cached versions of a model: which is active, which are locked, what replaced what."""
    spec = mgr.spec(model)
    active = mgr.lockfile.get(spec.repo_id, spec.revision)
    repo = next((r for r in mgr.store.repos() if r.repo_id == spec.repo_id), None)
    locked = {e.commit for e in mgr.lockfile.entries() if e.repo_id == spec.repo_id}
    meta = repo.meta if repo else {}
    return {"model": spec.name, "repo_id": spec.repo_id, "revision": spec.revision,
            "active": active.commit if active else None,
            "cached": [{"commit": c, "active": bool(active and active.commit == c), "locked": c in locked}
                       for c in (repo.commits if repo else [])],
            "history": meta.get("previous_fingerprints", []),
            "available_revisions": meta.get("available_revisions"), "last_update_check": meta.get("last_update_check")}


def rollback(mgr: ModelManager, model: str | ModelSpec, to: str | None = None) -> dict:
    """Move the lock entry back to the version the last upgrade replaced (or to ``to``)."""
    spec = mgr.spec(model)
    mgr.store._require_writable(f"rollback {spec.name}")
    active = _active(mgr, spec, spec.revision)
    if to is None:
        earlier = [h for h in mgr.store.read_meta(spec.repo_id).get("previous_fingerprints", [])
                   if h.get("revision", spec.revision) == spec.revision and h.get("commit") != active.commit]
        if not earlier:
            raise VersionError(spec.name, "no earlier version is recorded (no upgrade moved this lock entry)",
                               "Name one: `modelcache rollback MODEL --to COMMIT` (`modelcache versions MODEL` "
                               "lists the cached ones); nothing was changed.")
        target = earlier[-1]["commit"]
        commit = target if mgr.store.snapshot_dir(spec.repo_id, target).is_dir() else None
    else:
        target = to
        commit = _find_commit(mgr, spec, to)
    if commit is None:
        raise VersionError(spec.name, f"the version {target} is not in the cache (it was removed, or never pulled)",
                           f"Pull it first: `modelcache pull {spec.name} --revision {target}`, then roll back; "
                           "nothing was changed.")
    if commit == active.commit:
        return {"model": spec.name, "repo_id": spec.repo_id, "from": active.commit, "to": commit, "changed": False}
    files = _verified_files(mgr, spec, commit)
    record = _switch(mgr, spec, spec.revision, commit, files)
    return {"model": spec.name, "repo_id": spec.repo_id, "from": active.commit, "to": commit, "changed": True,
            "verified_files": len(files), "history": record}


def remove_revision(mgr: ModelManager, model: str | ModelSpec, rev: str) -> dict:
    """Delete one cached version that is not active: its snapshot, its commit's lock entry, refs to it
    and the blobs no other snapshot links to."""
    spec = mgr.spec(model)
    mgr.store._require_writable(f"remove {spec.name}@{rev}")
    commit = _find_commit(mgr, spec, rev)
    if commit is None:
        raise VersionError(spec.name, f"the version {rev} is not in the cache",
                           f"`modelcache versions {spec.name}` lists the cached versions.")
    for entry in mgr.lockfile.entries():
        if entry.repo_id == spec.repo_id and entry.commit == commit and entry.revision != commit:
            raise VersionError(spec.name, f"{commit[:12]} is the active version of {spec.repo_id}@{entry.revision}",
                               f"Roll back or upgrade first (`modelcache rollback {spec.name} --to COMMIT`), or "
                               f"remove the whole model with `modelcache rm {spec.name}`; nothing was removed.")
    store = mgr.store
    repo_dir = store.repo_dir(spec.repo_id)
    freed = 0
    with store.lock(spec.repo_id):
        snap = store.snapshot_dir(spec.repo_id, commit)
        mine = {os.path.basename(os.readlink(p)) for p in store.snapshot_files(spec.repo_id, commit).values()
                if p.is_symlink()}
        others: set[str] = set()
        for other in (repo_dir / "snapshots").iterdir():
            if other.name != commit:
                others |= {os.path.basename(os.readlink(p)) for p in other.rglob("*") if p.is_symlink()}
        shutil.rmtree(snap)
        for name in sorted(mine - others):
            blob = store.blob_path(spec.repo_id, name)
            if blob.exists():
                freed += blob.stat().st_size
                blob.unlink()
        refs = repo_dir / "refs"
        for ref in (refs.rglob("*") if refs.is_dir() else []):
            if ref.is_file() and ref.read_text().strip() == commit:
                ref.unlink()
        mgr.lockfile.remove(spec.repo_id, commit=commit)
        meta = store.read_meta(spec.repo_id)
        store.update_meta(spec.repo_id, **{k: {c: v for c, v in meta[k].items() if c != commit}
                                           for k in ("verified", "functional") if isinstance(meta.get(k), dict)})
    return {"model": spec.name, "repo_id": spec.repo_id, "removed": commit, "freed": freed}


# -- upgrade ------------------------------------------------------------------------------
def upgrade(mgr: ModelManager, model: str | ModelSpec, check: bool = False, to: str | None = None,
            endpoints: list[str] | None = None, min_cosine: float | None = None, k: int = 3,
            timeout: float = 10.0) -> dict:
    """Pull where the model's revision (or ``to``) is now on the Hub into the cache, compare it with
    the active version on :data:`PROBES`, and, unless ``check``, switch the lock entry to it."""
    spec = mgr.spec(model)
    if mgr.settings.offline:
        raise OfflineError(spec.name, "an upgrade needs the network and offline mode is on")
    active = _active(mgr, spec, spec.revision)
    target = to or spec.revision
    new_commit, endpoint = _resolve(mgr, spec.repo_id, target, endpoints or mgr.settings.endpoints, timeout)
    out: dict[str, Any] = {"model": spec.name, "repo_id": spec.repo_id, "revision": spec.revision, "target": target,
                           "old_commit": active.commit, "new_commit": new_commit, "endpoint": endpoint,
                           "check": check, "switched": False}
    if new_commit == active.commit:
        return out | {"current": True}
    pulled = mgr.pull(spec, new_commit, endpoints=endpoints)  # cached and locked by its commit, not active
    out["downloaded"] = pulled.downloaded
    old = mgr.load(spec, revision=active.commit)
    new = mgr.load(spec, revision=new_commit)
    out["comparison"] = comparison = compare(old, new, k=k)
    out["fingerprint_old"], out["fingerprint_new"] = old.fingerprint, new.fingerprint
    if check:
        return out
    if min_cosine is not None and (comparison["mean_cosine"] is None or comparison["mean_cosine"] < min_cosine):
        raise VersionError(spec.name, f"the new version {new_commit[:12]} has a mean probe cosine of "
                           f"{comparison['mean_cosine']} to the active one (below --min-cosine {min_cosine})",
                           "It stays cached but inactive; switch anyway without --min-cosine, or remove it with "
                           f"`modelcache rm {spec.name} --revision {new_commit[:12]}`.")
    files = _verified_files(mgr, spec, new_commit)
    out["history"] = _switch(mgr, spec, spec.revision, new_commit, files)
    out["switched"] = True
    return out


__all__ = ["PROBES", "compare", "remove_revision", "rollback", "upgrade", "versions"]
