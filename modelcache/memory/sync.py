"""Keeping the vector store in step with the memory index: the mode a query runs in, adding
memories so none is lost, and the resumable re-embedding loop (``reindex_memories``) with its
checkpoint file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from modelcache._util import atomic_write_json
from modelcache.memory.index import FINGERPRINT_KEY, MemoryIndex

log = logging.getLogger("modelcache")

#: metadata key holding the memory id (for stores whose documents do not carry their id)
ID_KEY = "memory_id"

Mode = Literal["auto", "vector", "bm25", "hybrid"]


def index_fingerprint(index: MemoryIndex) -> str | None:
    """The one fingerprint every memory is stamped with; None if mixed, unstamped or empty."""
    counts = index.fingerprints()
    return next(iter(counts)) if len(counts) == 1 else None


def choose_mode(requested: Mode, *, degraded: bool, active_fingerprint: str | None,
                index: MemoryIndex) -> Literal["vector", "bm25", "hybrid"]:
    """What a retriever runs for one query.

    ``vector`` and ``bm25`` are honoured as asked. ``auto`` is vector search when the vectors
    in the store are all in the active embedding space and the service is not degraded, else
    BM25. ``hybrid`` fuses both when vectors are usable, else falls back to BM25 alone.
    An empty index counts as "in the active space".
    """
    if requested not in ("auto", "vector", "bm25", "hybrid"):
        raise ValueError(f"mode must be auto, vector, bm25 or hybrid; got {requested!r}")
    if requested in ("vector", "bm25"):
        return requested
    usable = not degraded and active_fingerprint is not None and (
        len(index) == 0 or index_fingerprint(index) == active_fingerprint)
    if not usable:
        return "bm25"
    return "vector" if requested == "auto" else "hybrid"


PENDING = "pending"


def add_memories(index: MemoryIndex, ids: list[str], texts: list[str], metadatas: list[dict], *,
                 fingerprint: Callable[[], str], current: Callable[[], str | None],
                 write: Callable[[list[str], list[str], list[dict], list[str]], None],
                 persist: Callable[[], None] | None = None) -> None:
    """Store memories in the index and the vector store, so that none can get lost.

    The index records them first, stamped ``pending``: a crash half-way leaves them findable
    by BM25 and re-embedded by a reindex. ``write(ids, texts, metadatas, known)`` replaces
    them in the store (``known``: ids the store may already hold, to delete first), stamped
    with ``fingerprint()`` (which loads the active model if needed); the index gets the same
    stamp only if ``current()`` still says so afterwards (the chain may switch tiers while the
    store embeds), else the write is repeated (up to 3 times; after that they stay stale).
    """
    known = [i for i in ids if i in index]
    index.add(ids, texts, [m | {FINGERPRINT_KEY: PENDING, ID_KEY: i} for i, m in zip(ids, metadatas)])
    for _ in range(3):
        fp = fingerprint()
        write(ids, texts, [m | {FINGERPRINT_KEY: fp, ID_KEY: i} for i, m in zip(ids, metadatas)], known)
        known = ids
        if current() == fp:
            index.update_metadata(ids, {FINGERPRINT_KEY: fp})
            break
        log.info("active model changed while storing %d memories; writing them again", len(ids))
    if persist is not None:
        persist()


@dataclass
class ReindexReport:
    target: str | None
    total: int
    reembedded: int = 0
    skipped: int = 0
    passes: int = 0
    resumed: bool = False
    seconds: float = 0.0
    restarts: list[str] = field(default_factory=list)


def _read_checkpoint(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        log.warning("reindex checkpoint %s is unreadable; starting from the memory stamps", path)
        return {}


def reindex_memories(index: MemoryIndex, *, fingerprint: Callable[[], str],
                     write: Callable[[list[str], list[str], list[dict]], None],
                     checkpoint: Path | None = None, persist: Callable[[], None] | None = None,
                     batch_size: int = 64, progress: bool = True, max_passes: int = 3) -> ReindexReport:
    """Re-embed every memory whose stamp is not the active fingerprint, batch by batch.

    For each batch: ``write(ids, texts, metadatas)`` replaces those ids in the vector store
    (the adapter deletes then adds, so an id is never stored twice; metadatas already carry
    the new stamp), ``persist()`` saves store + index if the caller keeps them on disk, then
    the stamps in ``index`` and the checkpoint file are updated. An interruption anywhere
    leaves each memory either done (new stamp) or still stale (old stamp) and still in the
    index, so running again finishes the job without losing or duplicating a memory. If the
    active model changes mid-way (``fingerprint()`` differs after a batch), the pass restarts
    with the new target (at most ``max_passes``).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    target = fingerprint()
    report = ReindexReport(target, len(index))
    state = _read_checkpoint(checkpoint)
    report.resumed = bool(state) and state.get("target") == target
    while report.passes < max_passes:
        report.passes += 1
        stale = index.stale_ids(target)
        report.skipped = len(index) - len(stale)
        if not stale:
            break
        done = len(index) - len(stale)
        restarted = False
        with tqdm(total=len(index), initial=done, desc=f"reindex → {target[:16]}", unit="mem",
                  disable=not progress, leave=False) as bar:
            for start in range(0, len(stale), batch_size):
                ids = [i for i in stale[start:start + batch_size] if i in index]
                if not ids:
                    continue
                found = [(i, rec) for i in ids if (rec := index.get(i)) is not None]
                ids, recs = [i for i, _ in found], [rec for _, rec in found]
                texts = [r[0] for r in recs]
                metas = [r[1] | {FINGERPRINT_KEY: target, ID_KEY: i} for i, r in zip(ids, recs)]
                write(ids, texts, metas)
                now = fingerprint()
                if now != target:  # the chain switched tiers while we embedded: redo with the new one
                    report.restarts.append(f"{target} -> {now}")
                    log.info("reindex: active model changed (%s -> %s); restarting the pass", target, now)
                    target = report.target = now
                    restarted = True
                    break
                if persist is not None:
                    persist()
                index.update_metadata(ids, {FINGERPRINT_KEY: target})
                report.reembedded += len(ids)
                done += len(ids)
                if checkpoint is not None:
                    atomic_write_json(checkpoint, {"target": target, "done": done, "total": len(index),
                                                   "updated_at": time.time()})
                bar.update(len(ids))
        if not restarted:
            break
    if persist is not None:
        persist()
    if checkpoint is not None and not index.stale_ids(target):
        with suppress(FileNotFoundError):
            checkpoint.unlink()
    report.seconds = time.perf_counter() - t0
    return report
