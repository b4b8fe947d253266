"""What both framework adapters share, framework-free: the memory router and the service handle.

:class:`MemoryRouter` is the logic of both ``FallbackRetriever`` classes: it writes memories
to the :class:`~modelcache.memory.index.MemoryIndex` and (through the adapter's callbacks) the
vector store so that none gets lost, forgets and re-embeds them, and answers a query by
vector search, BM25 or both fused (reciprocal rank fusion), as :func:`~modelcache.memory.sync.choose_mode`
decides. It returns :class:`Hit` objects; the adapter only turns them into its framework's
type (``Document``, ``NodeWithScore``) and does the store-specific insert and delete.
:class:`MemoryRetrieverMixin` gives both retrievers their common public methods over it.

:class:`ServiceHandle` is the part of both embeddings classes that is not framework API:
the lazily created :class:`~modelcache.serving.service.EmbeddingService` and what the chain is doing.

This module imports no framework (the adapters import it, never the other way round).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelcache.memory.fusion import rrf
from modelcache.memory.index import MemoryIndex
from modelcache.memory.sync import (
    Mode,
    ReindexReport,
    add_memories,
    choose_mode,
    reindex_memories,
)
from modelcache.serving.service import EmbeddingService
from modelcache.texts import check_texts

#: file name of the reindex checkpoint in ``persist_dir``
CHECKPOINT_FILE = "reindex_checkpoint.json"

#: ``write(ids, texts, metadatas, known=None)``: replace those ids in the store (delete ``known``, or ``ids``, first)
StoreWrite = Callable[..., None]

#: ``vector_search(vector, n)``: the store's ``n`` nearest as ``[(id, native_object)]``, best first
VectorSearch = Callable[[list[float], int], Sequence[tuple[Any, Any]]]


@dataclass
class Hit:
    """One memory found for a query, before the adapter makes it a framework object.

    ``how`` is what found it. ``bm25`` and ``hybrid`` hits come from the memory index:
    ``text`` and ``metadata`` (a copy) are set, ``score`` is the BM25 or fused (RRF) score.
    ``vector`` hits are the store's own results: ``native`` is the object ``vector_search``
    returned (the adapter gives it back as is), ``text`` / ``metadata`` are None, and
    ``score`` is None, or the fused score when hybrid search kept a vector result that the
    memory index does not hold.
    """

    id: Any
    score: float | None
    how: Literal["vector", "bm25", "hybrid"]
    text: str | None = None
    metadata: dict | None = None
    native: Any = None


class MemoryRouter:
    """The framework-free part of a ``FallbackRetriever``.

    ``service`` returns the adapter's :class:`EmbeddingService` (a getter: the adapter's
    embeddings create it on first use). ``persist_store`` is called before the memory index
    is saved to ``persist_dir`` (e.g. the vector store's own save), after every write.
    Cheap to create: it holds references only, so an adapter may build one per call.
    """

    def __init__(self, service: Callable[[], EmbeddingService], memory: MemoryIndex,
                 persist_dir: Path | None = None, persist_store: Callable[[], None] | None = None) -> None:
        self._service = service
        self.memory = memory
        self.persist_dir = Path(persist_dir) if persist_dir is not None else None
        self.persist_store = persist_store

    @property
    def service(self) -> EmbeddingService:
        return self._service()

    # -- writing ------------------------------------------------------------------------
    def persist(self) -> None:
        """Save the store (``persist_store``), then the memory index (``persist_dir``)."""
        if self.persist_store is not None:
            self.persist_store()
        if self.persist_dir is not None:
            self.memory.persist(self.persist_dir)

    def add(self, texts: list[str], metadatas: list[dict] | None, ids: list[str] | None,
            write: StoreWrite) -> list[str]:
        """Store memories in the memory index and (``write``) the vector store; returns their ids.

        ``ids`` None: new random ids. The memory index records them first (see
        :func:`~modelcache.memory.sync.add_memories`); an existing id is replaced, never stored twice.
        """
        texts = check_texts(texts)
        ids = list(ids) if ids is not None else [uuid.uuid4().hex for _ in texts]
        metas = [dict(m or {}) for m in metadatas] if metadatas is not None else [{} for _ in texts]
        if not (len(ids) == len(texts) == len(metas)):
            raise ValueError("texts, metadatas and ids must have the same length")
        if not texts:
            return []
        service = self.service
        add_memories(self.memory, ids, texts, metas, fingerprint=service.ensure_active,
                     current=lambda: service.fingerprint, write=write, persist=self.persist)
        return ids

    def delete(self, ids: Sequence[str], store_delete: Callable[[list[str]], None]) -> None:
        """Forget memories: ``store_delete(ids)``, then the memory index, then persist."""
        ids = list(ids)
        store_delete(ids)
        self.memory.delete(ids)
        self.persist()

    def reindex(self, write: StoreWrite, batch_size: int = 64, progress: bool = True) -> ReindexReport:
        """Try the better tiers first (recovery), then re-embed (``write``) every stale memory,
        resumably (:func:`~modelcache.memory.sync.reindex_memories`; checkpoint in ``persist_dir``)."""
        service = self.service
        service.try_recover()
        checkpoint = self.persist_dir / CHECKPOINT_FILE if self.persist_dir else None
        return reindex_memories(self.memory, fingerprint=service.ensure_active, write=write,
                                checkpoint=checkpoint, persist=self.persist, batch_size=batch_size,
                                progress=progress)

    # -- reading ------------------------------------------------------------------------
    def _from_memory(self, scored: Sequence[tuple[Any, float]], how: Literal["vector", "bm25", "hybrid"]) -> list[Hit]:
        hits = []
        for id_, score in scored:
            rec = self.memory.get(id_)
            if rec is not None:
                hits.append(Hit(id_, score, how, rec[0], rec[1]))
        return hits

    def search(self, query: str, k: int, mode: Mode, vector_search: VectorSearch,
               fetch_k: int | None = None, rrf_k: int = 60) -> list[Hit]:
        """The ``k`` best memories for ``query``, by ``mode`` as :func:`choose_mode` resolves it.

        ``bm25`` never embeds the query. ``vector`` returns ``vector_search(query_vector, k)``.
        ``hybrid`` fuses ``vector_search(query_vector, fetch)`` with the ``fetch`` best BM25
        hits (``fetch = fetch_k or 4 * k``) by reciprocal rank fusion (``rrf_k``); a fused id
        is answered from the memory index, or else with the store's own result.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        service = self.service
        if mode == "bm25":
            return self._from_memory(self.memory.search(query, k), "bm25")
        vectors, fp = service.encode([query], "query")
        chosen = choose_mode(mode, degraded=service.degraded, active_fingerprint=fp, index=self.memory)
        if chosen == "bm25":
            return self._from_memory(self.memory.search(query, k), "bm25")
        if chosen == "vector":
            return [Hit(id_, None, "vector", native=obj) for id_, obj in vector_search(vectors[0].tolist(), k)]
        fetch = fetch_k or 4 * k
        vec_hits = list(vector_search(vectors[0].tolist(), fetch))
        by_id = dict(vec_hits)
        bm25 = [i for i, _ in self.memory.search(query, fetch)]
        hits = []
        for id_, score in rrf([[i for i, _ in vec_hits], bm25], k=rrf_k)[:k]:
            rec = self.memory.get(id_)
            if rec is not None:
                hits.append(Hit(id_, score, "hybrid", rec[0], rec[1]))
            elif id_ in by_id:
                hits.append(Hit(id_, score, "vector", native=by_id[id_]))
        return hits

    # -- introspection ------------------------------------------------------------------
    def status(self, mode: Mode) -> dict[str, Any]:
        """The embeddings' chain status plus what the memory holds and what a ``mode`` query would use."""
        service = self.service
        return {"embeddings": service.status(), "memories": len(self.memory),
                "fingerprints": self.memory.fingerprints(),
                "query_mode": choose_mode(mode, degraded=service.degraded,
                                          active_fingerprint=service.fingerprint, index=self.memory)}


class MemoryRetrieverMixin:
    """The public methods both ``FallbackRetriever`` classes share, over :class:`MemoryRouter`.

    The class it is mixed into provides ``_router()`` (a :class:`MemoryRouter` over its
    current attributes), ``mode``, ``_store_delete(ids)`` (remove those ids from its vector
    store; ids it does not hold are ignored) and ``_store_insert(ids, texts, metadatas)``.
    """

    mode: Mode

    def _router(self) -> MemoryRouter:
        raise NotImplementedError

    def _store_delete(self, ids: list[str]) -> None:
        raise NotImplementedError

    def _store_insert(self, ids: list[str], texts: list[str], metadatas: list[dict]) -> None:
        raise NotImplementedError

    def _store_replace(self, ids: list[str], texts: list[str], metadatas: list[dict],
                       known: list[str] | None = None) -> None:
        """Put ``ids`` in the store exactly once: delete what may be there (``known``), then insert."""
        self._store_delete(ids if known is None else known)
        self._store_insert(ids, texts, metadatas)

    def add_texts(self, texts: list[str], metadatas: list[dict] | None = None,
                  ids: list[str] | None = None) -> list[str]:
        """Store memories in the vector store and the BM25 index; returns their ids.

        The memory index records them first, so a crash half-way leaves them findable by BM25
        and re-embedded by :meth:`reindex` (see :func:`modelcache.memory.sync.add_memories`). An
        existing id is replaced, never stored twice.
        """
        return self._router().add(texts, metadatas, ids, write=self._store_replace)

    def delete(self, ids: list[str]) -> None:
        """Forget memories (vector store and memory index)."""
        self._router().delete(ids, store_delete=self._store_delete)

    def reindex(self, batch_size: int = 64, progress: bool = True) -> ReindexReport:
        """Re-embed every memory not in the active space (tqdm progress); resumable.

        Tries the better tiers first (recovery), then replaces each stale memory in the store
        batch by batch. Interrupted, it leaves every memory either done or still stale, never
        lost nor stored twice; calling it again finishes (the checkpoint in ``persist_dir``
        records the progress).
        """
        return self._router().reindex(self._store_replace, batch_size=batch_size, progress=progress)

    def status(self) -> dict[str, Any]:
        """The embeddings' chain status plus what the memory holds and what a query would use."""
        return self._router().status(self.mode)
