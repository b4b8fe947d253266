"""The lockfile: for every model verified once, the commit and per-file hashes it is locked to
(trust on first use).

Like a package lock: written on the first verified download, read from then on, also offline.
Its entries are *lock entries* (:class:`LockEntry`); "pinned" elsewhere means "exempt from
eviction" (``modelcache pin``). The file format (version 1) keeps its original key names::

    {"version": 1,
     "pins": {"<repo_id>@<revision>": {"commit": "<40 hex>", "pinned_at": <unix>,
                                       "files": {"<path>": {"size": n, "sha256": ..., "blob_id": ...}},
                                       "includes": ["*.gguf"], "model": false}}}

``includes`` (optional) names the ``pull --include`` patterns whose files the entry pins (GGUF
weights, any files); ``model`` (optional, default true) says whether the model's own file set
is pinned too. An entry of an any-file pull of a repo is ``model: false``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from modelcache._util import FILE_MODE
from modelcache.cache.integrity import FileExpectation
from modelcache.errors import ConfigError


@dataclass(frozen=True)
class LockEntry:
    """One ``repo@revision`` locked to a commit and the expected size and hash of each file."""

    repo_id: str
    revision: str
    commit: str
    files: dict[str, FileExpectation]
    locked_at: float = 0.0
    includes: tuple[str, ...] = ()
    """``pull --include`` patterns whose files this entry pins."""
    model: bool = True
    """Whether the model's file set (the registry's include patterns) is pinned."""


def _entry(repo_id: str, revision: str, entry: dict) -> LockEntry:
    files = {p: FileExpectation.from_dict(p, d) for p, d in entry["files"].items()}
    includes = tuple(str(x) for x in entry.get("includes") or () if isinstance(x, str))
    return LockEntry(repo_id, revision, entry["commit"], files, entry.get("pinned_at", 0.0), includes,
                     entry.get("model", True) is not False)


class Lockfile:
    def __init__(self, path: Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {"version": 1, "pins": {}}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(str(self.path), f"the lockfile is not valid JSON ({exc}); restore it from version "
                              "control, or delete it and pull again (pins are re-made on the next pull)") from None
        if not isinstance(data, dict) or not isinstance(data.get("pins"), dict):
            raise ConfigError(str(self.path), "not a modelcache lockfile (no 'pins' mapping)")
        return data

    def get(self, repo_id: str, revision: str) -> LockEntry | None:
        pins = self._load()["pins"]
        entry = pins.get(f"{repo_id}@{revision}")
        if entry is None:
            # a pin made for the commit itself also answers a request for that commit
            for key, candidate in pins.items():
                if key.startswith(f"{repo_id}@") and candidate["commit"] == revision:
                    entry = candidate
                    break
            else:
                return None
        return _entry(repo_id, revision, entry)

    def entries(self) -> list[LockEntry]:
        out = []
        for key, entry in self._load()["pins"].items():
            repo_id, _, revision = key.rpartition("@")
            out.append(_entry(repo_id, revision, entry))
        return out

    def _write(self, mutate) -> None:
        if self.read_only:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock", timeout=60):
            data = self._load()
            mutate(data["pins"])
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), "utf-8")
            os.chmod(tmp, FILE_MODE)  # never group/world-writable, whatever the umask: these are the pins
            os.replace(tmp, self.path)

    def set(self, entry: LockEntry) -> None:
        data: dict = {"commit": entry.commit, "pinned_at": entry.locked_at or time.time(),
                      "files": {p: e.to_dict() for p, e in sorted(entry.files.items())}}
        if entry.includes:
            data["includes"] = sorted(set(entry.includes))
        if not entry.model:
            data["model"] = False
        self._write(lambda pins: pins.__setitem__(f"{entry.repo_id}@{entry.revision}", data))

    def remove(self, repo_id: str, commit: str | None = None) -> None:
        """Drop every entry of ``repo_id`` (only those locked to ``commit`` if given)."""
        def drop(pins: dict) -> None:
            for key in [k for k, v in pins.items() if k.rpartition("@")[0] == repo_id
                        and (commit is None or v.get("commit") == commit)]:
                del pins[key]
        self._write(drop)
