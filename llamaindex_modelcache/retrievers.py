"""``FallbackRetriever``: agent memory over a LlamaIndex ``VectorStoreIndex`` that survives model changes.

Every memory goes to the index (as a ``TextNode`` whose id is the memory id) *and* to a BM25
:class:`~modelcache.memory.index.MemoryIndex`, stamped with the fingerprint of the space its
vector was made in. A query uses vector search when the active embeddings are in that space,
BM25 when the chain is degraded or the space changed (until :meth:`FallbackRetriever.reindex`),
or both fused (reciprocal rank fusion) in ``hybrid`` mode.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, List, Optional

from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from modelcache.memory.index import FINGERPRINT_KEY, MemoryIndex
from modelcache.memory.router import Hit, MemoryRetrieverMixin, MemoryRouter
from modelcache.memory.sync import ID_KEY, Mode

from .embeddings import ManagedEmbedding

VECTOR_DIR = "vector_index"


class FallbackRetriever(MemoryRetrieverMixin, BaseRetriever):
    """Vector search while the vectors are valid, BM25 when they are not, hybrid on request.

    Example:
        ```python
        from llama_index.core import VectorStoreIndex
        from llamaindex_modelcache import FallbackRetriever, ManagedEmbedding

        index = VectorStoreIndex([], embed_model=ManagedEmbedding())
        memory = FallbackRetriever(index, similarity_top_k=3, persist_dir="memory/")
        memory.add_texts(["The car is parked on level 3"])
        memory.retrieve("where is the car?")
        ```

    With ``persist_dir`` the memory index, the reindex checkpoint and (unless ``persist_store``
    is given) the vector index (``persist_dir/vector_index``) are saved after every write;
    :meth:`load` reopens them.
    """

    def __init__(self, index: VectorStoreIndex, memory: Optional[MemoryIndex] = None, *,
                 embed_model: Optional[ManagedEmbedding] = None, similarity_top_k: int = 4,
                 mode: Mode = "auto", rrf_k: int = 60, fetch_k: Optional[int] = None,
                 persist_dir: Optional[str | Path] = None, persist_store: Optional[Callable[[], None]] = None,
                 callback_manager: Optional[CallbackManager] = None, verbose: bool = False) -> None:
        embed_model = embed_model or getattr(index, "_embed_model", None)
        if not isinstance(embed_model, ManagedEmbedding):
            raise TypeError("FallbackRetriever needs the index to embed with ManagedEmbedding "
                            f"(got {type(embed_model).__name__}): build it with "
                            "VectorStoreIndex(..., embed_model=ManagedEmbedding()) or pass embed_model=")
        if mode not in ("auto", "vector", "bm25", "hybrid"):
            raise ValueError(f"mode must be auto, vector, bm25 or hybrid; got {mode!r}")
        self.index = index
        self.embed_model = embed_model
        self.persist_dir = Path(persist_dir) if persist_dir is not None else None
        self.memory = memory if memory is not None else MemoryIndex.load_or_new(self.persist_dir)
        self.similarity_top_k = similarity_top_k
        self.mode = mode
        self.rrf_k = rrf_k
        self.fetch_k = fetch_k
        if persist_store is None and self.persist_dir is not None:
            persist_store = self._persist_vector_index
        self.persist_store = persist_store
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @classmethod
    def load(cls, persist_dir: str | Path, embed_model: ManagedEmbedding, **kwargs: Any) -> FallbackRetriever:
        """Reopen a retriever saved with ``persist_dir`` (vector index + memory index)."""
        persist_dir = Path(persist_dir)
        storage = StorageContext.from_defaults(persist_dir=str(persist_dir / VECTOR_DIR))
        index = load_index_from_storage(storage, embed_model=embed_model)
        return cls(index, embed_model=embed_model, persist_dir=persist_dir, **kwargs)

    # add_texts, delete, reindex and status come from MemoryRetrieverMixin (modelcache.memory)
    def _router(self) -> MemoryRouter:
        """The framework-free logic (modelcache.memory), over this retriever's current attributes."""
        return MemoryRouter(lambda: self.embed_model.service, self.memory, self.persist_dir, self.persist_store)

    # -- writing ------------------------------------------------------------------------
    def _persist_vector_index(self) -> None:
        self.index.storage_context.persist(persist_dir=str(self.persist_dir / VECTOR_DIR))

    @staticmethod
    def _node(id_: str, text: str, metadata: dict) -> TextNode:
        # only the memory text is embedded (as through LangChain); metadata stays out of the vector
        keys = list(metadata)
        return TextNode(id_=id_, text=text, metadata=metadata, excluded_embed_metadata_keys=keys,
                        excluded_llm_metadata_keys=[FINGERPRINT_KEY, ID_KEY])

    def _store_delete(self, ids: List[str]) -> None:
        if not ids:
            return
        try:
            self.index.delete_nodes(list(ids), delete_from_docstore=True)
        except KeyError:  # the default index refuses ids it does not hold: go one by one
            for id_ in ids:
                try:
                    self.index.delete_nodes([id_], delete_from_docstore=True)
                except KeyError:
                    pass  # not in the index: nothing to delete
            self.index.storage_context.index_store.add_index_struct(self.index.index_struct)

    def _store_insert(self, ids: List[str], texts: List[str], metadatas: List[dict]) -> None:
        self.index.insert_nodes([self._node(i, t, m) for i, t, m in zip(ids, texts, metadatas)])

    # -- reading ------------------------------------------------------------------------
    def _vector(self, query: str, vector: List[float], k: int) -> List[tuple[str, NodeWithScore]]:
        retriever = self.index.as_retriever(similarity_top_k=k)
        hits = retriever.retrieve(QueryBundle(query_str=query, embedding=vector))
        # copies: the nodes may be the docstore's own objects
        return [(h.node.node_id,
                 NodeWithScore(node=h.node.model_copy(update={"metadata": dict(h.node.metadata)
                                                              | {"retrieved_by": "vector"}}), score=h.score))
                for h in hits]

    def _node_with_score(self, hit: Hit) -> NodeWithScore:
        if hit.how == "vector":
            return hit.native
        return NodeWithScore(node=self._node(hit.id, hit.text, hit.metadata | {"retrieved_by": hit.how}),
                             score=hit.score)

    def search(self, query: str, k: Optional[int] = None, mode: Optional[str] = None) -> List[NodeWithScore]:
        """The ``k`` best memories for ``query``; each node carries ``metadata["retrieved_by"]``."""
        hits = self._router().search(query, k or self.similarity_top_k, mode or self.mode,
                                     lambda vector, n: self._vector(query, vector, n),
                                     fetch_k=self.fetch_k, rrf_k=self.rrf_k)
        return [self._node_with_score(h) for h in hits]

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return self.search(query_bundle.query_str)

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return await asyncio.to_thread(self.search, query_bundle.query_str)


__all__ = ["FallbackRetriever"]
