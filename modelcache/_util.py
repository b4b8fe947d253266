"""Small helpers every layer uses; imports nothing of modelcache but its errors.

- :func:`safe_relpath`: a file name from a server, lockfile or bundle that stays inside its directory.
- :func:`is_hex` / :func:`is_commit`: what a server, lockfile or bundle names as a hash.
- :func:`read_json`: a JSON file, or a default when it is missing or unreadable.
- :func:`atomic_write_json`: temp file in the same directory, fsync, rename into place.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

from modelcache.errors import UnsafeFileError

_DRIVE = re.compile(r"[A-Za-z]:")
_HEX = {40: re.compile(r"[0-9a-f]{40}"), 64: re.compile(r"[0-9a-f]{64}")}


def is_hex(value: object, length: int) -> bool:
    """True if ``value`` is a str of exactly ``length`` (40 or 64) lowercase hex digits."""
    return isinstance(value, str) and _HEX[length].fullmatch(value) is not None


def is_commit(revision: object) -> bool:
    """True if ``revision`` is a full commit hash (40 lowercase hex digits), not a branch or tag."""
    return is_hex(revision, 40)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def read_json(path: Path, default: Any = None) -> Any:
    """The parsed JSON of ``path``; ``default`` (``{}`` if None) when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return {} if default is None else default


#: what every file we write gets, whatever the umask: readable by all (a shared cache), writable by
#: its owner only (another local user must never rewrite pins, metadata or exports)
FILE_MODE = 0o644


def atomic_write_json(path: Path, data: Any, indent: int | None = None) -> None:
    """Write JSON to a process-unique temp file in the same directory, fsync, rename into place
    (mode :data:`FILE_MODE`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=indent, sort_keys=indent is not None)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def safe_relpath(path: str, what: str = "file") -> str:
    """``path`` if it is a plain relative POSIX path that stays inside the directory it is
    joined to; else :class:`UnsafeFileError`.

    A Hub, mirror, lockfile or bundle names files; a hostile one could name ``../../x``,
    ``/etc/x`` or ``C:x``. Refused: absolute paths, drive letters, ``..`` / ``.`` / empty
    segments, backslashes and NUL.
    """
    if not isinstance(path, str) or not path:
        raise UnsafeFileError(f"{what} {path!r}", "a file name must be a non-empty relative path")
    if "\\" in path or "\x00" in path:
        raise UnsafeFileError(f"{what} {path!r}", "backslashes and NUL are not allowed in a file name")
    if path.startswith("/") or _DRIVE.match(path):
        raise UnsafeFileError(f"{what} {path!r}", "an absolute path would escape the cache")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise UnsafeFileError(f"{what} {path!r}", "'..', '.' and empty path segments would escape the cache")
    return path
