"""``FallbackRetriever``: agent memory over a LangChain vector store that survives model changes.

Every memory goes to the user's vector store *and* to a BM25 :class:`~modelcache.keyword.MemoryIndex`
under the same id, stamped with the fingerprint of the space its vector was made in. A query
uses vector search when the active embeddings are in that space, BM25 when the chain is
degraded or the space changed (until :meth:`FallbackRetriever.reindex`), or both fused
(reciprocal rank fusion) in ``hybrid`` mode.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Callable, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, Field, model_validator

from modelcache.fallback import check_texts
from modelcache.keyword import (
    ID_KEY,
    MemoryIndex,
    ReindexReport,
    add_memories,
    choose_mode,
    reindex_memories,
    rrf,
)

from .embeddings import ManagedEmbeddings



class FallbackRetriever(BaseRetriever):
    """Vector search while the vectors are valid, BM25 when they are not, hybrid on request.

    Example:
        ```python
        from langchain_core.vectorstores import InMemoryVectorStore
        from langchain_modelcache import FallbackRetriever, ManagedEmbeddings

        store = InMemoryVectorStore(ManagedEmbeddings())
        memory = FallbackRetriever(vectorstore=store, k=3)
        memory.add_texts(["The car is parked on level 3"])
        memory.invoke("where is the car?")
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", use_attribute_docstrings=True)

    vectorstore: VectorStore
    """The user's store. Its embedding must be a :class:`ManagedEmbeddings` (or pass ``embeddings``)."""

    embeddings: ManagedEmbeddings | None = None
    """The embeddings the store uses. None: ``vectorstore.embeddings``."""

    memory: MemoryIndex | None = None
    """The BM25 index and durable record of every memory. None: loaded from ``persist_dir`` or new."""

    k: int = Field(default=4, ge=1)
    """Memories returned per query."""

    mode: Literal["auto", "vector", "bm25", "hybrid"] = "auto"
    """auto: vector if the store's vectors are in the active space, else BM25."""

    rrf_k: int = Field(default=60, ge=1)
    """The k of reciprocal rank fusion (hybrid mode)."""

    fetch_k: int | None = None
    """Candidates taken from each ranker in hybrid mode. None: 4 * k."""

    persist_dir: Path | None = None
    """Where the memory index and the reindex checkpoint are kept. None: in memory only."""

    persist_store: Callable[[], None] | None = None
    """Called after every write so the store on disk matches the memory index (e.g. ``lambda: faiss.save_local(d)``)."""

    @model_validator(mode="after")
    def _wire(self) -> FallbackRetriever:
        if self.embeddings is None:
            self.embeddings = getattr(self.vectorstore, "embeddings", None)
        if not isinstance(self.embeddings, ManagedEmbeddings):
            raise TypeError("FallbackRetriever needs the vector store to embed with ManagedEmbeddings "
                            f"(got {type(self.embeddings).__name__}): build the store with "
                            "ManagedEmbeddings(...) or pass embeddings=")
        if self.memory is None:
            self.memory = MemoryIndex.load_or_new(self.persist_dir)
        return self

    # -- writing ------------------------------------------------------------------------
    def _persist(self) -> None:
        if self.persist_store is not None:
            self.persist_store()
        if self.persist_dir is not None:
            self.memory.persist(self.persist_dir)

    def _store_delete(self, ids: list[str]) -> None:
        if not ids:
            return
        try:
            self.vectorstore.delete(ids=ids)
        except (ValueError, KeyError):  # some stores (FAISS) refuse unknown ids: go one by one
            for id_ in ids:
                try:
                    self.vectorstore.delete(ids=[id_])
                except (ValueError, KeyError):
                    pass  # not in the store: nothing to delete

    def _store_replace(self, ids: list[str], texts: list[str], metadatas: list[dict],
                       known: list[str] | None = None) -> None:
        """Put ``ids`` in the store exactly once: delete what may be there (``known``), then add."""
        self._store_delete(ids if known is None else known)
        self.vectorstore.add_texts(texts, metadatas=metadatas, ids=ids)

    def add_texts(self, texts: list[str], metadatas: list[dict] | None = None,
                  ids: list[str] | None = None) -> list[str]:
        """Store memories in the vector store and the BM25 index; returns their ids.

        The memory index records them first, so a crash half-way leaves them findable by BM25
        and re-embedded by :meth:`reindex` (see :func:`modelcache.keyword.add_memories`). An
        existing id is replaced, never stored twice.
        """
        texts = check_texts(texts)
        ids = list(ids) if ids is not None else [uuid.uuid4().hex for _ in texts]
        metas = [dict(m or {}) for m in metadatas] if metadatas is not None else [{} for _ in texts]
        if not (len(ids) == len(texts) == len(metas)):
            raise ValueError("texts, metadatas and ids must have the same length")
        if not texts:
            return []
        service = self.embeddings.service
        add_memories(self.memory, ids, texts, metas, fingerprint=service.ensure_active,
                     current=lambda: service.fingerprint, write=self._store_replace, persist=self._persist)
        return ids

    def add_documents(self, documents: list[Document], ids: list[str] | None = None) -> list[str]:
        """:meth:`add_texts` for Documents (their ``id`` is used when ``ids`` is None)."""
        if ids is None and all(d.id for d in documents):
            ids = [d.id for d in documents]
        return self.add_texts([d.page_content for d in documents], [d.metadata for d in documents], ids)

    def delete(self, ids: list[str]) -> None:
        """Forget memories (store and index)."""
        ids = list(ids)
        self._store_delete(ids)
        self.memory.delete(ids)
        self._persist()

    def reindex(self, batch_size: int = 64, progress: bool = True) -> ReindexReport:
        """Re-embed every memory not in the active space (tqdm progress); resumable.

        Tries the better tiers first (recovery), then replaces each stale memory in the store
        batch by batch. Interrupted, it leaves every memory either done or still stale, never
        lost nor stored twice; calling it again finishes (the checkpoint in ``persist_dir``
        records the progress).
        """
        service = self.embeddings.service
        service.try_recover()
        checkpoint = self.persist_dir / "reindex_checkpoint.json" if self.persist_dir else None
        return reindex_memories(self.memory, fingerprint=service.ensure_active, write=self._store_replace,
                                checkpoint=checkpoint, persist=self._persist, batch_size=batch_size,
                                progress=progress)

    # -- reading ------------------------------------------------------------------------
    def _from_memory(self, hits: list[tuple[str, float]], how: str) -> list[Document]:
        docs = []
        for id_, score in hits:
            rec = self.memory.get(id_)
            if rec is not None:
                docs.append(Document(id=id_, page_content=rec[0],
                                     metadata=rec[1] | {"retrieved_by": how, "score": score}))
        return docs

    def _vector(self, vector: list[float], k: int) -> list[Document]:
        docs = self.vectorstore.similarity_search_by_vector(vector, k=k)
        out = []
        for doc in docs:
            doc_id = doc.id or doc.metadata.get(ID_KEY)
            out.append(Document(id=doc_id, page_content=doc.page_content,
                                metadata=dict(doc.metadata) | {"retrieved_by": "vector"}))
        return out

    def search(self, query: str, k: int | None = None, mode: str | None = None) -> list[Document]:
        """The ``k`` best memories for ``query``; each carries ``metadata["retrieved_by"]``."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        k = k or self.k
        requested = mode or self.mode
        service = self.embeddings.service
        if requested == "bm25":
            return self._from_memory(self.memory.search(query, k), "bm25")
        vectors, fp = service.encode([query], "query")
        chosen = choose_mode(requested, degraded=service.degraded, active_fingerprint=fp, index=self.memory)
        if chosen == "bm25":
            return self._from_memory(self.memory.search(query, k), "bm25")
        if chosen == "vector":
            return self._vector(vectors[0].tolist(), k)
        fetch = self.fetch_k or 4 * k
        vec_docs = self._vector(vectors[0].tolist(), fetch)
        by_id = {d.id: d for d in vec_docs}
        bm25 = [i for i, _ in self.memory.search(query, fetch)]
        fused = rrf([[d.id for d in vec_docs], bm25], k=self.rrf_k)[:k]
        docs = []
        for id_, score in fused:
            rec = self.memory.get(id_)
            if rec is not None:
                docs.append(Document(id=id_, page_content=rec[0], metadata=rec[1] | {"retrieved_by": "hybrid",
                                                                                        "score": score}))
            elif id_ in by_id:
                docs.append(by_id[id_])
        return docs

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        return self.search(query, kwargs.get("k"), kwargs.get("mode"))

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any, **kwargs: Any) -> list[Document]:
        return await asyncio.to_thread(self.search, query, kwargs.get("k"), kwargs.get("mode"))

    # -- introspection ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The embeddings' chain status plus what the memory holds and what a query would use."""
        service = self.embeddings.service
        return {"embeddings": service.status(), "memories": len(self.memory),
                "fingerprints": self.memory.fingerprints(),
                "query_mode": choose_mode(self.mode, degraded=service.degraded,
                                          active_fingerprint=service.fingerprint, index=self.memory)}


__all__ = ["FallbackRetriever"]
