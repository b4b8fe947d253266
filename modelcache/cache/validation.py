"""Validation status as the spec names it, and when a cached model is due for re-validation.

Each file of a verify report gets one status:

- ``Valid``: it matches its size and hash (or its stat stamp, within ``validation_interval``);
- ``Unknown``: present and well-formed, but no hash is known to compare it with;
- ``Missing``: not there (or removed while it was checked);
- ``Corrupted``: the wrong size or hash (sha256, git blob sha1);
- ``Invalid``: the right bytes as far as we know, but not a valid file of its kind (a
  safetensors header, JSON that does not parse).

A model's ``validation_status`` (in ``modelcache.json``) is the worst of its files'.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from modelcache.cache.store import meta_time

VALID, UNKNOWN, MISSING, CORRUPTED, INVALID = "Valid", "Unknown", "Missing", "Corrupted", "Invalid"
STATUSES = (VALID, UNKNOWN, INVALID, MISSING, CORRUPTED)
_RANK = {s: i for i, s in enumerate(STATUSES)}

#: IntegrityError.check -> status
_BY_CHECK = {"exists": MISSING, "size": CORRUPTED, "sha256": CORRUPTED, "git-sha1": CORRUPTED, "format": INVALID}


@dataclass
class VerifyReport:
    model: str
    repo_id: str
    commit: str | None
    ok: bool
    checked: list[str] = field(default_factory=list)
    hashed: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    quarantined: list[str] = field(default_factory=list)
    functional: dict | None = None
    seconds: float = 0.0
    bytes_hashed: int = 0
    status: dict[str, str] = field(default_factory=dict)
    """Per file: Valid / Invalid / Missing / Corrupted / Unknown (:mod:`modelcache.cache.validation`)."""
    due: str | None = None
    """Why the files were re-hashed (validation_interval passed, validation_on_startup); None: stamps trusted."""
    performance: dict | None = None
    """``full``: the performance test (load time, embed time, memory)."""

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("model", "repo_id", "commit", "ok", "checked", "hashed",
                                              "failures", "quarantined", "functional", "bytes_hashed",
                                              "status", "due", "performance")} | {
            "validation_status": overall(self.status),
            "seconds": round(self.seconds, 4)}


def file_status(check: str) -> str:
    """The status of a file that failed ``check`` (an :class:`~modelcache.errors.IntegrityError`'s)."""
    return _BY_CHECK.get((check or "").split(" ")[0], INVALID)


def overall(statuses: dict[str, str]) -> str:
    """A model's status: the worst of its files' (``Unknown`` when nothing was checked)."""
    return max(statuses.values(), key=_RANK.__getitem__, default=UNKNOWN)


def due(meta: dict, interval_s: float, on_startup: bool, seen_here: bool, now: float | None = None) -> str | None:
    """Why the model's files must be re-hashed now (None: their stat stamps are trusted).

    ``on_startup`` is ``model_cache.validation_on_startup``, ``seen_here`` whether this process
    has validated the model already."""
    if on_startup and not seen_here:
        return "validation_on_startup: the first use in this process"
    last = meta_time(meta.get("last_validated"))
    if last is None:
        return "never validated"
    age = (time.time() if now is None else now) - last
    if age >= interval_s:
        return f"last validated {_ago(age)} ago (validation_interval {_ago(interval_s)})"
    return None


def next_due(meta: dict, interval_s: float, now: float | None = None) -> float | None:
    """Seconds until the model is due for re-validation (<= 0: due now; None: never validated)."""
    last = meta_time(meta.get("last_validated"))
    if last is None:
        return None
    return last + interval_s - (time.time() if now is None else now)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def performance(load: Any, encode: Any, rss: Any) -> dict:
    """The performance test of ``verify --full``: ``load()`` returns the encoder (timed: its load
    time, from the pool when already loaded), ``encode(encoder)`` embeds a probe batch (timed), and
    ``rss()`` is the process's resident memory (before / after the load)."""
    rss0, t0 = rss(), time.perf_counter()
    encoder = load()
    load_s = time.perf_counter() - t0
    rss1, t1 = rss(), time.perf_counter()
    texts = encode(encoder)
    embed_s = time.perf_counter() - t1
    size = getattr(encoder, "memory_bytes", None)
    if not isinstance(size, int | float):
        model = getattr(encoder, "model", None)
        try:
            size = sum(p.numel() * p.element_size() for p in model.parameters()) if model is not None else None
        except (AttributeError, TypeError, RuntimeError):
            size = None
    return {"load_s": round(load_s, 4), "embed_s": round(embed_s, 4), "texts": texts,
            "texts_per_s": round(texts / embed_s, 1) if embed_s > 0 else None,
            "model_memory_bytes": int(size) if size is not None else None,
            "rss_growth_bytes": int(rss1 - rss0), "rss_bytes": int(rss1)}


__all__ = ["VerifyReport", "VALID", "UNKNOWN", "MISSING", "CORRUPTED", "INVALID", "STATUSES", "file_status",
           "overall", "due", "next_due", "performance"]
