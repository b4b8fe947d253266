"""File checks: exists, size, sha256 (LFS) or git blob sha1 (small files), format.

The functional check (load + embed "Hello world") lives in :mod:`modelcache.manager`, which
owns backends. A :class:`StatStamp` lets a warm start trust a file verified before without
re-hashing it: size, mtime and inode must all be unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from modelcache._util import is_hex, safe_relpath
from modelcache.errors import IntegrityError, UnsafeFileError

_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class FileExpectation:
    """What a file must be: from the Hub's tree listing, the lockfile or the registry."""

    path: str
    size: int | None = None
    sha256: str | None = None
    blob_id: str | None = None  # git blob sha1, for non-LFS files

    def __post_init__(self) -> None:
        # what a server, lockfile or bundle says becomes a path and a blob name on disk: check it
        safe_relpath(self.path)
        if self.sha256 is not None and not is_hex(self.sha256, 64):
            raise UnsafeFileError(f"sha256 {self.sha256!r} of {self.path!r}", "must be 64 lowercase hex digits")
        if self.blob_id is not None and not is_hex(self.blob_id, 40):
            raise UnsafeFileError(f"git blob id {self.blob_id!r} of {self.path!r}", "must be 40 lowercase hex digits")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0):
            raise UnsafeFileError(f"size {self.size!r} of {self.path!r}", "must be a non-negative integer")

    @property
    def blob_name(self) -> str:
        """The name of the blob in the HF cache layout (sha256 for LFS, git sha1 otherwise)."""
        name = self.sha256 or self.blob_id
        if not name:
            raise ValueError(f"{self.path}: no hash known, cannot name its blob")
        return name

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "path"}

    @classmethod
    def from_dict(cls, path: str, data: dict) -> FileExpectation:
        return cls(path=path, size=data.get("size"), sha256=data.get("sha256"), blob_id=data.get("blob_id"))


@dataclass(frozen=True)
class StatStamp:
    size: int
    mtime_ns: int
    ino: int

    @classmethod
    def of(cls, path: Path) -> StatStamp:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)

    def as_list(self) -> list[int]:
        """The form kept in the repo metadata (``verified: {commit: {path: [size, mtime_ns, ino]}}``)."""
        return [self.size, self.mtime_ns, self.ino]


def expectation_from_blob(path: str, link: Path) -> FileExpectation:
    """Offline, the HF layout itself names the expected hash: blob = sha256 (64) or git sha1 (40)."""
    try:
        blob = os.path.basename(os.readlink(link)) if link.is_symlink() else ""
    except FileNotFoundError:  # removed by `rm` / `prune` in another process: checked as missing
        blob = ""
    if len(blob) == 64:
        return FileExpectation(path, sha256=blob)
    if len(blob) == 40:
        return FileExpectation(path, blob_id=blob)
    return FileExpectation(path)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file's content (what the Hub reports for non-LFS files)."""
    size = os.path.getsize(path)
    h = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_format(path: Path, name: str) -> None:
    """Parse what can be parsed cheaply: safetensors header, JSON files."""
    if name.endswith(".safetensors"):
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise IntegrityError(name, "format", detail="safetensors file shorter than its header")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 * 1024 * 1024):
                raise IntegrityError(name, "format", detail=f"safetensors header length {n} exceeds the file")
            try:
                header = json.loads(fh.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise IntegrityError(name, "format", detail=f"safetensors header is not JSON ({exc})") from None
        data_len = size - 8 - n
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            start, end = meta.get("data_offsets", (0, 0))
            if not 0 <= start <= end <= data_len:
                raise IntegrityError(name, "format", detail=f"tensor {key!r} lies outside the file")
    elif name.endswith(".json"):
        try:
            json.loads(Path(path).read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IntegrityError(name, "format", detail=f"not valid JSON ({exc})") from None


def verify_file(path: Path, exp: FileExpectation, check_hash: bool = True) -> str | None:
    """Raise :class:`IntegrityError` unless ``path`` matches ``exp``. Returns the sha256 if hashed."""
    if not path.exists():
        raise IntegrityError(exp.path, "exists", detail=f"missing at {path}")
    try:
        return _verify_present(Path(path), exp, check_hash)
    except FileNotFoundError:  # `rm` / `prune` in another process removed it while we read it
        raise IntegrityError(exp.path, "exists", detail=f"removed from {path} while it was checked") from None


def _verify_present(path: Path, exp: FileExpectation, check_hash: bool) -> str | None:
    size = os.path.getsize(path)
    if exp.size is not None and size != exp.size:
        raise IntegrityError(exp.path, "size", exp.size, size)
    digest = None
    if check_hash:
        if exp.sha256:
            digest = sha256_file(path)
            if digest != exp.sha256:
                raise IntegrityError(exp.path, "sha256", exp.sha256, digest)
        elif exp.blob_id:
            actual = git_blob_sha1(path)
            if actual != exp.blob_id:
                raise IntegrityError(exp.path, "git-sha1", exp.blob_id, actual)
    check_format(path, exp.path)
    return digest
