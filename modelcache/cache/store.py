"""The on-disk cache, in the Hugging Face hub layout, plus our metadata beside it.

    <cache>/models--org--name/blobs/<sha256 or git sha1>     file contents, verified before they land
    <cache>/models--org--name/snapshots/<commit>/<path>      relative symlinks to blobs
    <cache>/models--org--name/refs/<revision>                commit hash
    <cache>/models--org--name/modelcache.json                our metadata (ignored by `hf cache`)
    <cache>/models--org--name/quarantine/                    files that failed a check, kept aside
    <cache>/.locks/modelcache/                               locks, staging, lockfile (skipped by `hf cache`)

Nothing half-written is ever visible under ``snapshots/``: blobs are moved in only after they
verify, and a new snapshot directory is assembled in staging and renamed into place at once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from modelcache._util import FILE_MODE, is_commit, read_json, safe_relpath
from modelcache.cache.integrity import FileExpectation
from modelcache.errors import DiskSpaceError, ReadOnlyCacheError, UnsafeFileError

log = logging.getLogger("modelcache")


def repo_folder(repo_id: str) -> str:
    """The cache folder of ``repo_id`` (HF layout). Ids with ``--`` or ``..`` are refused: ``a--x/y``
    and ``a/x--y`` would share ``models--a--x--y`` (and ``rm`` of one would delete the other)."""
    if not isinstance(repo_id, str) or "--" in repo_id or ".." in repo_id or repo_id.count("/") > 1 or (
            not repo_id or repo_id.startswith("/") or repo_id.endswith("/")):
        raise UnsafeFileError(f"repo id {repo_id!r}", "a repo id is 'name' or 'org/name' without '--' or '..' "
                              "(the Hub's own rule); it would collide with another repo's cache folder")
    return "models--" + repo_id.replace("/", "--")


def iso_now(at: float | None = None) -> str:
    """A metadata timestamp: ISO-8601 in UTC with the offset (``2026-12-01T12:42:34+00:00``)."""
    return datetime.fromtimestamp(time.time() if at is None else at, timezone.utc).isoformat(timespec="seconds")


def meta_time(value: Any) -> float | None:
    """A metadata timestamp as a unix time: an ISO-8601 string (written now) or a number (the
    format before ISO timestamps); None when absent or unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
    return None


