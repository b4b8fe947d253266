"""``FallbackRetriever``: a ready-made agent-memory retriever over a :class:`ManagedVectorStore`.

A thin convenience: it builds a :class:`~langchain_modelcache.vectorstores.ManagedVectorStore`
over the user's store and delegates to it (the memory database in ``memory_dir`` is the truth;
vectors while the store is in the active space, FTS5 keyword search otherwise, hybrid on request).
``ManagedVectorStore(...).as_retriever()`` is the same thing in LangChain's own idiom.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from modelcache.memory.records import SyncReport

from .embeddings import ManagedEmbeddings
from .vectorstores import ManagedVectorStore


class FallbackRetriever(BaseRetriever):
    """Vector search while the vectors are valid, keyword (FTS5) when they are not, hybrid on request.

    Example:
        ```python
        from langchain_core.vectorstores import InMemoryVectorStore
        from langchain_modelcache import FallbackRetriever, ManagedEmbeddings

        memory = FallbackRetriever(vectorstore=InMemoryVectorStore(ManagedEmbeddings()), memory_dir="./memory", k=3)
        memory.add_texts(["The car is parked on level 3"])
        memory.invoke("where is the car?")
        ```

    Returned Documents carry ``metadata["memory_search"]`` (vector / keyword / hybrid) and
    ``metadata["memory_score"]`` (in [0, 1]). ``invoke(query, k=..., mode=..., filter=...)``
    overrides ``search_kwargs`` for one call.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", use_attribute_docstrings=True)

    vectorstore: VectorStore
    """The user's store. Its embedding must be a :class:`ManagedEmbeddings` (or pass ``embeddings``)."""

    embeddings: ManagedEmbeddings | None = None
    """The embeddings the store uses. None: ``vectorstore.embeddings``."""

    memory_dir: Path | None = None
    """Where the memory database lives. None: a temporary directory (memories end with the process)."""

    persist_dir: Path | None = None
    """The old name of ``memory_dir`` (still accepted)."""

    k: int = Field(default=4, ge=1)
    """Memories returned per query (``search_kwargs["k"]`` or ``invoke(..., k=)`` override it)."""

    mode: Literal["auto", "vector", "keyword", "hybrid", "bm25"] = "auto"
    """auto: vectors while the store is complete in the active space, else keyword (``bm25``: keyword's old name)."""

    search_type: Literal["similarity", "mmr", "similarity_score_threshold"] = "similarity"
    """As in ``VectorStore.as_retriever``: similarity, mmr (max marginal relevance) or similarity_score_threshold."""

    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Passed to the search: ``k``, ``mode``, ``filter``, ``fetch_k``, ``score_threshold``, ``lambda_mult`` (mmr)."""

    fetch_k: int | None = None
    """Candidates per ranker in hybrid mode (per MMR selection in mmr). None: the default."""

    store_key: str | None = None
    """Names the inner store in the memory database. None: derived (see ManagedVectorStore)."""

    sync_interval_s: float = Field(default=5.0, gt=0)
    """How often the background sync retries while memories are pending."""

    persist_store: Callable[[], None] | None = None
    """Called after every change to the inner store (e.g. ``lambda: faiss.save_local(d)`` with a store_key)."""

    _store: ManagedVectorStore | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _wire(self) -> FallbackRetriever:
        if self.mode == "bm25":
            self.mode = "keyword"
        if self.persist_dir is not None:
            if self.memory_dir is not None and Path(self.memory_dir) != Path(self.persist_dir):
                raise ValueError("memory_dir and persist_dir (its old name) differ: pass only memory_dir")
            self.memory_dir = self.persist_dir
        if self.search_type == "similarity_score_threshold" and "score_threshold" not in self.search_kwargs:
            raise ValueError("search_type='similarity_score_threshold' needs search_kwargs={'score_threshold': ...}")
        try:
            self._store = ManagedVectorStore(self.vectorstore, self.memory_dir, mode=self.mode,
                                             store_key=self.store_key, sync_interval_s=self.sync_interval_s,
                                             embeddings=self.embeddings, persist=self.persist_store)
        except TypeError as exc:
            raise TypeError(str(exc).replace("ManagedVectorStore needs", "FallbackRetriever needs")) from None
        self.embeddings = self._store.embeddings
        return self

    @property
    def store(self) -> ManagedVectorStore:
        """The ManagedVectorStore this retriever delegates to."""
        assert self._store is not None
        return self._store

    # -- writing ------------------------------------------------------------------------------
    def add_texts(self, texts: Sequence[str], metadatas: Sequence[dict] | None = None,
                  ids: Sequence[str] | None = None) -> list[str]:
        """Remember texts (acknowledged once in the database); see :meth:`ManagedVectorStore.add_texts`."""
        return self.store.add_texts(list(texts), list(metadatas) if metadatas is not None else None,
                                    ids=list(ids) if ids is not None else None)

    def add_documents(self, documents: list[Document], ids: Sequence[str] | None = None) -> list[str]:
        """:meth:`add_texts` for Documents (their ``id`` is used when ``ids`` is None)."""
        return self.store.add_documents(documents, **({"ids": list(ids)} if ids is not None else {}))

    def delete(self, ids: Sequence[str]) -> None:
        """Forget these memories (the database, then the inner store)."""
        self.store.delete(list(ids))

    def sync(self, progress: bool = False) -> SyncReport:
        """Write pending memories to the inner store now (re-embedding another space's vectors)."""
        return self.store.sync(progress=progress)

    reindex = sync

    # -- reading ------------------------------------------------------------------------------
    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {"k": self.k}
        if self.fetch_k is not None:
            options["fetch_k"] = self.fetch_k
        options |= self.search_kwargs | kwargs
        if options.get("mode") == "bm25":
            options["mode"] = "keyword"
        return options

    def search(self, query: str, **kwargs: Any) -> list[Document]:
        """The best memories for ``query`` by ``search_type``; ``kwargs`` override ``search_kwargs``."""
        options = self._options(kwargs)
        if self.search_type == "mmr":
            return self.store.max_marginal_relevance_search(query, **options)
        options.pop("lambda_mult", None)
        if self.search_type == "similarity_score_threshold":
            return [d for d, _ in self.store.similarity_search_with_relevance_scores(query, **options)]
        return self.store.similarity_search(query, **options)

    def similarity_search_with_score(self, query: str, **kwargs: Any) -> list[tuple[Document, float]]:
        """The best memories with their scores (in [0, 1], higher is better)."""
        options = self._options(kwargs)
        options.pop("lambda_mult", None)
        return self.store.similarity_search_with_score(query, **options)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        return self.search(query, **kwargs)

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun,
                                       **kwargs: Any) -> list[Document]:
        return await run_in_executor(None, self.search, query, **kwargs)

    def get_by_ids(self, ids: Sequence[str]) -> list[Document]:
        return self.store.get_by_ids(list(ids))

    def count(self) -> int:
        return self.store.count()

    def status(self) -> dict[str, Any]:
        """The embeddings' chain, the memories, what the store holds, what a query runs now."""
        return self.store.status()

    def wait_synced(self, timeout: float = 60.0) -> bool:
        return self.store.wait_synced(timeout)

    def close(self) -> None:
        self.store.close()


__all__ = ["FallbackRetriever"]
