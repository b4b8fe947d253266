"""Keyword mode: hashed-token vectors and a BM25 memory index (the bottom of the fallback chain).

``HashedEncoder`` gives *vectors* when no model is available, so vector stores never break;
``MemoryIndex`` gives *keyword search* (BM25, via bm25s) over the same memories, under the
same ids as the user's vector store. The retrievers answer from it whenever the vectors in
the store were made in another embedding space than the active one.

Also here, because both retrievers share them and the core must not import a framework:
reciprocal rank fusion (``rrf``), the mode choice (``choose_mode``) and the resumable
re-embedding loop (``reindex_memories``) with its checkpoint file.

Nothing heavy is imported at module import: bm25s (and scipy) load on the first search.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

log = logging.getLogger("modelcache")

#: metadata key stamped on every stored memory: the fingerprint of the space its vector is in
FINGERPRINT_KEY = "embedding_fingerprint"
#: metadata key holding the memory id (for stores whose documents do not carry their id)
ID_KEY = "memory_id"
#: the fingerprint of hashed-token vectors is ``KEYWORD_PREFIX + dims``
KEYWORD_PREFIX = "keyword-hash-"

Mode = Literal["auto", "vector", "bm25", "hybrid"]
_WORD = re.compile(r"\w+", re.UNICODE)


def word_tokens(text: str) -> list[str]:
    """Lowercased Unicode word tokens (``\\w+``): the tokenizer of both keyword features."""
    return _WORD.findall(text.lower())


# ---------------------------------------------------------------------------------------------
# hashed-token vectors
# ---------------------------------------------------------------------------------------------
def _bm25s():
    """Import bm25s (lazily: only when a memory index is searched) keeping its logger quiet:
    bm25s sets its logger to DEBUG on import, which floods any app that configures logging."""
    log_ = logging.getLogger("bm25s")
    level = log_.level
    import bm25s
    import bm25s.stopwords  # noqa: F401

    log_.setLevel(level or logging.WARNING)
    return bm25s


class HashedEncoder:
    """Deterministic hashed token features: the vectors of keyword (degraded) mode.

    Features of a text: every lowercased word token (weight 1) and every character 3-gram of
    each word padded as ``<word>`` (weight 0.5, so "memory" and "memories" overlap). Each
    feature is hashed with blake2b (8 bytes; not Python's salted ``hash``) to a dimension and
    a sign; a feature's weight is multiplied by ``1 + log(count)`` (sublinear term frequency).
    The vector is L2-normalised. The empty string (or a text with no word characters) maps to
    a fixed unit vector, so no vector is ever zero. The same text gives the same vector in
    every process and on every machine; ``kind`` (query/document) is ignored.
    """

    degraded = True
    backend = "keyword"

    def __init__(self, dims: int = 384, ngram: int = 3):
        if not isinstance(dims, int) or dims <= 0:
            raise ValueError(f"dims must be a positive integer, got {dims!r}")
        self.dims = dims
        self.ngram = ngram
        self.name = "keyword"
        self.fingerprint = f"{KEYWORD_PREFIX}{dims}"

    def features(self, text: str) -> Counter:
        """Feature -> summed weight, before hashing (useful to explain a vector)."""
        feats: Counter = Counter()
        for word in word_tokens(text):
            feats["w:" + word] += 1.0
            padded = f"<{word}>"
            for i in range(max(1, len(padded) - self.ngram + 1)):
                feats["c:" + padded[i:i + self.ngram]] += 0.5
        return feats or Counter({"<empty>": 1.0})

    def _slot(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dims, (1.0 if (value >> 63) & 1 else -1.0)

    def encode(self, texts: list[str], kind: str = "document") -> np.ndarray:
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature, weight in self.features(text).items():
                col, sign = self._slot(feature)
                out[row, col] += sign * (1.0 + math.log(weight)) if weight >= 1 else sign * weight
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:  # every feature cancelled out: fall back to the sentinel
                col, sign = self._slot("<empty>")
                out[row, col], norm = sign, 1.0
            out[row] /= norm
        return out


# ---------------------------------------------------------------------------------------------
# atomic files
# ---------------------------------------------------------------------------------------------
def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to a process-unique temp file in the same directory, fsync, rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# BM25 memory index
# ---------------------------------------------------------------------------------------------
@dataclass
class _Record:
    text: str
    metadata: dict


class MemoryIndex:
    """A BM25 index over memories, keyed by the same ids as the vector store.

    It is also the durable record of every memory (id, text, metadata), which is what lets
    ``reindex`` re-embed a store without losing anything. Adding or deleting is O(1) and marks
    the index dirty; the bm25s index is rebuilt from the stored (already tokenized) memories
    on the next search: ~0.15 s per 10,000 memories of 25 words on this 2-core machine, then
    searches take microseconds until the next change. That keeps adds cheap and makes a
    burst of adds cost one rebuild; an agent that interleaves one add with one search pays
    the rebuild per search. ``add`` with an existing id replaces it (upsert). Thread-safe.

    Tokens: lowercased ``\\w+`` words minus English stopwords (bm25s' list); no stemming.
    """

    FORMAT = 1
    FILE = "memory_index.json"

    def __init__(self, stopwords: Iterable[str] | None = None, k1: float = 1.5, b: float = 0.75):
        if stopwords is None:
            stopwords = _bm25s().stopwords.STOPWORDS_EN
        self.stopwords = frozenset(stopwords)
        self.k1, self.b = k1, b
        self._records: dict[str, _Record] = {}
        self._tokens: dict[str, list[str]] = {}
        self._fp_counts: Counter = Counter()
        self._lock = threading.RLock()
        self._bm25 = None
        self._order: list[str] = []

    # -- content ------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        return [t for t in word_tokens(text) if t not in self.stopwords]

    def add(self, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[dict] | None = None) -> None:
        """Add (or replace) memories. ``metadata`` is copied; None means ``{}`` for each."""
        ids, texts = list(ids), list(texts)
        metas = [dict(m or {}) for m in metadata] if metadata is not None else [{} for _ in ids]
        if not (len(ids) == len(texts) == len(metas)):
            raise ValueError(f"ids ({len(ids)}), texts ({len(texts)}) and metadata ({len(metas)}) "
                             "must have the same length")
        for i, (id_, text) in enumerate(zip(ids, texts)):
            if not isinstance(id_, str) or not isinstance(text, str):
                raise TypeError(f"item {i}: ids and texts must be str, got {type(id_).__name__} / "
                                f"{type(text).__name__}")
        with self._lock:
            for id_, text, meta in zip(ids, texts, metas):
                self._drop(id_)
                self._records[id_] = _Record(text, meta)
                self._tokens[id_] = self.tokenize(text)
                self._fp_counts[meta.get(FINGERPRINT_KEY)] += 1
            self._bm25 = None

    def _drop(self, id_: str) -> bool:
        old = self._records.pop(id_, None)
        if old is None:
            return False
        self._tokens.pop(id_, None)
        fp = old.metadata.get(FINGERPRINT_KEY)
        self._fp_counts[fp] -= 1
        if self._fp_counts[fp] <= 0:
            del self._fp_counts[fp]
        return True

    def delete(self, ids: Iterable[str]) -> int:
        """Remove memories; unknown ids are ignored. Returns how many were removed."""
        with self._lock:
            removed = sum(self._drop(id_) for id_ in ids)
            if removed:
                self._bm25 = None
            return removed

    def update_metadata(self, ids: Iterable[str], patch: dict) -> None:
        """Merge ``patch`` into the metadata of each (existing) id."""
        with self._lock:
            for id_ in ids:
                rec = self._records.get(id_)
                if rec is None:
                    continue
                self._fp_counts[rec.metadata.get(FINGERPRINT_KEY)] -= 1
                rec.metadata.update(patch)
                self._fp_counts[rec.metadata.get(FINGERPRINT_KEY)] += 1
            self._fp_counts = +self._fp_counts  # drop zero counts

    def get(self, id_: str) -> tuple[str, dict] | None:
        """``(text, metadata copy)`` of one memory, or None."""
        with self._lock:
            rec = self._records.get(id_)
            return (rec.text, dict(rec.metadata)) if rec else None

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._records

    def fingerprints(self) -> dict[str | None, int]:
        """How many memories carry each fingerprint stamp (None: unstamped)."""
        with self._lock:
            return dict(self._fp_counts)

    def stale_ids(self, fingerprint: str) -> list[str]:
        """Ids whose stamp is not ``fingerprint``, in insertion order."""
        with self._lock:
            return [i for i, r in self._records.items() if r.metadata.get(FINGERPRINT_KEY) != fingerprint]

    # -- search -------------------------------------------------------------------------
    def _index(self):
        if self._bm25 is None:
            bm25s = _bm25s()

            self._order = list(self._records)
            bm25 = bm25s.BM25(k1=self.k1, b=self.b)
            bm25.index([self._tokens[i] for i in self._order], show_progress=False)
            self._bm25 = bm25
        return self._bm25

    def search(self, query: str, k: int = 4) -> list[tuple[str, float]]:
        """The best ``k`` memories for ``query`` as ``(id, score)``, best first.

        Memories sharing no token with the query are never returned (score 0).
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        with self._lock:
            if not self._records or k <= 0:
                return []
            bm25 = self._index()
            tokens = [t for t in self.tokenize(query) if t in bm25.vocab_dict]
            if not tokens:
                return []
            scores = np.asarray(bm25.get_scores(tokens), dtype=np.float64)
            order = self._order
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(order[i], float(scores[i])) for i in top if scores[i] > 0]

    # -- persistence --------------------------------------------------------------------
    def persist(self, directory: str | Path) -> Path:
        """Write the memories to ``directory/memory_index.json`` atomically (temp + rename).

        The bm25s index is not stored: it is rebuilt from the tokens on the first search.
        """
        with self._lock:
            data = {"format": self.FORMAT, "k1": self.k1, "b": self.b,
                    "stopwords": sorted(self.stopwords), "saved_at": time.time(),
                    "records": [[i, r.text, r.metadata] for i, r in self._records.items()]}
        path = Path(directory) / self.FILE
        atomic_write_json(path, data)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> MemoryIndex:
        """Read an index written by :meth:`persist`."""
        path = Path(directory) / cls.FILE
        data = json.loads(path.read_text("utf-8"))
        if data.get("format") != cls.FORMAT:
            raise ValueError(f"{path}: unsupported memory index format {data.get('format')!r}")
        index = cls(stopwords=data["stopwords"], k1=data["k1"], b=data["b"])
        recs = data["records"]
        index.add([r[0] for r in recs], [r[1] for r in recs], [r[2] for r in recs])
        return index

    @classmethod
    def load_or_new(cls, directory: str | Path | None) -> MemoryIndex:
        if directory is not None and (Path(directory) / cls.FILE).is_file():
            return cls.load(directory)
        return cls()


# ---------------------------------------------------------------------------------------------
# retrieval helpers shared by the framework adapters
# ---------------------------------------------------------------------------------------------
def rrf(rankings: Sequence[Sequence[str]], k: int = 60) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: ``score(id) = sum 1 / (k + rank)`` over the rankings (rank from 1)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, id_ in enumerate(ranking, start=1):
            scores[id_] = scores.get(id_, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)


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


# ---------------------------------------------------------------------------------------------
# writing memories
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# resumable re-embedding
# ---------------------------------------------------------------------------------------------
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
                recs = [index.get(i) for i in ids]
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


__all__ = [
    "FINGERPRINT_KEY", "ID_KEY", "KEYWORD_PREFIX", "PENDING", "HashedEncoder", "MemoryIndex", "ReindexReport",
    "add_memories", "atomic_write_json", "choose_mode", "index_fingerprint", "reindex_memories", "rrf", "word_tokens",
]
