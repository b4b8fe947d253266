"""``FallbackRetriever``: agent memory over a LlamaIndex ``VectorStoreIndex`` that survives model changes.

Every memory goes to the index (as a ``TextNode`` whose id is the memory id) *and* to a BM25
:class:`~modelcache.keyword.MemoryIndex`, stamped with the fingerprint of the space its
vector was made in. A query uses vector search when the active embeddings are in that space,
BM25 when the chain is degraded or the space changed (until :meth:`FallbackRetriever.reindex`),
or both fused (reciprocal rank fusion) in ``hybrid`` mode.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Callable, List, Optional

from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from modelcache.fallback import check_texts
from modelcache.keyword import (
    FINGERPRINT_KEY,
    ID_KEY,
    MemoryIndex,
    Mode,
    ReindexReport,
    add_memories,
    choose_mode,
    reindex_memories,
    rrf,
)

from .embeddings import ManagedEmbedding

VECTOR_DIR = "vector_index"


class FallbackRetriever(BaseRetriever):
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

    # -- writing ------------------------------------------------------------------------
    def _persist_vector_index(self) -> None:
        self.index.storage_context.persist(persist_dir=str(self.persist_dir / VECTOR_DIR))

    def _persist(self) -> None:
        if self.persist_store is not None:
            self.persist_store()
        if self.persist_dir is not None:
            self.memory.persist(self.persist_dir)

    @staticmethod
    def _node(id_: str, text: str, metadata: dict) -> TextNode:
        # only the memory text is embedded (as through LangChain); metadata stays out of the vector
        keys = list(metadata)
        return TextNode(id_=id_, text=text, metadata=metadata, excluded_embed_metadata_keys=keys,
                        excluded_llm_metadata_keys=[FINGERPRINT_KEY, ID_KEY])

    def _index_delete(self, ids: List[str]) -> None:
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

    def _store_replace(self, ids: List[str], texts: List[str], metadatas: List[dict],
                       known: Optional[List[str]] = None) -> None:
        """Put ``ids`` in the index exactly once: delete what may be there (``known``), then insert."""
        self._index_delete(ids if known is None else known)
        self.index.insert_nodes([self._node(i, t, m) for i, t, m in zip(ids, texts, metadatas)])

    def add_texts(self, texts: List[str], metadatas: Optional[List[dict]] = None,
                  ids: Optional[List[str]] = None) -> List[str]:
        """Store memories in the vector index and the BM25 index; returns their ids.

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
        service = self.embed_model.service
        add_memories(self.memory, ids, texts, metas, fingerprint=service.ensure_active,
                     current=lambda: service.fingerprint, write=self._store_replace, persist=self._persist)
        return ids

    def delete(self, ids: List[str]) -> None:
        """Forget memories (vector index and memory index)."""
        ids = list(ids)
        self._index_delete(ids)
        self.memory.delete(ids)
        self._persist()

    def reindex(self, batch_size: int = 64, progress: bool = True) -> ReindexReport:
        """Re-embed every memory not in the active space (tqdm progress); resumable.

        Tries the better tiers first (recovery), then replaces each stale memory in the index
        batch by batch. Interrupted, it leaves every memory either done or still stale, never
        lost nor stored twice; calling it again finishes (the checkpoint in ``persist_dir``
        records the progress).
        """
        service = self.embed_model.service
        service.try_recover()
        checkpoint = self.persist_dir / "reindex_checkpoint.json" if self.persist_dir else None
        return reindex_memories(self.memory, fingerprint=service.ensure_active, write=self._store_replace,
                                checkpoint=checkpoint, persist=self._persist, batch_size=batch_size,
                                progress=progress)

    # -- reading ------------------------------------------------------------------------
    def _from_memory(self, hits: List[tuple[str, float]], how: str) -> List[NodeWithScore]:
        out = []
        for id_, score in hits:
            rec = self.memory.get(id_)
            if rec is not None:
                out.append(NodeWithScore(node=self._node(id_, rec[0], rec[1] | {"retrieved_by": how}), score=score))
        return out

    def _vector(self, query: str, vector: List[float], k: int) -> List[NodeWithScore]:
        retriever = self.index.as_retriever(similarity_top_k=k)
        hits = retriever.retrieve(QueryBundle(query_str=query, embedding=vector))
        # copies: the nodes may be the docstore's own objects
        return [NodeWithScore(node=h.node.model_copy(update={"metadata": dict(h.node.metadata)
                                                             | {"retrieved_by": "vector"}}), score=h.score)
                for h in hits]

    def search(self, query: str, k: Optional[int] = None, mode: Optional[str] = None) -> List[NodeWithScore]:
        """The ``k`` best memories for ``query``; each node carries ``metadata["retrieved_by"]``."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        k = k or self.similarity_top_k
        requested = mode or self.mode
        service = self.embed_model.service
        if requested == "bm25":
            return self._from_memory(self.memory.search(query, k), "bm25")
        vectors, fp = service.encode([query], "query")
        chosen = choose_mode(requested, degraded=service.degraded, active_fingerprint=fp, index=self.memory)
        if chosen == "bm25":
            return self._from_memory(self.memory.search(query, k), "bm25")
        if chosen == "vector":
            return self._vector(query, vectors[0].tolist(), k)
        fetch = self.fetch_k or 4 * k
        vec_hits = self._vector(query, vectors[0].tolist(), fetch)
        by_id = {h.node.node_id: h for h in vec_hits}
        bm25 = [i for i, _ in self.memory.search(query, fetch)]
        out = []
        for id_, score in rrf([[h.node.node_id for h in vec_hits], bm25], k=self.rrf_k)[:k]:
            rec = self.memory.get(id_)
            if rec is not None:
                out.append(NodeWithScore(node=self._node(id_, rec[0], rec[1] | {"retrieved_by": "hybrid"}),
                                         score=score))
            elif id_ in by_id:
                out.append(by_id[id_])
        return out

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return self.search(query_bundle.query_str)

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return await asyncio.to_thread(self.search, query_bundle.query_str)

    # -- introspection ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The embeddings' chain status plus what the memory holds and what a query would use."""
        service = self.embed_model.service
        return {"embeddings": service.status(), "memories": len(self.memory),
                "fingerprints": self.memory.fingerprints(),
                "query_mode": choose_mode(self.mode, degraded=service.degraded,
                                          active_fingerprint=service.fingerprint, index=self.memory)}


__all__ = ["FallbackRetriever"]
