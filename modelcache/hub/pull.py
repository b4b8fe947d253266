"""Pull a model's files from a Hub or mirror into the cache, verified, single-flight.

Flow for one repo (under a cross-process lock, so N processes download once):
resolve the revision to a commit → list the files and their hashes → choose the files the
backend needs (never pickle weights unless allowed) → disk preflight → download each missing
file into a resumable .part file (see transfer.py; our retries), configs and tokenizer first:
they are checked (:mod:`modelcache.cache.modelcheck`) before any weight byte moves → verify
size + hash + format → quarantine and re-fetch once on mismatch → move blobs in → publish the snapshot →
write the ref, the lock entry and the metadata (one publish transaction). Mirrors are tried in order.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modelcache import metrics
from modelcache.cache.budget import ensure_room
from modelcache.cache.integrity import FileExpectation, verify_file
from modelcache.cache.lockfile import LockEntry, Lockfile
from modelcache.cache.modelcheck import check_model_files, hint_for, is_weights
from modelcache.cache.publish import publish
from modelcache.cache.store import CacheStore
from modelcache.errors import (
    DiskSpaceError,
    DownloadError,
    IntegrityError,
    OfflineError,
    UnsafeFileError,
)
from modelcache.hub.deadline import Deadline
from modelcache.hub.retry import RetryPolicy, RetryStats, describe
from modelcache.origins import redact_url, token_for
from modelcache.registry import PICKLE_PATTERNS, ModelSpec
from modelcache.settings import Settings

if TYPE_CHECKING:
    from modelcache.hub.remote import RemoteRepo

log = logging.getLogger("modelcache")


@dataclass
class PullResult:
    repo_id: str
    revision: str
    commit: str
    snapshot: Path
    endpoint: str | None
    """Where the files came from, as it may be shown (credentials redacted); None: the cache."""
    files: dict[str, FileExpectation]
    downloaded: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0
    seconds: float = 0.0
    requests_made: bool = True
    dry_run: bool = False
    stats: RetryStats = field(default_factory=RetryStats)
    evicted: list[dict] = field(default_factory=list)
    """Models this pull evicted, each ``{"repo_id", "reason"}``: the budget, ``max_idle_days``, or a full
    disk (``model_cache.evict_on_disk_full``)."""

    def to_dict(self) -> dict:
        return {
            "repo_id": self.repo_id, "revision": self.revision, "commit": self.commit,
            "snapshot": str(self.snapshot), "endpoint": self.endpoint, "files": sorted(self.files),
            "downloaded": self.downloaded, "bytes_downloaded": self.bytes_downloaded,
            "seconds": round(self.seconds, 3), "network": self.requests_made, "dry_run": self.dry_run,
            "retries": self.stats.retries, "rate_limited": self.stats.rate_limited,
            "bytes_received": self.stats.bytes_received, "evicted": self.evicted,
        }


def select_files(spec: ModelSpec, files: dict[str, FileExpectation], allow_pickle: bool,
                 include: tuple[str, ...] | None = None) -> dict[str, FileExpectation]:
    """The subset of a repo a backend needs; refuses pickle-only weights unless allowed."""
    patterns = include or spec.include
    chosen = {p: e for p, e in files.items()
              if any(fnmatch.fnmatch(p, pat) for pat in patterns)
              and not (include is None and any(fnmatch.fnmatch(p, pat) for pat in spec.exclude))}
    pickles = {p for p in files if any(fnmatch.fnmatch(p, pat) for pat in PICKLE_PATTERNS)}
    if allow_pickle:
        chosen.update({p: files[p] for p in pickles if include is None})
    else:
        chosen = {p: e for p, e in chosen.items() if p not in pickles}
        has_safe_weights = any(p.endswith((".safetensors", ".gguf", ".onnx")) for p in chosen)
        if pickles and not has_safe_weights and include is None:
            raise UnsafeFileError(
                f"{spec.repo_id}: only pickle weights ({', '.join(sorted(pickles))})",
                "pickle files can run code when loaded. Use a repo with safetensors, or pass "
                "--allow-pickle / download.allow_pickle=true if you trust it.")
    if not chosen:
        raise DownloadError(spec.repo_id, {"files": f"no file matches {list(patterns)}"})
    return chosen


class Puller:
    def __init__(self, settings: Settings, store: CacheStore, lockfile: Lockfile):
        self.settings = settings
        self.store = store
        self.lockfile = lockfile
        d = settings.download
        self.policy = RetryPolicy(d.retries, d.backoff_base, d.backoff_max)

    # -- the cache side -----------------------------------------------------------------
    def cached(self, spec: ModelSpec, revision: str | None = None,
               include: tuple[str, ...] | None = None) -> PullResult | None:
        """A complete cached snapshot for the locked revision, with zero network. ``include``: the
        files of an any-file pull (``pull --include``), hit only when the lock entry pins them."""
        revision = revision or spec.revision
        locked = self.lockfile.get(spec.repo_id, revision)
        if include is not None:
            return self._cached_include(spec, revision, locked, include)
        if locked is not None and not locked.model:
            return None  # only an any-file pull (GGUF, ...) of this repo is pinned, not the model's files
        commit = locked.commit if locked else self.store.resolve(spec.repo_id, revision)
        if not commit:
            return None
        on_disk = self.store.snapshot_files(spec.repo_id, commit)
        expected = locked.files if locked else {}
        if not on_disk or any(p not in on_disk for p in expected):
            return None
        return PullResult(spec.repo_id, revision, commit, self.store.snapshot_dir(spec.repo_id, commit),
                          None, expected or {p: FileExpectation(p) for p in on_disk}, requests_made=False)

    def _cached_include(self, spec: ModelSpec, revision: str, locked: LockEntry | None,
                        include: tuple[str, ...]) -> PullResult | None:
        if locked is None or not set(include) <= set(locked.includes):
            return None
        on_disk = self.store.snapshot_files(spec.repo_id, locked.commit)
        expected = {p: e for p, e in locked.files.items() if any(fnmatch.fnmatch(p, pat) for pat in include)}
        if not expected or any(p not in on_disk for p in expected):
            return None
        return PullResult(spec.repo_id, revision, locked.commit, self.store.snapshot_dir(spec.repo_id, locked.commit),
                          None, expected, requests_made=False)

    def _lock_entry(self, repo_id: str, revision: str, commit: str, files: dict[str, FileExpectation],
                    include: tuple[str, ...] | None) -> LockEntry | None:
        """The lock entry after pulling ``files`` (None: the plain model entry publish writes). An
        any-file pull is pinned like a model, next to what the entry already pins at that commit."""
        old = self.lockfile.get(repo_id, revision)
        same = old is not None and old.commit == commit
        if include is None:
            if not (old is not None and same and old.includes):
                return None
            return LockEntry(repo_id, revision, commit, {**old.files, **files}, includes=old.includes)
        kept = old if same else None
        return LockEntry(repo_id, revision, commit, {**(kept.files if kept else {}), **files},
                         includes=tuple(sorted(set(kept.includes if kept else ()) | set(include))),
                         model=bool(kept and kept.model))

    # -- the network side ---------------------------------------------------------------
    def pull(self, spec: ModelSpec, revision: str | None = None, endpoints: list[str] | None = None,
             dry_run: bool = False, upgrade: bool = False, include: tuple[str, ...] | None = None,
             allow_pickle: bool | None = None, retries: int | None = None) -> PullResult:
        """Pull ``spec`` (locked and complete in the cache: no request). ``retries`` overrides
        ``download.retries`` for this call."""
        revision = revision or spec.revision
        if not upgrade and (hit := self.cached(spec, revision, include)):
            return hit
        if self.settings.offline:
            raise OfflineError(spec.name)
        if not self.settings.download.enabled:
            raise OfflineError(spec.name, "downloads are off (download.enabled: false) and the model is not "
                                          "cached; set download.enabled: true to pull it")
        if not dry_run:
            self.store._require_writable(f"pull {spec.repo_id}")
        allow_pickle = self.settings.download.allow_pickle if allow_pickle is None else allow_pickle
        failures: dict[str, str] = {}
        stats = RetryStats()
        policy = self.policy if retries is None else RetryPolicy(retries, self.policy.backoff_base,
                                                                 self.policy.backoff_max)
        # a repair re-fetches the pinned commit; only --upgrade moves the lock entry to where the branch is now
        locked = None if upgrade else self.lockfile.get(spec.repo_id, revision)
        target = locked.commit if locked else revision
        from modelcache.hub.http import (
            httpx,  # the HTTP stack: only when we really go to the network
        )

        http = httpx()

        from modelcache.hub.remote import RemoteRepo

        d = self.settings.download
        pull_deadline = Deadline(d.pull_deadline_s, f"pull {spec.repo_id}", "download.pull_deadline_s",
                                 hint="no further endpoint is tried (raise download.pull_deadline_s for a slow "
                                      "but working link)")
        chain = list(endpoints or self.settings.endpoints)
        for i, endpoint in enumerate(chain):
            shown = redact_url(endpoint)
            if pull_deadline.expired():
                for rest in chain[i:]:
                    failures[redact_url(rest)] = (f"not tried: the pull's deadline (download.pull_deadline_s = "
                                                  f"{d.pull_deadline_s:g} s) was spent")
                break
            remote = RemoteRepo(endpoint, token_for(self.settings, endpoint), d.connect_timeout, policy, stats,
                                deadline=pull_deadline.child(None, f"pull {spec.repo_id} from {shown}"),
                                request_deadline_s=d.file_deadline_min_s,
                                read_timeout=self.settings.model_cache.download_timeout,
                                compression=d.compression)
            try:
                if dry_run:
                    return self._plan(spec, revision, target, remote, allow_pickle, include, stats)
                with self.store.lock(spec.repo_id):
                    if not upgrade and (hit := self.cached(spec, revision, include)):
                        return hit  # another process finished while we waited
                    return self._pull_from(spec, revision, target, remote, allow_pickle, include, stats)
            except (UnsafeFileError, DiskSpaceError, IntegrityError):
                raise  # the same on every endpoint: no failover
            except (OSError, ValueError, http.HTTPError, http.InvalidURL) as exc:  # HTTP (HfHubHTTPError is an
                # OSError), transport, DNS, a deadline passed, a bad or hostile answer: recorded for this
                # endpoint, next endpoint, then DownloadError
                failures[shown] = describe(exc)
                log.warning("pull %s from %s failed: %s", spec.repo_id, shown, failures[shown])
        metrics.record_download_failure(spec.repo_id, stats, seconds=time.monotonic() - pull_deadline.started)
        raise DownloadError(spec.repo_id, failures)

    def _plan(self, spec, revision, target, remote, allow_pickle, include, stats) -> PullResult:
        commit = remote.resolve(spec.repo_id, target)
        files = select_files(spec, remote.files(spec.repo_id, commit), allow_pickle, include)
        missing = [p for p, e in files.items() if not self._have(spec.repo_id, commit, e)]
        return PullResult(spec.repo_id, revision, commit, self.store.snapshot_dir(spec.repo_id, commit),
                          remote.shown, files, downloaded=missing,
                          bytes_downloaded=sum(files[p].size or 0 for p in missing), dry_run=True, stats=stats)

    def _have(self, repo_id: str, commit: str, exp: FileExpectation) -> bool:
        blob = self.store.blob_path(repo_id, exp.blob_name)
        return blob.exists() and blob.stat().st_size == exp.size

    def _check_known(self, spec: ModelSpec, commit: str, files: dict[str, FileExpectation]) -> None:
        """The Hub's hashes must agree with what we already know for sure."""
        locked = self.lockfile.get(spec.repo_id, commit)
        locked_files = locked.files if locked else {}
        for path, exp in files.items():
            known = spec.known_sha256.get(path) or (locked_files[path].sha256 if path in locked_files else None)
            if known and exp.sha256 and known != exp.sha256:
                raise IntegrityError(path, "sha256 (registry/lockfile vs endpoint)", known, exp.sha256,
                                     detail="the endpoint serves different content than pinned")

    def _pull_from(self, spec, revision, target, remote: RemoteRepo, allow_pickle, include, stats) -> PullResult:
        t0 = time.perf_counter()
        commit = remote.resolve(spec.repo_id, target)
        files = select_files(spec, remote.files(spec.repo_id, commit), allow_pickle, include)
        self._check_known(spec, commit, files)
        missing = {p: e for p, e in files.items() if not self._have(spec.repo_id, commit, e)}
        evicted: list[dict] = []
        ensure_room(self, sum(e.size or 0 for e in missing.values()), spec.repo_id, report=evicted)
        evicted += self._preflight(spec.repo_id, sum(e.size or 0 for e in missing.values()))
        with self.store.staging() as staging:
            # progressive: configs and tokenizer first, checked, then the weights
            first = {p: e for p, e in missing.items() if not is_weights(p)}
            try:
                self._fetch_all(spec.repo_id, commit, first, remote, staging, stats)
            except IntegrityError as exc:
                if include is not None or not exc.check.startswith("format"):
                    raise
                # the hash matched the listing: the Hub serves the file broken, fetching it again cannot help
                raise IntegrityError(exc.file, exc.check, exc.expected, exc.actual, exc.detail,
                                     hint=hint_for(spec.name) + " (The broken file is kept in quarantine.)") from None
            if include is None:
                small = {p: self.store.blob_path(spec.repo_id, e.blob_name) for p, e in files.items()
                         if not is_weights(p)}
                (staging / "check").mkdir()
                check_model_files(spec.name, small, staging / "check")
            self._fetch_all(spec.repo_id, commit, {p: e for p, e in missing.items() if p not in first}, remote,
                            staging, stats)
            entry = self._lock_entry(spec.repo_id, revision, commit, files, include)
            snapshot = publish(self.store, self.lockfile, repo_id=spec.repo_id, revision=revision, commit=commit,
                               files=files, staging=staging, source=remote.shown, verified=missing,
                               lock=entry is None)
            if entry is not None:
                self.lockfile.set(entry)
        result = PullResult(spec.repo_id, revision, commit, snapshot, remote.shown, files,
                            downloaded=sorted(missing), bytes_downloaded=sum(e.size or 0 for e in missing.values()),
                            seconds=time.perf_counter() - t0, stats=stats, evicted=evicted)
        log.info("pulled %s@%s (%s) from %s: %d files, %d bytes in %.1fs", spec.repo_id, revision,
                 commit[:12], remote.shown, len(missing), result.bytes_downloaded, result.seconds)
        metrics.observe_pull(result)
        return result

    def _preflight(self, repo_id: str, need: int) -> list[dict]:
        """The disk check before any byte moves. On a real shortfall, evict least recently used
        unpinned models and check again when ``model_cache.evict_on_disk_full`` allows it (returns
        them); else :class:`DiskSpaceError`."""
        margin = self.settings.download.disk_margin_mb
        try:
            self.store.preflight(need, margin)
            return []
        except DiskSpaceError:
            if not self.settings.model_cache.evict_on_disk_full:
                raise
        from modelcache.cache.diskroom import make_disk_room

        evicted = make_disk_room(self, need, margin, repo_id)
        self.store.preflight(need, margin)  # still short (a file held open elsewhere): the error, with the numbers
        return [{"repo_id": r, "reason": "disk full (model_cache.evict_on_disk_full)"} for r in evicted]

    def _fetch_all(self, repo_id: str, commit: str, missing: dict[str, FileExpectation], remote: RemoteRepo,
                   staging: Path, stats: RetryStats) -> None:
        """Fetch ``missing``, smallest first, ``model_cache.parallel_downloads`` at a time (a pull calls
        it for the configs and tokenizer, checks them, then calls it for the weights). The first failure stops the
        files not yet started and is raised; files already verified stay in ``blobs/``."""
        order = sorted(missing.values(), key=lambda e: (e.size or 0, e.path))
        workers = min(self.settings.model_cache.parallel_downloads, len(order))
        if workers <= 1:
            for exp in order:
                self._fetch_verified(repo_id, commit, exp, remote, staging, stats)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelcache-pull") as pool:
            futures = [pool.submit(self._fetch_verified, repo_id, commit, exp, remote, staging, stats)
                       for exp in order]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException as exc:
                for future in futures:
                    future.cancel()
                if remote.deadline is not None and not isinstance(exc, DiskSpaceError):
                    # files in flight stop at their next read, not at their own deadline (on a full
                    # disk they meet ENOSPC themselves and remove their partial file)
                    remote.deadline.abort(f"another file of this pull failed ({type(exc).__name__})")
                raise

    def _file_deadline(self, exp: FileExpectation, what: str, parent: Deadline | None) -> Deadline:
        """max(download.file_deadline_min_s, size at download.min_rate_kbps), within ``parent``."""
        d = self.settings.download
        seconds = max(d.file_deadline_min_s, (exp.size or 0) * 8 / (d.min_rate_kbps * 1000))
        setting = "download.file_deadline_min_s / download.min_rate_kbps"
        return Deadline(seconds, what, setting, parent=parent)

    def _fetch_verified(self, repo_id: str, commit: str, exp: FileExpectation, remote: RemoteRepo,
                        staging: Path, stats: RetryStats) -> Path:
        """Download one file (resumable), verify it, move it into blobs/. Re-fetch once on mismatch."""
        part = self.store.partial_path(repo_id, exp.blob_name)
        patience = [1.0]  # a request that timed out is retried with twice the timeouts (at most 8x)
        for attempt in (1, 2):
            what = f"download {repo_id}/{exp.path} from {remote.shown}"
            deadline = self._file_deadline(exp, what, remote.deadline)

            def fetch() -> int:
                from modelcache.hub.http import httpx
                from modelcache.hub.transfer import fetch_to_part

                try:
                    return fetch_to_part(repo_id, exp.path, commit, part, endpoint=remote.endpoint,
                                         token=remote.token, expected_size=exp.size,
                                         timeout=remote.timeout * patience[0],
                                         read_timeout=self.settings.model_cache.download_timeout * patience[0],
                                         deadline=deadline, compression=remote.compression,
                                         chunk_size=self.settings.download.chunk_size_kb * 1024)
                except httpx().TimeoutException:
                    patience[0] = min(patience[0] * 2, 8.0)
                    raise

            try:
                stats.bytes_received += remote.policy.call(fetch, what, stats, deadline=deadline)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                part.unlink(missing_ok=True)  # a partial file we cannot finish only holds the space
                raise DiskSpaceError(str(self.store.root), exp.size or 0,
                                     shutil.disk_usage(self.store.root).free) from exc
            try:
                verify_file(part, exp)
            except IntegrityError as err:
                metrics.record_validation_failure(err.check, repo_id)
                self.store.quarantine(repo_id, part, exp.path)
                log.warning("%s (attempt %d of 2)", err, attempt)
                if attempt == 2:
                    raise
                continue
            return self.store.install_blob(repo_id, part, exp.blob_name)
        raise AssertionError("unreachable")
