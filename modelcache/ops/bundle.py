"""Offline bundles: one ``.tar.gz`` that carries a cached model to a machine without network.

Layout::

    manifest.json          format, repo_id, revision, commit, spec, files {path: size, sha256, blob}
    files/<path>           the file contents (regular files only)

``blob`` is the file's name in the HF cache layout (sha256 for LFS files, git blob sha1 for
small ones), so an imported cache is byte-for-byte what a pull would have made.

Import never trusts the archive: every member must be a regular file named ``manifest.json``
or ``files/<path>`` listed in the manifest, with the manifest's size; ``..``, absolute paths,
links and devices are refused before anything is extracted (and ``tarfile``'s ``data`` filter
is applied on top). Every file is hashed in a private staging dir, and only when all of them
match do blobs, the snapshot, the ref and the lock entry become visible.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from modelcache._util import is_hex
from modelcache._version import __version__ as _version
from modelcache.cache import budget
from modelcache.cache.integrity import (
    FileExpectation,
    check_format,
    expectation_from_blob,
    git_blob_sha1,
    safe_relpath,
    sha256_file,
)
from modelcache.cache.publish import publish
from modelcache.errors import (
    BundleIntegrityError,
    ConfigError,
    IntegrityError,
    OfflineError,
    UnsafeFileError,
)
from modelcache.manager import ModelManager
from modelcache.registry import check_repo_id

log = logging.getLogger("modelcache")

FORMAT = "modelcache-bundle"
VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class ImportResult:
    repo_id: str
    revision: str
    commit: str
    snapshot: Path
    files: list[str]
    bytes: int
    locked: bool
    seconds: float
    functional: dict | None = None
    already_cached: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"repo_id": self.repo_id, "revision": self.revision, "commit": self.commit,
                "snapshot": str(self.snapshot), "files": self.files, "bytes": self.bytes, "locked": self.locked,
                "seconds": round(self.seconds, 3), "functional": self.functional,
                "already_cached": self.already_cached}


def _bar(total: int, desc: str, progress: bool | None) -> tqdm:
    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not show, leave=False)


# -- export -------------------------------------------------------------------------------
def export_bundle(mgr: ModelManager, model: str, out: Path, revision: str | None = None,
                  progress: bool | None = None) -> dict:
    """Write ``model`` (cached, verified) to ``out`` as a bundle; returns the manifest.

    Zero network: the model must be in the cache. Its files are verified first (a corrupt
    cache is never exported) and hashed again while they are written.
    """
    spec = mgr.spec(model)
    revision = revision or spec.revision
    locked = mgr.lockfile.get(spec.repo_id, revision)
    hit = mgr.puller.cached(spec, revision)
    if hit is None and locked is not None and locked.includes:  # an any-file pull (GGUF, ...), pinned
        hit = mgr.puller.cached(spec, revision, include=locked.includes)
    if hit is None:
        raise OfflineError(spec.name, f"{spec.repo_id}@{revision} is not in the cache {mgr.store.root}; "
                                      "nothing to export")
    report = mgr.verify(spec, revision=revision)
    if not report.ok:
        path, why = next(iter(report.failures.items()))
        raise IntegrityError(path, "verify before export", detail=why)
    links = mgr.store.snapshot_files(spec.repo_id, hit.commit)
    expected = {p: (locked.files[p] if locked and p in locked.files else expectation_from_blob(p, link))
                for p, link in links.items()}
    files: dict[str, dict] = {}
    for path, link in sorted(links.items()):
        safe_relpath(path, "cached file")
        target = link.resolve()
        exp = expected[path]
        blob = exp.sha256 or exp.blob_id or git_blob_sha1(target)
        files[path] = {"size": target.stat().st_size, "sha256": sha256_file(target), "blob": blob}
    manifest = {"format": FORMAT, "version": VERSION, "repo_id": spec.repo_id, "revision": revision,
                "commit": hit.commit, "locked": locked is not None and locked.model, "spec": spec.to_dict(),
                "created_at": time.time(), "modelcache": _version, "files": files}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=3, format=tarfile.PAX_FORMAT) as tar, \
                _bar(sum(f["size"] for f in files.values()), f"export {spec.name}", progress) as bar:
            tar.addfile(_member(MANIFEST, len(data)), _BytesReader(data))
            for path, info in files.items():
                with open(links[path], "rb") as fh:
                    tar.addfile(_member(f"files/{path}", info["size"]), _Counting(fh, bar))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("exported %s@%s (%s) to %s", spec.repo_id, revision, hit.commit[:12], out)
    return manifest


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, int(time.time()), tarfile.REGTYPE
    return info


class _BytesReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return chunk


class _Counting:
    def __init__(self, fh, bar: tqdm):
        self.fh, self.bar = fh, bar

    def read(self, n: int = -1) -> bytes:
        chunk = self.fh.read(n)
        self.bar.update(len(chunk))
        return chunk


# -- import -------------------------------------------------------------------------------
def read_manifest(tar: tarfile.TarFile) -> dict:
    """The bundle's manifest, checked for shape (paths, hashes, sizes)."""
    try:
        member = tar.getmember(MANIFEST)
    except KeyError:
        raise UnsafeFileError("the bundle", f"it has no {MANIFEST}; not a modelcache bundle") from None
    if not member.isreg() or member.size > MAX_MANIFEST_BYTES:
        raise UnsafeFileError(f"{MANIFEST}", "must be a regular file under 16 MiB")
    try:
        fh = tar.extractfile(member)
        manifest = json.loads(fh.read() if fh is not None else b"")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeFileError(MANIFEST, f"not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UnsafeFileError(MANIFEST, f"not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise UnsafeFileError(MANIFEST, f"bundle version {manifest.get('version')!r}; this modelcache reads {VERSION}")
    if not isinstance(manifest.get("repo_id"), str) or not _REPO.match(manifest["repo_id"]):
        raise UnsafeFileError(f"repo_id {manifest.get('repo_id')!r}", "must look like 'org/name'")
    try:
        check_repo_id(manifest["repo_id"])
    except ConfigError as exc:
        raise UnsafeFileError(f"repo_id {manifest['repo_id']!r}", str(exc)) from None
    if not isinstance(manifest.get("commit"), str) or not is_hex(manifest["commit"], 40):
        raise UnsafeFileError(f"commit {manifest.get('commit')!r}", "must be 40 hex digits")
    if not isinstance(manifest.get("spec", {}), dict):
        raise UnsafeFileError(f"the manifest's spec ({type(manifest['spec']).__name__})", "must be a mapping")
    revision = manifest.get("revision")
    if not isinstance(revision, str) or not revision:
        raise UnsafeFileError(f"revision {revision!r}", "must be a branch, tag or commit")
    safe_relpath(revision, "revision")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise UnsafeFileError(MANIFEST, "lists no files")
    for path, info in files.items():
        safe_relpath(path, "manifest file")
        if not isinstance(info, dict) or not isinstance(info.get("size"), int) or info["size"] < 0:
            raise UnsafeFileError(f"manifest entry {path!r}", "needs a non-negative integer size")
        if not is_hex(info.get("sha256"), 64):
            raise UnsafeFileError(f"manifest entry {path!r}", "needs a sha256 of 64 hex digits")
        blob = str(info.get("blob", ""))
        if not (is_hex(blob, 64) or is_hex(blob, 40)):
            raise UnsafeFileError(f"manifest entry {path!r}", "needs a blob name (sha256 or git sha1)")
        if is_hex(blob, 64) and blob != info["sha256"]:
            raise UnsafeFileError(f"manifest entry {path!r}", "its blob name and sha256 disagree")
    return manifest


def check_members(tar: tarfile.TarFile, manifest: dict) -> list[tarfile.TarInfo]:
    """Every member, refused unless it is a regular file the manifest lists with that size."""
    files = manifest["files"]
    seen: set[str] = set()
    keep = []
    for m in tar.getmembers():
        name = m.name
        safe_relpath(name, "bundle entry")
        if m.issym() or m.islnk():
            raise UnsafeFileError(f"bundle entry {name!r}", "links are not allowed in a bundle")
        if m.isdev() or m.isfifo() or m.ischr() or m.isblk():
            raise UnsafeFileError(f"bundle entry {name!r}", "device and fifo entries are not allowed")
        if m.isdir():
            continue
        if not m.isreg():
            raise UnsafeFileError(f"bundle entry {name!r}", "only regular files are allowed")
        if name in seen:
            raise UnsafeFileError(f"bundle entry {name!r}", "appears twice")
        seen.add(name)
        if name == MANIFEST:
            continue
        if not name.startswith("files/") or name[len("files/"):] not in files:
            raise UnsafeFileError(f"bundle entry {name!r}", "not listed in the manifest")
        if m.size != files[name[len("files/"):]]["size"]:
            raise UnsafeFileError(f"bundle entry {name!r}",
                                  f"size {m.size} differs from the manifest's {files[name[6:]]['size']}")
        keep.append(m)
    missing = sorted(set(files) - {m.name[len("files/"):] for m in keep})
    if missing:
        raise UnsafeFileError("the bundle", f"files listed in the manifest are missing: {', '.join(missing)}")
    return keep


def _expectation(path: str, info: dict) -> FileExpectation:
    blob = info["blob"]
    if len(blob) == 64:
        return FileExpectation(path, info["size"], sha256=blob)
    return FileExpectation(path, info["size"], blob_id=blob)


def _spec_for(mgr: ModelManager, manifest: dict):
    """The registry entry for the bundle's repo (by name if it names the same repo)."""
    name = (manifest.get("spec") or {}).get("name")
    if isinstance(name, str) and name:
        try:
            spec = mgr.spec(name)
            if spec.repo_id == manifest["repo_id"] and spec.source == "hub":
                return spec
        except (KeyError, ValueError):
            pass
    return mgr.spec(manifest["repo_id"])


def _verify_staged(root: Path, manifest: dict, known: dict[str, str], bar: tqdm) -> None:
    """Hash every extracted file; raise :class:`IntegrityError` on the first mismatch."""
    for path, info in sorted(manifest["files"].items()):
        f = root / "files" / path
        if f.is_symlink() or not f.is_file():
            raise UnsafeFileError(f"bundle entry {path!r}", "did not extract as a regular file")
        size = f.stat().st_size
        if size != info["size"]:
            raise BundleIntegrityError(path, "size", info["size"], size)
        digest = sha256_file(f)
        if digest != info["sha256"]:
            raise BundleIntegrityError(path, "sha256", info["sha256"], digest)
        if known.get(path) and known[path] != digest:
            raise BundleIntegrityError(path, "sha256 (registry/lockfile vs bundle)", known[path], digest,
                                 detail="the bundle holds different content than the lock entry")
        if len(info["blob"]) == 40 and git_blob_sha1(f) != info["blob"]:
            raise BundleIntegrityError(path, "git-sha1", info["blob"], git_blob_sha1(f))
        try:
            check_format(f, path)
        except IntegrityError as exc:
            detail = exc.detail
            raise BundleIntegrityError(path, "format", detail=detail) from None
        bar.update(size)


def _carries_lock(manifest: dict) -> bool:
    """Whether the bundle's model goes into the lockfile (``locked``; bundles of version 1 said ``pinned``)."""
    return bool(manifest.get("locked", manifest.get("pinned", True)))


def import_bundle(mgr: ModelManager, file: Path, progress: bool | None = None,
                  functional: bool = False) -> ImportResult:
    """Install a bundle into the cache with zero network; verify everything before publishing.

    Raises :class:`UnsafeFileError` for a hostile archive and :class:`IntegrityError` for a
    hash mismatch; in both cases nothing of the bundle becomes visible in the cache.
    ``functional`` also loads the model and embeds "Hello world" after installing it.
    """
    t0 = time.perf_counter()
    file = Path(file)
    store = mgr.store
    store._require_writable(f"import {file}")
    try:
        tar = tarfile.open(file, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise UnsafeFileError(f"the bundle {file}", f"not a readable tar archive ({exc})") from None
    with tar:
        manifest = read_manifest(tar)
        members = check_members(tar, manifest)
        spec = _spec_for(mgr, manifest)
        repo_id, commit, revision = manifest["repo_id"], manifest["commit"], manifest["revision"]
        known = dict(spec.known_sha256)
        for locked in mgr.lockfile.entries():
            if locked.repo_id == repo_id and locked.commit == commit:
                known.update({p: e.sha256 for p, e in locked.files.items() if e.sha256})
        expectations = {p: _expectation(p, info) for p, info in manifest["files"].items()}
        total = sum(info["size"] for info in manifest["files"].values())
        with store.lock(repo_id), store.staging() as staging:
            root = staging / "bundle"
            root.mkdir()
            budget.ensure_room(mgr, total, repo_id)
            store.preflight(total, mgr.settings.download.disk_margin_mb)
            with _bar(total, f"import {repo_id}", progress) as bar:
                try:
                    tar.extractall(root, members=members, filter="data")
                except (tarfile.TarError, OSError) as exc:
                    raise UnsafeFileError(f"the bundle {file}", f"it does not extract cleanly ({exc})") from None
                _verify_staged(root, manifest, known, bar)
            present = [p for p, e in expectations.items() if store.blob_path(repo_id, e.blob_name).exists()]
            for path, exp in expectations.items():
                store.install_blob(repo_id, root / "files" / path, exp.blob_name)
            snapshot = publish(store, mgr.lockfile, repo_id=repo_id, revision=revision, commit=commit,
                               files=expectations, staging=staging, source=f"bundle:{file.name}",
                               verified=[p for p in expectations if p not in present],
                               lock=_carries_lock(manifest))
    result = ImportResult(repo_id, revision, commit, snapshot, sorted(expectations), total,
                          _carries_lock(manifest), 0.0, already_cached=sorted(present))
    if functional and ((snapshot / "modules.json").exists() or (snapshot / "config.json").exists()):
        result.functional = mgr.functional_check(spec, commit)
    result.seconds = time.perf_counter() - t0
    log.info("imported %s@%s (%s) from %s", repo_id, revision, commit[:12], file)
    return result


__all__ = ["export_bundle", "import_bundle", "read_manifest", "check_members", "ImportResult", "BundleIntegrityError"]
