"""The framework-free core of both ``ManagedVectorStore`` classes: the database is the truth, the
vector store a derived index that only ever holds vectors of one embedding space.

- ``add``: the memories are committed to the :class:`~modelcache.memory.db.MemoryDB` first (that
  is the acknowledgement), then written to the inner vector store if a model of the store's
  space is available now; else they stay *pending* and the inner store receives nothing.
- Pending memories are written by a background sync (one per store across processes, by a
  file lock) as soon as a same-space model is back, each exactly once; :meth:`sync` does it in
  the foreground with a progress bar. A memory whose vector in the store is of another space
  (the configured model changed) is replaced the same way, resumably.
- ``search``: ``vector`` while every memory is in the store in the active space, FTS5
  ``keyword`` search otherwise (``auto``), or both fused (``hybrid``). Every :class:`Hit` says
  how it was found and has a score in [0, 1], higher is better:

  * vector: the inner store's relevance score (LangChain's / LlamaIndex's normalised
    similarity, as the adapter reports it);
  * keyword: FTS5 BM25 ``s`` mapped to ``s / (1 + s)``;
  * hybrid: reciprocal rank fusion (``k = RRF_K``) divided by its maximum ``2 / (k + 1)``.

The adapter supplies an :class:`InnerStore`: how to write, delete and search its framework's
store. This module imports no framework.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from modelcache._util import pid_alive
from modelcache.errors import MemoryDatabaseError, ModelUnavailableError
from modelcache.memory.db import Memory, MemoryDB
from modelcache.memory.fusion import RRF_K, rrf
from modelcache.memory.open import is_memory_db, open_memory_db, resolve_memory_target
from modelcache.memory.records import MODES, Hit, How, InnerStore, Mode, SyncReport, keyword_score
from modelcache.serving.service import EmbeddingService
from modelcache.texts import check_texts

log = logging.getLogger("modelcache")

class MemoryEngine:
    """One managed store: a memory database, an inner vector store, and the embeddings' chain.

    ``service`` returns the :class:`EmbeddingService` of the store's embeddings (created on first
    use). ``store_key`` names the inner store in the database's embedded records: a stable key
    for a store that persists (a Chroma collection, a Qdrant collection, a saved FAISS index);
    ``None`` for one that lives in this process only (InMemory, an unsaved FAISS), which then
    starts empty and is filled from the database in the background.
    """

    def __init__(self, db: MemoryDB | str | Path | None, inner: InnerStore, service: Callable[[], EmbeddingService],
                 *, store_key: str | None = None, mode: Mode = "auto", sync_interval_s: float = 5.0,
                 batch_size: int = 64, background: bool = True, memory_url: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        target = resolve_memory_target(db, memory_url)  # a directory, a postgresql:// URL or a MemoryDB
        if target is None:
            raise ValueError("a memory database is needed: memory_dir (a directory or a MemoryDB) or memory_url "
                             "(postgresql://...)")
        self._owns_db = not is_memory_db(target)  # opened here: closed by close()
        self.db: MemoryDB = open_memory_db(target)
        self.inner = inner
        self._service = service
        self.local = store_key is None
        # a server database is shared by hosts: a process-local key names the host beside the pid
        self._host = "" if getattr(self.db, "dir", None) else f"@{socket.gethostname()}"
        self.store_key = store_key or f"local:{os.getpid()}{self._host}:{uuid.uuid4().hex[:12]}"
        self.mode: Mode = mode
        self.sync_interval_s = sync_interval_s
        self.batch_size = batch_size
        self.background = background
        self._sync_thread: threading.Thread | None = None
        self._sync_lock = threading.Lock()
        self._kick_lock = threading.Lock()
        self._closed = threading.Event()
        self._warned: set[str] = set()
        lock_dir = getattr(self.db, "dir", None)
        digest = hashlib.sha1(self.store_key.encode()).hexdigest()[:16]
        # one sync per store across processes: a file lock beside SQLite, the server's lock (PostgreSQL)
        sync_lock = getattr(self.db, "sync_lock", None)
        self._file_lock: Any = (FileLock(str(Path(lock_dir) / f".sync-{digest}.lock")) if lock_dir
                                else sync_lock(self.store_key) if sync_lock is not None else None)
        if self.local:
            self._drop_dead_local_stores()
        if self.background and self.db.count():
            self.kick()

    @property
    def service(self) -> EmbeddingService:
        return self._service()

    # -- the space ----------------------------------------------------------------------
    def target(self) -> str | None:
        """The fingerprint the inner store may hold now: the active tier's when it is in the
        preferred model's space, else None (degraded: the store receives nothing)."""
        service = self.service
        try:
            fp = service.ensure_active()
        except ModelUnavailableError:
            return None
        return None if service.degraded else fp

    # -- writing ------------------------------------------------------------------------
    def add(self, texts: Sequence[str], metadatas: Sequence[dict] | None = None, ids: Sequence[str] | None = None,
            ref_doc_ids: Sequence[str | None] | None = None) -> list[str]:
        """Commit memories to the database (acknowledged), then write them to the inner store if a
        same-space model is available; else they are pending. Returns their ids."""
        texts = check_texts(list(texts))
        n = len(texts)
        ids = [str(i) for i in ids] if ids is not None else [uuid.uuid4().hex for _ in texts]
        metas = [dict(m or {}) for m in metadatas] if metadatas is not None else [{} for _ in texts]
        refs = list(ref_doc_ids) if ref_doc_ids is not None else [None] * n
        if not (len(ids) == len(metas) == len(refs) == n):
            raise ValueError(f"texts ({n}), metadatas ({len(metas)}), ids ({len(ids)}) and ref_doc_ids "
                             f"({len(refs)}) must have the same length")
        if len(set(ids)) != n:
            raise ValueError("ids must be unique within one call")
        if not texts:
            return []
        memories = [Memory(i, t, m, r) for i, t, m, r in zip(ids, texts, metas, refs)]
        self.db.add(memories)
        self._write_now(memories)
        return ids

    def _write_now(self, memories: list[Memory]) -> None:
        try:
            fp = self.target()
        except Exception as exc:  # noqa: BLE001 - the memories are safe in the database: stay pending
            log.warning("memories stay pending (the embeddings failed: %s)", exc)
            fp = None
        if fp is None or self._has_foreign(fp):
            self.kick()
            return
        try:
            self._write(memories, fp)
        except Exception as exc:  # noqa: BLE001 - any store / model failure leaves them pending, retried later
            self._warn_once("write", f"memories are stored and findable by keyword, but not yet in the vector "
                                     f"store ({type(exc).__name__}: {exc}); they are written when it works again")
            self.kick()

    def _write(self, memories: list[Memory], fp: str) -> None:
        written = self.inner.write(memories)
        if written is not None and written != fp:
            self.inner.delete([m.id for m in memories])  # never leave another space's vectors in the store
            raise ModelUnavailableError(self.service.model, {"space": f"vectors came out as {written}, the store "
                                                                      f"holds {fp}"})
        self.db.mark_embedded(self.store_key, [m.id for m in memories], fp)

    def delete(self, ids: Sequence[str]) -> list[str]:
        """Forget memories: the database first (the truth), then the inner store."""
        gone = self.db.delete([str(i) for i in ids])
        if gone:
            self.inner.delete(gone)
        return gone

    def delete_ref_doc(self, ref_doc_id: str) -> list[str]:
        gone = self.db.delete_ref_doc(ref_doc_id)
        if gone:
            self.inner.delete(gone)
        return gone

    # -- syncing ------------------------------------------------------------------------
    def _has_foreign(self, fp: str) -> bool:
        return any(f != fp for f in self.db.embedded_fingerprints(self.store_key))

    def pending(self, fp: str | None = None) -> int:
        """Memories not in the inner store in the active space (all of them while degraded)."""
        fp = fp or self.service.fingerprint
        if fp is None or self.service.degraded:
            return self.db.count()
        return self.db.pending_count(self.store_key, fp)

    def sync(self, progress: bool = False, wait: bool = True) -> SyncReport:
        """Write every pending memory to the inner store (replacing vectors of another space),
        batch by batch; resumable (each batch is recorded once written). ``wait`` False returns
        at once when another process or thread is syncing this store."""
        t0 = time.perf_counter()
        fp = self.target()
        report = SyncReport(fp)
        if fp is None:
            report.skipped = "no model of the store's embedding space is available"
            report.pending = self.db.count()
            return report
        if not self._sync_lock.acquire(blocking=wait):
            report.skipped = "another thread is syncing"
            return report
        try:
            if self._file_lock is not None:
                try:
                    self._file_lock.acquire(timeout=-1 if wait else 0)
                except Timeout:
                    report.skipped = "another process is syncing"
                    return report
            try:
                self._sync_batches(fp, report, progress)
            finally:
                if self._file_lock is not None:
                    self._file_lock.release()
        finally:
            self._sync_lock.release()
        report.pending = self.db.pending_count(self.store_key, fp)
        report.seconds = time.perf_counter() - t0
        return report

    def _sync_batches(self, fp: str, report: SyncReport, progress: bool) -> None:
        total = self.db.pending_count(self.store_key, fp)
        with tqdm(total=total, desc=f"sync → {fp[:16]}", unit="mem", disable=not progress, leave=False) as bar:
            while not self._closed.is_set():
                batch = self.db.pending(self.store_key, fp, self.batch_size)
                if not batch:
                    return
                foreign = set(self.db.foreign_ids(self.store_key, fp)) & {m.id for m in batch}
                if foreign:
                    self.inner.delete(sorted(foreign))
                self._write(batch, fp)
                if self.target() != fp:  # the chain switched spaces meanwhile: stop, the next sync resumes
                    report.skipped = "the embedding space changed during the sync"
                    return
                report.written += len(batch)
                report.replaced += len(foreign)
                bar.update(len(batch))

    def kick(self) -> None:
        """Start the background sync if it is not running (it ends when nothing is pending)."""
        if not self.background or self._closed.is_set():
            return
        with self._kick_lock:
            thread = self._sync_thread
            if thread is not None and thread.is_alive():
                return
            self._sync_thread = threading.Thread(target=self._sync_loop, name="modelcache-memory-sync", daemon=True)
            self._sync_thread.start()

    def _sync_loop(self) -> None:
        while not self._closed.is_set():
            try:
                if self.db.count() == 0:
                    return
                service = self.service
                fp = self.target()
                if fp is None:
                    service.try_recover()  # honours the chain's cool-down
                else:
                    report = self.sync(wait=False)
                    if report.pending == 0 and report.skipped is None:
                        return
            except Exception as exc:  # noqa: BLE001 - the loop retries; the memories are safe in the database
                log.debug("background memory sync failed: %s", exc)
            self._closed.wait(self.sync_interval_s)

    def wait_synced(self, timeout: float = 60.0) -> bool:
        """Block until nothing is pending (tests, shutdown); True if that happened in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fp = self.service.fingerprint
            if fp is not None and not self.service.degraded and self.db.pending_count(self.store_key, fp) == 0:
                return True
            self.kick()
            time.sleep(0.05)
        return False

    def close(self) -> None:
        """Stop the background sync; a process-local store's records are dropped; a database opened
        here (from a directory or a URL) is closed."""
        self._closed.set()
        thread = self._sync_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        if self.local:
            self.db.forget_store(self.store_key)
        if self._owns_db:
            self.db.close()

    def _drop_dead_local_stores(self) -> None:
        """Embedded records of process-local stores of processes that are gone (kill -9) are stale."""
        for key in self.db.stores():
            parts = key.split(":")  # local:<pid>[@<host>]:<id>; another host's pids are not ours to check
            if len(parts) != 3 or parts[0] != "local" or not parts[1].endswith(self._host):
                continue
            pid = parts[1][:len(parts[1]) - len(self._host)]
            if pid.isdigit() and not pid_alive(int(pid)):
                self.db.forget_store(key)

    # -- reading ------------------------------------------------------------------------
    def resolve_mode(self, mode: Mode | None = None) -> tuple[How, str | None]:
        """What a query runs now, and the active fingerprint (None when degraded)."""
        mode = mode or self.mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        if mode == "keyword":
            return "keyword", None
        fp = self.target()
        # one GROUP BY answers both questions: embedded records exist only for stored memories (foreign
        # key, cascade), so with no foreign vectors, pending = memories - those embedded in this space
        spaces = self.db.embedded_fingerprints(self.store_key) if fp is not None else {}
        usable = fp is not None and all(f == fp for f in spaces)
        if fp is not None and usable and self.db.count() > spaces.get(fp, 0):
            self.kick()
            usable = mode in ("vector", "hybrid")  # a partial store: asked-for vectors still run
        if not usable:
            if fp is not None:
                self.kick()
            if mode == "vector":
                self._warn_once("vector", "vector search asked for, but the vector store is not in the active "
                                          "embedding space yet (or no model is available): answering by keyword")
            return "keyword", fp
        return ("vector" if mode in ("auto", "vector") else "hybrid"), fp

    def search(self, query: str, k: int = 4, mode: Mode | None = None, fetch_k: int | None = None) -> list[Hit]:
        """The ``k`` best memories for ``query`` (see the module docstring for modes and scores)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if k <= 0:
            return []
        how, fp = self.resolve_mode(mode)
        if how == "keyword":
            return self._keyword(query, k)
        vectors, query_fp = self.service.encode([query], "query")
        if query_fp != fp:  # the chain left the store's space since resolve_mode: never compare across spaces
            return self._keyword(query, k)
        vector = vectors[0].tolist()
        fetch = fetch_k or max(4 * k, 20)
        try:
            if how == "vector":
                return self.search_by_vector(vector, k, fp)
            vec_hits = self._vector_ids(vector, fetch, fp)
        except MemoryDatabaseError:
            raise
        except Exception as exc:  # noqa: BLE001 - the vector store (a server) is down: the database still answers
            self._warn_once("search", f"the vector store failed ({type(exc).__name__}: {exc}); answering by "
                                      "keyword until it is back")
            return self._keyword(query, k)
        kw_hits = [i for i, _ in self.db.search(query, fetch)]
        fused = rrf([[i for i, _ in vec_hits], kw_hits], k=RRF_K)[:k]
        rows = {m.id: m for m in self.db.get([i for i, _ in fused])}
        best = 2.0 / (RRF_K + 1)
        return [Hit(rows[i], min(1.0, s / best), "hybrid") for i, s in fused if i in rows]

    def search_by_vector(self, vector: list[float], k: int = 4, fp: str | None = None) -> list[Hit]:
        """The inner store's nearest memories to ``vector`` (which must be in the store's space)."""
        hits = self._vector_ids(vector, k, fp)
        rows = {m.id: m for m in self.db.get([i for i, _ in hits])}
        return [Hit(rows[i], float(s), "vector") for i, s in hits if i in rows]

    def _vector_ids(self, vector: list[float], k: int, fp: str | None) -> list[tuple[str, float]]:
        fp = fp or self.target()
        if fp is None:
            return []
        hits = self.inner.search(vector, k + 8)  # a few more: some may not be of the active space
        embedded = self.db.embedded_among(self.store_key, fp, [i for i, _ in hits])
        return [(i, s) for i, s in hits if i in embedded][:k]  # never a vector of another space

    def _keyword(self, query: str, k: int) -> list[Hit]:
        found = self.db.search(query, k)
        rows = {m.id: m for m in self.db.get([i for i, _ in found])}
        return [Hit(rows[i], keyword_score(s), "keyword") for i, s in found if i in rows]

    def get(self, ids: Sequence[str]) -> list[Memory]:
        return self.db.get([str(i) for i in ids])

    def count(self) -> int:
        return self.db.count()

    def status(self) -> dict[str, Any]:
        """The embeddings' chain, what the database holds, what the store holds, what a query runs."""
        service = self.service
        how, fp = self.resolve_mode()
        return {"embeddings": service.status(), "memories": self.db.count(), "store": self.store_key,
                "store_fingerprints": self.db.embedded_fingerprints(self.store_key),
                "pending": self.pending(fp), "query_mode": how, "mode": self.mode}

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


__all__ = ["MemoryEngine"]