def host_tag() -> str:
    """A short name for this host and boot (hostname + kernel boot id): a staging dir named with
    it and a pid that is gone can be removed at once; from another host or container, only after
    a grace period (its pid means nothing here)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return hashlib.sha1(f"{socket.gethostname()}|{boot}".encode()).hexdigest()[:8]


def remove_tree(path: Path, attempts: int = 5) -> bool:
    """Delete a directory tree that a racing writer may still drop a last file into; retry
    briefly, and say what is left (``modelcache prune`` removes leftover trash later)."""
    for attempt in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return True
        time.sleep(0.02 * (attempt + 1))
    log.warning("could not delete %s completely; `modelcache prune` removes what is left", path)
    return False


@dataclass
class CachedRepo:
    repo_id: str
    path: Path
    size: int
    commits: list[str]
    refs: dict[str, str]
    meta: dict


class CacheStore:
    def __init__(self, root: Path, read_only: bool | None = None):
        self.root = Path(root)
        if read_only is None:
            read_only = self._detect_read_only()
        self.read_only = read_only

    def _detect_read_only(self) -> bool:
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return not os.access(probe, os.W_OK)

    # -- paths --------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.root / ".locks" / "modelcache"

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / repo_folder(repo_id)

    def snapshot_dir(self, repo_id: str, commit: str) -> Path:
        return self.repo_dir(repo_id) / "snapshots" / commit

    def _require_writable(self, action: str) -> None:
        if self.read_only:
            raise ReadOnlyCacheError(str(self.root), action)

    # -- refs ---------------------------------------------------------------------------
    def resolve(self, repo_id: str, revision: str) -> str | None:
        """The cached commit for a revision (a commit hash resolves to itself if cached)."""
        if is_commit(revision):
            return revision if self.snapshot_dir(repo_id, revision).is_dir() else None
        try:
            ref = self.repo_dir(repo_id) / "refs" / safe_relpath(revision, "revision")
        except UnsafeFileError:
            return None  # no such ref can exist in the cache
        try:
            commit = ref.read_text().strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        if not is_commit(commit):  # a ref holds a commit hash, nothing else is followed
            return None
        return commit if self.snapshot_dir(repo_id, commit).is_dir() else None

    def write_ref(self, repo_id: str, revision: str, commit: str) -> None:
        if is_commit(revision) or self.read_only:
            return
        if not is_commit(commit):
            raise UnsafeFileError(f"commit {commit!r}", "a ref must point to 40 lowercase hex digits")
        ref = self.repo_dir(repo_id) / "refs" / safe_relpath(revision, "revision")
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(commit)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, ref)

    # -- locks and staging ----------------------------------------------------------------
    @contextmanager
    def lock(self, repo_id: str, timeout: float = 3600) -> Iterator[None]:
        """Exclusive across processes for one repo; released by the OS if the holder dies."""
        self._require_writable(f"lock {repo_id}")
        path = self.state_dir / "locks" / f"{repo_folder(repo_id)}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=timeout)
        try:
            with lock:
                yield
        except Timeout:
            raise TimeoutError(f"Waited {timeout}s for another process pulling {repo_id} ({path})") from None

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A private directory on the cache's filesystem, removed on exit."""
        self._require_writable("download")
        path = self.state_dir / "staging" / f"{os.getpid()}-{host_tag()}-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            remove_tree(path, attempts=2)

    def preflight(self, need: int, margin_mb: float = 0) -> None:
        """Raise :class:`DiskSpaceError` unless ``need`` bytes (plus ``margin_mb``) fit on the cache's disk."""
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        margin = int(margin_mb * 1024 * 1024)
        if need + margin > free:
            raise DiskSpaceError(str(self.root), need + margin, free)

    def partial_path(self, repo_id: str, blob_name: str) -> Path:
        """Where a download in progress lives; kept across processes so the next pull resumes."""
        return self.state_dir / "partial" / repo_folder(repo_id) / f"{blob_name}.part"

    # -- blobs and snapshots --------------------------------------------------------------
    def blob_path(self, repo_id: str, blob_name: str) -> Path:
        return self.repo_dir(repo_id) / "blobs" / blob_name

    def install_blob(self, repo_id: str, src: Path, blob_name: str) -> Path:
        """Move a verified file into ``blobs/`` (atomic rename on the same filesystem)."""
        dest = self.blob_path(repo_id, blob_name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            src.unlink(missing_ok=True)
        else:
            os.chmod(src, 0o644)
            os.replace(src, dest)
        return dest

    def publish_snapshot(self, repo_id: str, commit: str, files: dict[str, FileExpectation],
                         staging: Path) -> Path:
        """Make ``snapshots/<commit>`` hold a link for every file, all at once if new.

        The commit and every path come from a Hub, a mirror or a bundle: a commit that is not
        40 hex digits or a path that would leave the snapshot raises :class:`UnsafeFileError`
        before anything is linked.
        """
        if not is_commit(commit):
            raise UnsafeFileError(f"commit {commit!r}", "a snapshot must be named by 40 lowercase hex digits")
        for path, exp in files.items():
            safe_relpath(path)
            exp.blob_name  # noqa: B018 - raises if no hash names the blob
        snap = self.snapshot_dir(repo_id, commit)
        (self.repo_dir(repo_id) / "snapshots").mkdir(parents=True, exist_ok=True)
        if not snap.exists():
            tmp = staging / f"snapshot-{uuid.uuid4().hex[:8]}"
            for path, exp in files.items():
                self._link(tmp, path, exp.blob_name)
            try:
                os.rename(tmp, snap)
                return snap
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                # only "another writer published first" is fine (filled in below); anything else
                # must not fall through to linking file by file into a half-made snapshot
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not snap.is_dir():
                    raise
        for path, exp in files.items():
            link = snap / path
            if not os.path.lexists(link) or os.readlink(link) != self._target(path, exp.blob_name):
                tmp_root = staging / f"link-{uuid.uuid4().hex[:8]}"
                self._link(tmp_root, path, exp.blob_name)
                link.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_root / path, link)
        return snap

    @staticmethod
    def _target(path: str, blob_name: str) -> str:
        depth = path.count("/") + 2  # snapshots/<commit>/<dirs...>/file -> repo dir
        return "/".join([".."] * depth + ["blobs", blob_name])

    def _link(self, root: Path, path: str, blob_name: str) -> None:
        link = root / path
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(self._target(path, blob_name), link)

    def snapshot_files(self, repo_id: str, commit: str) -> dict[str, Path]:
        snap = self.snapshot_dir(repo_id, commit)
        if not snap.is_dir():
            return {}
        try:
            return {p.relative_to(snap).as_posix(): p for p in sorted(snap.rglob("*"))
                    if p.is_file() or p.is_symlink()}
        except FileNotFoundError:  # `rm` / `prune` in another process renamed the repo away as we listed it
            return {}

    # -- quarantine -----------------------------------------------------------------------
    def quarantine(self, repo_id: str, path: Path, name: str) -> Path | None:
        """Move a bad file aside (never silently deleted). Returns where it went."""
        if self.read_only or not path.exists():
            return None
        repo = self.repo_dir(repo_id)
        qdir = repo / "quarantine"
        dest = qdir / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}-{name.replace('/', '_')}"
        # a file of the repo (a blob) is quarantined only while the repo is there: never re-create
        # a repo that `rm` / `prune` just removed; a pull's own download may create it
        inside = Path(os.path.realpath(path)).is_relative_to(os.path.realpath(repo))
        try:
            qdir.mkdir(parents=not inside, exist_ok=True)
            os.replace(path, dest)
        except FileNotFoundError:  # removed meanwhile: nothing left to keep aside
            return None
        log.warning("quarantined %s of %s to %s", name, repo_id, dest)
        return dest

    def drop_link(self, repo_id: str, commit: str, path: str) -> None:
        if not self.read_only:
            (self.snapshot_dir(repo_id, commit) / path).unlink(missing_ok=True)

    # -- metadata -------------------------------------------------------------------------
    def _meta_path(self, repo_id: str) -> Path:
        return self.repo_dir(repo_id) / "modelcache.json"

    def read_meta(self, repo_id: str) -> dict:
        path = self._meta_path(repo_id)
        try:
            meta = json.loads(path.read_text("utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            # advisory data (stamps, access times, pins): start again, but say so
            log.warning("metadata %s is unreadable (%s); it is rebuilt, files will be re-hashed", path, exc)
            return {}
        if not isinstance(meta, dict):
            log.warning("metadata %s is not a JSON object; it is rebuilt", path)
            return {}
        return meta

    def update_meta(self, repo_id: str, **changes) -> dict:
        """Merge ``changes`` into the repo's metadata; a no-op on a read-only cache."""
        meta = self.read_meta(repo_id)
        meta.update(changes)
        if self.read_only or not self.repo_dir(repo_id).is_dir():
            return meta
        path = self._meta_path(repo_id)
        # the temp file lives in the state dir, not in the repo: `rm` / `prune` in another process
        # may rename the repo away at any moment, and a file written into it then would be left
        # behind in the trash (measured in tests/reliability/test_r13_concurrent_rm.py)
        tmp = self.state_dir / "tmp" / f"{repo_folder(repo_id)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), "utf-8")
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
        except OSError as exc:  # the repo was removed meanwhile, or a read-only mount we did not detect
            tmp.unlink(missing_ok=True)
            expected = exc.errno in (errno.ENOENT, errno.EROFS, errno.EACCES, errno.EPERM)
            log.log(logging.DEBUG if expected else logging.WARNING, "metadata for %s not written: %s", repo_id, exc)
        return meta

    def touch(self, repo_id: str) -> None:
        meta = self.read_meta(repo_id)
        self.update_meta(repo_id, access_count=int(meta.get("access_count") or 0) + 1, last_access=iso_now())

    # -- listing and removal --------------------------------------------------------------
    def repos(self) -> list[CachedRepo]:
        out: list[CachedRepo] = []
        if not self.root.is_dir():
            return out
        exports = self._exports()
        for d in sorted(self.root.glob("models--*")):
            repo_id = d.name[len("models--"):].replace("--", "/")
            refs = {}
            if (d / "refs").is_dir():
                refs = {p.relative_to(d / "refs").as_posix(): p.read_text().strip()
                        for p in (d / "refs").rglob("*") if p.is_file()}
            commits = sorted(p.name for p in (d / "snapshots").iterdir()) if (d / "snapshots").is_dir() else []
            size = sum(p.stat().st_size for p in (d / "blobs").iterdir()) if (d / "blobs").is_dir() else 0
            size += sum(e.stat().st_size for e in self._derived(d, exports))  # its ONNX exports are its size too
            out.append(CachedRepo(repo_id, d, size, commits, refs, self.read_meta(repo_id)))
        return out

    def _exports(self) -> list[tuple[Path, str]]:
        """Every ONNX export entry with the (real) path it was made from, read once per listing."""
        root = self.state_dir / "onnx"
        return [(p.parent, os.path.realpath(str(read_json(p).get("source", "")) or "/nonexistent"))
                for p in sorted(root.glob("*/meta.json"))] if root.is_dir() else []

    def _derived(self, repo_dir: Path, exports: list[tuple[Path, str]] | None = None,
                 drop: bool = False) -> list[Path]:
        """The ONNX files made from a repo's snapshots (exports, and the int8 files made from those)."""
        exports = self._exports() if exports is None else exports
        mine = [os.path.realpath(repo_dir)]
        picked: list[Path] = []
        for _ in range(2):  # an int8 file's source is the fp32 export it was made from: one more pass finds it
            for entry, source in exports:
                if entry not in picked and any(source == g or source.startswith(g + os.sep) for g in mine):
                    picked.append(entry)
                    mine.append(os.path.realpath(entry))
        found = [e / "model.onnx" for e in picked if (e / "model.onnx").exists()]
        if drop:
            for entry in picked:
                shutil.rmtree(entry, ignore_errors=True)
        return found

    def remove(self, repo_id: str) -> bool:
        self._require_writable(f"remove {repo_id}")
        d = self.repo_dir(repo_id)
        if not d.exists():
            return False
        with self.lock(repo_id):
            if not d.exists():
                return False  # another process removed it while we waited for the lock
            trash = self.state_dir / "trash" / f"{d.name}-{uuid.uuid4().hex[:6]}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(d, trash)  # disappears at once for readers; then delete at leisure
        self.drop_derived(d)
        remove_tree(trash)
        return True

    def drop_derived(self, repo_dir: Path) -> None:
        """Remove what was made from a removed repo's files (its ONNX exports), so removing or evicting
        a model frees all the room it took."""
        self._derived(repo_dir, drop=True)
