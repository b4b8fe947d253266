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
match do blobs, the snapshot, the ref and the pin become visible.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm.auto import tqdm

from . import __version__ as _version
from . import budget
from .errors import DiskSpaceError, IntegrityError, OfflineError, UnsafeFileError
from .integrity import FileExpectation, StatStamp, check_format, git_blob_sha1, sha256_file
from .lockfile import Pin
from .manager import _expectation_from_blob

log = logging.getLogger("modelcache")

FORMAT = "modelcache-bundle"
VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class BundleIntegrityError(IntegrityError):
    """A file of a bundle does not match its manifest (or what is already pinned)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        message = str(self.args[0]).split(". The file was quarantined")[0]
        self.args = (message + ". Nothing was installed: the bundle is corrupt or altered; export it again.",)


@dataclass
class ImportResult:
    repo_id: str
    revision: str
    commit: str
    snapshot: Path
    files: list[str]
    bytes: int
    pinned: bool
    seconds: float
    functional: dict | None = None
    already_cached: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"repo_id": self.repo_id, "revision": self.revision, "commit": self.commit,
                "snapshot": str(self.snapshot), "files": self.files, "bytes": self.bytes, "pinned": self.pinned,
                "seconds": round(self.seconds, 3), "functional": self.functional,
                "already_cached": self.already_cached}


def _bar(total: int, desc: str, progress: bool | None) -> tqdm:
    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not show, leave=False)


def _safe_relpath(path: str, what: str) -> str:
    """``path`` if it is a plain relative POSIX path inside its root, else :class:`UnsafeFileError`."""
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path:
        raise UnsafeFileError(f"{what} {path!r}", "not a plain relative path")
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("/"):
        raise UnsafeFileError(f"{what} {path!r}", "absolute paths escape the cache")
    if any(part in ("..", ".", "") for part in path.split("/")):
        raise UnsafeFileError(f"{what} {path!r}", "'..' and empty path parts escape the cache")
    return path


# -- export -------------------------------------------------------------------------------
def export_bundle(mgr: Any, model: str, out: Path, revision: str | None = None,
                  progress: bool | None = None) -> dict:
    """Write ``model`` (cached, verified) to ``out`` as a bundle; returns the manifest.

    Zero network: the model must be in the cache. Its files are verified first (a corrupt
    cache is never exported) and hashed again while they are written.
    """
    spec = mgr.spec(model)
    revision = revision or spec.revision
    hit = mgr.puller.cached(spec, revision)
    if hit is None:
        raise OfflineError(spec.name, f"{spec.repo_id}@{revision} is not in the cache {mgr.store.root}; "
                                      "nothing to export")
    report = mgr.verify(spec, revision=revision)
    if not report.ok:
        path, why = next(iter(report.failures.items()))
        raise IntegrityError(path, "verify before export", detail=why)
    pin = mgr.lockfile.get(spec.repo_id, revision)
    links = mgr.store.snapshot_files(spec.repo_id, hit.commit)
    expected = {p: (pin.files[p] if pin and p in pin.files else _expectation_from_blob(p, link))
                for p, link in links.items()}
    files: dict[str, dict] = {}
    for path, link in sorted(links.items()):
        _safe_relpath(path, "cached file")
        target = link.resolve()
        exp = expected[path]
        blob = exp.sha256 or exp.blob_id or git_blob_sha1(target)
        files[path] = {"size": target.stat().st_size, "sha256": sha256_file(target), "blob": blob}
    manifest = {"format": FORMAT, "version": VERSION, "repo_id": spec.repo_id, "revision": revision,
                "commit": hit.commit, "pinned": pin is not None, "spec": spec.to_dict(),
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
        manifest = json.loads(tar.extractfile(member).read())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeFileError(MANIFEST, f"not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UnsafeFileError(MANIFEST, f"not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise UnsafeFileError(MANIFEST, f"bundle version {manifest.get('version')!r}; this modelcache reads {VERSION}")
    if not isinstance(manifest.get("repo_id"), str) or not _REPO.match(manifest["repo_id"]):
        raise UnsafeFileError(f"repo_id {manifest.get('repo_id')!r}", "must look like 'org/name'")
    if not isinstance(manifest.get("commit"), str) or not _HEX40.match(manifest["commit"]):
        raise UnsafeFileError(f"commit {manifest.get('commit')!r}", "must be 40 hex digits")
    if not isinstance(manifest.get("spec", {}), dict):
        raise UnsafeFileError(f"the manifest's spec ({type(manifest['spec']).__name__})", "must be a mapping")
    revision = manifest.get("revision")
    if not isinstance(revision, str) or not revision:
        raise UnsafeFileError(f"revision {revision!r}", "must be a branch, tag or commit")
    _safe_relpath(revision, "revision")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise UnsafeFileError(MANIFEST, "lists no files")
    for path, info in files.items():
        _safe_relpath(path, "manifest file")
        if not isinstance(info, dict) or not isinstance(info.get("size"), int) or info["size"] < 0:
            raise UnsafeFileError(f"manifest entry {path!r}", "needs a non-negative integer size")
        if not _HEX64.match(str(info.get("sha256", ""))):
            raise UnsafeFileError(f"manifest entry {path!r}", "needs a sha256 of 64 hex digits")
        blob = str(info.get("blob", ""))
        if not (_HEX64.match(blob) or _HEX40.match(blob)):
            raise UnsafeFileError(f"manifest entry {path!r}", "needs a blob name (sha256 or git sha1)")
        if _HEX64.match(blob) and blob != info["sha256"]:
            raise UnsafeFileError(f"manifest entry {path!r}", "its blob name and sha256 disagree")
    return manifest


def check_members(tar: tarfile.TarFile, manifest: dict) -> list[tarfile.TarInfo]:
    """Every member, refused unless it is a regular file the manifest lists with that size."""
    files = manifest["files"]
    seen: set[str] = set()
    keep = []
    for m in tar.getmembers():
        name = m.name
        _safe_relpath(name, "bundle entry")
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


def _spec_for(mgr: Any, manifest: dict):
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


def _verify_staged(root: Path, manifest: dict, known: dict[str, str], bar: tqdm) -> dict[str, list]:
    """Hash every extracted file; raise :class:`IntegrityError` on the first mismatch."""
    stamps = {}
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
                                 detail="the bundle holds different content than pinned")
        if len(info["blob"]) == 40 and git_blob_sha1(f) != info["blob"]:
            raise BundleIntegrityError(path, "git-sha1", info["blob"], git_blob_sha1(f))
        try:
            check_format(f, path)
        except IntegrityError as exc:
            detail = str(exc).split("check failed: ", 1)[-1].split(". The file was")[0]
            raise BundleIntegrityError(path, "format", detail=detail) from None
        bar.update(size)
        st = StatStamp.of(f)
        stamps[path] = st
    return stamps


def _preflight(mgr: Any, need: int) -> None:
    free = shutil.disk_usage(mgr.store.root).free
    margin = mgr.settings.download.disk_margin_mb * 1024 * 1024
    if need + margin > free:
        raise DiskSpaceError(str(mgr.store.root), need + margin, free)


def import_bundle(mgr: Any, file: Path, progress: bool | None = None, functional: bool = False) -> ImportResult:
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
        for pin in mgr.lockfile.pins():
            if pin.repo_id == repo_id and pin.commit == commit:
                known.update({p: e.sha256 for p, e in pin.files.items() if e.sha256})
        expectations = {p: _expectation(p, info) for p, info in manifest["files"].items()}
        total = sum(info["size"] for info in manifest["files"].values())
        with store.lock(repo_id), store.staging() as staging:
            root = staging / "bundle"
            root.mkdir()
            budget.ensure_room(mgr, total, repo_id)
            _preflight(mgr, total)
            with _bar(total, f"import {repo_id}", progress) as bar:
                try:
                    tar.extractall(root, members=members, filter="data")
                except (tarfile.TarError, OSError) as exc:
                    raise UnsafeFileError(f"the bundle {file}", f"it does not extract cleanly ({exc})") from None
                stamps = _verify_staged(root, manifest, known, bar)
            present = []
            for path, exp in expectations.items():
                if store.blob_path(repo_id, exp.blob_name).exists():
                    present.append(path)
                store.install_blob(repo_id, root / "files" / path, exp.blob_name)
            snapshot = store.publish_snapshot(repo_id, commit, expectations, staging)
        store.write_ref(repo_id, revision, commit)
    if manifest.get("pinned", True):
        mgr.lockfile.set(Pin(repo_id, revision, commit, expectations))
    verified = store.read_meta(repo_id).get("verified", {})
    verified.setdefault(commit, {}).update({
        p: [st.size, st.mtime_ns, st.ino] for p, st in stamps.items() if p not in present})
    store.update_meta(repo_id, downloaded_at=time.time(), source_endpoint=f"bundle:{file.name}", size=total,
                      revision=revision, commit=commit, verified=verified, last_validated=time.time())
    result = ImportResult(repo_id, revision, commit, snapshot, sorted(expectations), total,
                          bool(manifest.get("pinned", True)), 0.0, already_cached=sorted(present))
    if functional and ((snapshot / "modules.json").exists() or (snapshot / "config.json").exists()):
        result.functional = mgr.functional_check(spec, commit)
    result.seconds = time.perf_counter() - t0
    log.info("imported %s@%s (%s) from %s", repo_id, revision, commit[:12], file)
    return result


__all__ = ["export_bundle", "import_bundle", "read_manifest", "check_members", "ImportResult", "BundleIntegrityError"]
