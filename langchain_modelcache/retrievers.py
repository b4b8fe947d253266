"""``FallbackRetriever``: agent memory over a LangChain vector store that survives model changes.

Every memory goes to the user's vector store *and* to a BM25 :class:`~modelcache.memory.index.MemoryIndex`
under the same id, stamped with the fingerprint of the space its vector was made in. A query
uses vector search when the active embeddings are in that space, BM25 when the chain is
degraded or the space changed (until :meth:`FallbackRetriever.reindex`), or both fused
(reciprocal rank fusion) in ``hybrid`` mode.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, Field, model_validator

from modelcache.memory.index import MemoryIndex
from modelcache.memory.router import Hit, MemoryRetrieverMixin, MemoryRouter
from modelcache.memory.sync import ID_KEY

from .embeddings import ManagedEmbeddings


class FallbackRetriever(MemoryRetrieverMixin, BaseRetriever):
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

    # add_texts, delete, reindex and status come from MemoryRetrieverMixin (modelcache.memory)
    def _router(self) -> MemoryRouter:
        """The framework-free logic (modelcache.memory), over this retriever's current fields."""
        return MemoryRouter(lambda: self.embeddings.service, self.memory, self.persist_dir, self.persist_store)

    # -- writing ------------------------------------------------------------------------
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

    def _store_insert(self, ids: list[str], texts: list[str], metadatas: list[dict]) -> None:
        self.vectorstore.add_texts(texts, metadatas=metadatas, ids=ids)

    def add_documents(self, documents: list[Document], ids: list[str] | None = None) -> list[str]:
        """:meth:`add_texts` for Documents (their ``id`` is used when ``ids`` is None)."""
        if ids is None and all(d.id for d in documents):
            ids = [d.id for d in documents]
        return self.add_texts([d.page_content for d in documents], [d.metadata for d in documents], ids)

    # -- reading ------------------------------------------------------------------------
    def _vector(self, vector: list[float], k: int) -> list[tuple[str | None, Document]]:
        docs = self.vectorstore.similarity_search_by_vector(vector, k=k)
        out = []
        for doc in docs:
            doc_id = doc.id or doc.metadata.get(ID_KEY)
            out.append((doc_id, Document(id=doc_id, page_content=doc.page_content,
                                         metadata=dict(doc.metadata) | {"retrieved_by": "vector"})))
        return out

    @staticmethod
    def _document(hit: Hit) -> Document:
        if hit.how == "vector":
            return hit.native
        return Document(id=hit.id, page_content=hit.text,
                        metadata=hit.metadata | {"retrieved_by": hit.how, "score": hit.score})

    def search(self, query: str, k: int | None = None, mode: str | None = None) -> list[Document]:
        """The ``k`` best memories for ``query``; each carries ``metadata["retrieved_by"]``."""
        hits = self._router().search(query, k or self.k, mode or self.mode, self._vector,
                                     fetch_k=self.fetch_k, rrf_k=self.rrf_k)
        return [self._document(h) for h in hits]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        return self.search(query, kwargs.get("k"), kwargs.get("mode"))

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any, **kwargs: Any) -> list[Document]:
        return await asyncio.to_thread(self.search, query, kwargs.get("k"), kwargs.get("mode"))


__all__ = ["FallbackRetriever"]
