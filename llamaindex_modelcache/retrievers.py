"""``FallbackRetriever``: agent memory in one object, over a :class:`ManagedVectorStore`.

A convenience: ``add_texts`` / ``delete`` / ``retrieve`` / ``status`` / ``reindex`` on a managed
store (the memory database in ``memory_dir`` is the truth; the inner vector store is filled
from it). The LlamaIndex idiom does the same with the usual objects::

    store = ManagedVectorStore(inner, memory_dir="memory/")
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    index.as_retriever(similarity_top_k=3)
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any, List, Optional

from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery

from modelcache.memory.records import SyncReport

from .embeddings import ManagedEmbedding
from .vector_stores import ManagedVectorStore

#: the old name of keyword mode
_ALIASES = {"bm25": "keyword"}


class FallbackRetriever(BaseRetriever):
    """Vector search while the vectors are valid, FTS5 keyword search when they are not, hybrid on request.

    Example:
        ```python
        from llamaindex_modelcache import FallbackRetriever

        memory = FallbackRetriever(memory_dir="memory/", similarity_top_k=3)
        memory.add_texts(["The car is parked on level 3"])
        memory.retrieve("where is the car?")
        ```

    ``store`` is a :class:`ManagedVectorStore`, a ``VectorStoreIndex`` (over a managed store, or
    over a plain one, which is then wrapped), a plain LlamaIndex vector store (wrapped), or None
    (a SimpleVectorStore, filled from the memory database). ``persist_dir`` is the old name of
    ``memory_dir``; with neither, the memory lives in a temporary directory removed with this
    object. Each hit's node says how it was found in ``metadata["retrieved_by"]``.
    """

    def __init__(self, store: Any = None, *, memory_dir: Optional[str | Path] = None,
                 persist_dir: Optional[str | Path] = None, embed_model: Optional[ManagedEmbedding] = None,
                 similarity_top_k: int = 4, mode: str = "auto", fetch_k: Optional[int] = None,
                 callback_manager: Optional[CallbackManager] = None, verbose: bool = False,
                 **store_kwargs: Any) -> None:
        if memory_dir is not None and persist_dir is not None and Path(memory_dir) != Path(persist_dir):
            raise ValueError("pass memory_dir or persist_dir (its old name), not both")
        self.mode = _ALIASES.get(mode, mode)
        self.similarity_top_k = similarity_top_k
        self.fetch_k = fetch_k
        self._tmp: tempfile.TemporaryDirectory | None = None
        memory_dir = memory_dir if memory_dir is not None else persist_dir
        index = store if isinstance(store, VectorStoreIndex) else None
        inner = index.vector_store if index is not None else store
        if embed_model is None and index is not None and isinstance(index._embed_model, ManagedEmbedding):
            embed_model = index._embed_model
        if isinstance(inner, ManagedVectorStore):
            if memory_dir is not None or store_kwargs:
                raise ValueError("the ManagedVectorStore given has its memory_dir and options already")
            self.store = inner
        else:
            if inner is None:
                from llama_index.core.vector_stores import SimpleVectorStore

                inner = SimpleVectorStore()
            if memory_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="modelcache-memory-")
                memory_dir = self._tmp.name
            self.store = ManagedVectorStore(inner, memory_dir, embed_model=embed_model, mode=self.mode, **store_kwargs)
        self.memory_dir = Path(memory_dir) if memory_dir is not None else getattr(self.store.engine.db, "dir", None)
        self._index = index if index is not None and index.vector_store is self.store else None
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @classmethod
    def load(cls, memory_dir: str | Path, embed_model: Optional[ManagedEmbedding] = None,
             **kwargs: Any) -> FallbackRetriever:
        """Reopen the memory in ``memory_dir`` (a fresh in-memory vector store, filled from it)."""
        return cls(memory_dir=memory_dir, embed_model=embed_model, **kwargs)

    # -- the usual objects ------------------------------------------------------------------------
    @property
    def embed_model(self) -> ManagedEmbedding:
        return self.store.embed_model

    @property
    def index(self) -> VectorStoreIndex:
        """A ``VectorStoreIndex`` over the managed store (``index.insert``, ``as_query_engine``...)."""
        if self._index is None:
            self._index = VectorStoreIndex.from_vector_store(self.store, embed_model=self.store.embed_model)
        return self._index

    # -- writing ----------------------------------------------------------------------------------
    def add_texts(self, texts: List[str], metadatas: Optional[List[dict]] = None,
                  ids: Optional[List[str]] = None) -> List[str]:
        """Store memories (acknowledged once in the database); an existing id is replaced. Returns the ids."""
        texts = list(texts)
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        ids = [str(i) for i in ids] if ids is not None else [None] * len(texts)
        if not (len(ids) == len(texts) == len(metadatas)):
            raise ValueError(f"texts ({len(texts)}), metadatas ({len(metadatas)}) and ids ({len(ids)}) must have "
                             "the same length")
        nodes = []
        for text, metadata, id_ in zip(texts, metadatas, ids):
            node = TextNode(text=text, metadata=dict(metadata or {})) if id_ is None else \
                TextNode(id_=id_, text=text, metadata=dict(metadata or {}))
            node.excluded_embed_metadata_keys = list(node.metadata)  # only the text is embedded, as through LangChain
            nodes.append(node)
        return self.store.add(nodes)

    def delete(self, ids: List[str]) -> None:
        """Forget memories (database, then vector store)."""
        self.store.delete_nodes(node_ids=list(ids))

    def reindex(self, batch_size: Optional[int] = None, progress: bool = True) -> SyncReport:
        """Write every pending memory to the vector store now (the background sync does it anyway),
        after one try of the better tiers (cool-down permitting); resumable, each memory written once."""
        if batch_size is not None:
            self.store.engine.batch_size = batch_size
        service = self.store.embed_model.service
        if service.degraded:
            service.try_recover()
        return self.store.sync(progress=progress)

    def status(self) -> dict[str, Any]:
        return self.store.status()

    def close(self) -> None:
        self.store.close()
        if self._tmp is not None:
            self.store.engine.db.close()
            self._tmp.cleanup()
            self._tmp = None

    # -- reading ----------------------------------------------------------------------------------
    def search(self, query: str, k: Optional[int] = None, mode: Optional[str] = None) -> List[NodeWithScore]:
        """The ``k`` best memories for ``query``, each node saying how it was found (``retrieved_by``)."""
        mode = _ALIASES.get(mode, mode) if mode is not None else self.mode
        result = self.store.query(VectorStoreQuery(query_str=query, similarity_top_k=k or self.similarity_top_k),
                                  mode=mode, fetch_k=self.fetch_k)
        return [NodeWithScore(node=n, score=s) for n, s in zip(result.nodes or [], result.similarities or [])]

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return self.search(query_bundle.query_str)

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return await asyncio.to_thread(self.search, query_bundle.query_str)


__all__ = ["FallbackRetriever"]
