"""``ManagedVectorStore``: a LlamaIndex vector store whose truth is the memory database.

Every node added is committed to the memory database (SQLite in ``memory_dir``: text, metadata,
ref doc id; FTS5 keyword index) before ``add`` returns. The inner vector store (SimpleVectorStore,
Chroma, Qdrant, ...) is a derived index that only ever holds vectors of the embedding model's
space: while no model of that space is available, nodes wait as *pending* and queries are
answered by FTS5; when a model is back, a background sync embeds the pending nodes and writes
them into the inner store (see :mod:`modelcache.memory.engine`).

The idiom::

    from llama_index.core import VectorStoreIndex
    from llamaindex_modelcache import ManagedVectorStore

    store = ManagedVectorStore(ChromaVectorStore(chroma_collection=collection), memory_dir="memory/")
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    index.insert(document); index.as_retriever().retrieve("where is the car?")

Why ``embed_model=store.embed_model``: LlamaIndex embeds nodes with the *index's* embed model
before it calls ``store.add``, so the store cannot choose the model nor catch its failure.
``store.embed_model`` is a :class:`ManagedEmbedding` that (by default) returns keyword vectors
instead of raising while no model is available, so ``index.insert`` never fails; the store
passes a node's vector on to the inner store only if it is known to come from the store's
space (it remembers the space of every vector its embed model returned: LlamaIndex copies
vectors into plain lists, so the vector itself cannot carry it), and re-embeds the rest.
Queries are not embedded by LlamaIndex (``is_embedding_query = False``): the store embeds the
query itself when it answers by vector, and not at all when it answers by keyword.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, List, Optional

from llama_index.core.schema import BaseNode, MetadataMode, NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import (
    build_metadata_filter_fn,
    metadata_dict_to_node,
    node_to_metadata_dict,
)
from pydantic import PrivateAttr

from modelcache.errors import ModelUnavailableError
from modelcache.memory.db import Memory, MemoryDB
from modelcache.memory.engine import MemoryEngine
from modelcache.memory.records import ID_KEY, Hit, Mode, SyncReport

from .embeddings import ManagedEmbedding

log = logging.getLogger("modelcache")

#: metadata key saying how a query result was found ("vector", "keyword" or "hybrid")
RETRIEVED_BY = "retrieved_by"
_QUERY_MODES: dict[VectorStoreQueryMode, Mode] = {
    VectorStoreQueryMode.HYBRID: "hybrid",
    VectorStoreQueryMode.SEMANTIC_HYBRID: "hybrid",
    VectorStoreQueryMode.TEXT_SEARCH: "keyword",
    VectorStoreQueryMode.SPARSE: "keyword",
}
_PASSTHROUGH_MODES = (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR)
_DELETE_CHUNK = 1000


# -- the space of vectors LlamaIndex copied ----------------------------------------------------------------------


class _SpaceRegistry:
    """Which embedding space each recently returned vector is from, by its exact values.

    LlamaIndex assigns embeddings to nodes through pydantic, which copies a :class:`SpaceVector`
    into a plain list and drops its ``fingerprint``; the values stay identical, so they are the key.
    Bounded (least recently used go first): LlamaIndex adds each batch right after embedding it.
    """

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        self._spaces: OrderedDict[int, str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(vector: Sequence[float]) -> int:
        return hash(tuple(vector))

    def record(self, vectors: Sequence[Sequence[float]]) -> None:
        with self._lock:
            for v in vectors:
                fp = getattr(v, "fingerprint", None)
                if fp is None:
                    continue
                key = self._key(v)
                self._spaces[key] = fp
                self._spaces.move_to_end(key)
            while len(self._spaces) > self.size:
                self._spaces.popitem(last=False)

    def space(self, vector: Sequence[float] | None) -> str | None:
        """The fingerprint of ``vector`` (its own, or the one recorded for its values), None if unknown."""
        if vector is None:
            return None
        fp = getattr(vector, "fingerprint", None)
        if fp is not None:
            return fp
        with self._lock:
            return self._spaces.get(self._key(vector))


_SPACES = _SpaceRegistry()


class _SpaceTrackingEmbedding(ManagedEmbedding):
    """A :class:`ManagedEmbedding` that records the space of every vector it returns (see above)."""

    def _embed(self, texts: List[str], kind: str) -> List[Any]:
        vectors = super()._embed(texts, kind)
        _SPACES.record(vectors)
        return vectors

    async def _aembed(self, texts: List[str], kind: str) -> List[Any]:
        vectors = await super()._aembed(texts, kind)
        _SPACES.record(vectors)
        return vectors


def _store_embedding(embed_model: ManagedEmbedding | None) -> _SpaceTrackingEmbedding:
    if embed_model is None:
        return _SpaceTrackingEmbedding(allow_degraded=True)
    if isinstance(embed_model, _SpaceTrackingEmbedding):
        return embed_model
    if not isinstance(embed_model, ManagedEmbedding):
        raise TypeError(f"ManagedVectorStore needs a llamaindex_modelcache.ManagedEmbedding, got "
                        f"{type(embed_model).__name__}: the store must know the embedding space of its vectors")
    # the same options and the same chain (one model in memory), plus the space tracking
    tracked = _SpaceTrackingEmbedding.model_construct(**{n: getattr(embed_model, n)
                                                         for n in type(embed_model).model_fields})
    tracked._service = embed_model.service
    return tracked


# -- nodes <-> memories --------------------------------------------------------------------------------------------


def _node_from_memory(memory: Memory) -> BaseNode:
    """The node as it was added (from ``node_to_metadata_dict``), or a TextNode for a memory added
    by other means (LangChain, the engine): only its text is embedded, as LangChain does."""
    meta = memory.metadata or {}
    if "_node_content" in meta:
        try:
            node = metadata_dict_to_node(meta, text=memory.text)
            node.embedding = None
            return node
        except Exception as exc:  # noqa: BLE001 - a foreign or damaged _node_content: fall back to the row
            log.debug("memory %s: cannot rebuild its node (%s); using its text and metadata", memory.id, exc)
            meta = {k: v for k, v in meta.items() if not k.startswith("_node_")}
    node = TextNode(id_=memory.id, text=memory.text, metadata=dict(meta),
                    excluded_embed_metadata_keys=list(meta), excluded_llm_metadata_keys=[ID_KEY])
    if memory.ref_doc_id:
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=memory.ref_doc_id)
    return node


def _with_retrieved_by(node: BaseNode, how: str) -> BaseNode:
    node.metadata[RETRIEVED_BY] = how
    for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
        if RETRIEVED_BY not in keys:
            keys.append(RETRIEVED_BY)
    return node


def _relevance(similarity: float | None) -> float:
    """The inner store's similarity as a relevance in [0, 1] (cosine below 0 counts as 0)."""
    if similarity is None:
        return 0.0
    return min(1.0, max(0.0, float(similarity)))


# -- which store is it ---------------------------------------------------------------------------------------------


def detect_store_key(inner: Any) -> str | None:
    """A stable name for ``inner`` if it persists (its vectors outlive this process), else None.

    Chroma: ``chroma:<collection name>:<collection id>`` (persistent or remote clients); Qdrant:
    ``qdrant:<collection>:<path or url>`` (local path or server). None for SimpleVectorStore,
    an in-memory Chroma / Qdrant, and stores this module does not know (logged): such a store
    starts empty in each process and is filled from the memory database in the background.
    """
    name = type(inner).__name__
    if name == "SimpleVectorStore":
        return None
    if name == "ChromaVectorStore":
        collection = inner.client
        try:
            settings = collection._client.get_settings()
            remote = "fastapi" in str(settings.chroma_api_impl).lower()
            if not settings.is_persistent and not remote:
                return None  # an in-process EphemeralClient
        except Exception as exc:  # noqa: BLE001 - another chromadb: a collection id is stable anyway
            log.debug("chroma client settings unreadable (%s); keying the store by its collection", exc)
        return f"chroma:{collection.name}:{collection.id}"
    if name == "QdrantVectorStore":
        client = getattr(inner, "_client", None)
        impl = getattr(client, "_client", None)
        location = getattr(impl, "location", None)
        if location is not None:  # local mode
            if location == ":memory:":
                return None
            where = str(Path(location).resolve())
        else:
            host, port = getattr(impl, "_host", None), getattr(impl, "_port", None)
            where = inner.url or (f"{host}:{port}" if host else None)
            if where is None:
                log.warning("ManagedVectorStore: cannot tell where this Qdrant collection lives; treating it as "
                            "process-local (pass store_key= to keep its vectors across processes)")
                return None
        return f"qdrant:{inner.collection_name}:{where}"
    log.warning("ManagedVectorStore: no stable key known for %s; it is treated as process-local (filled from the "
                "memory database in each process). If it persists, pass store_key='<a stable name>'", name)
    return None


# -- the engine's view of the inner store ------------------------------------------------------------------------


class _InnerAdapter:
    """:class:`~modelcache.memory.records.InnerStore` over a LlamaIndex vector store."""

    def __init__(self, owner: ManagedVectorStore, inner: Any) -> None:
        self.owner = owner
        self.inner = inner
        self.lock = threading.RLock()  # the background sync writes while queries read (SimpleVectorStore is a dict)
        self.local = threading.local()  # vectors LlamaIndex computed for the add() running in this thread
        base = getattr(BasePydanticVectorStore, "delete_nodes", None)
        self.delete_by_node_id = getattr(type(inner), "delete_nodes", base) is not base
        self.uuid_ids = type(inner).__name__ == "QdrantVectorStore"  # Qdrant point ids must be UUIDs

    # ids ------------------------------------------------------------------------------------------
    def inner_id(self, memory_id: str) -> str:
        if not self.uuid_ids:
            return memory_id
        try:
            if str(uuid.UUID(memory_id)) == memory_id:
                return memory_id
        except ValueError:
            pass
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"modelcache-memory:{memory_id}"))

    def _ready(self) -> bool:
        """False for a Qdrant collection not created yet (it is created by the first add)."""
        return getattr(self.inner, "_collection_initialized", True) is not False

    def _inner_node(self, memory: Memory) -> tuple[BaseNode, str]:
        node = _node_from_memory(memory)
        text = node.get_content(metadata_mode=MetadataMode.EMBED)  # what LlamaIndex embeds
        inner_id = self.inner_id(memory.id)
        if inner_id != memory.id:
            node.id_ = inner_id
            node.metadata[ID_KEY] = memory.id
            for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
                if ID_KEY not in keys:
                    keys.append(ID_KEY)
        if not self.delete_by_node_id:  # the store deletes by ref doc only: make each node its own
            node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=inner_id)
        return node, text

    # InnerStore -----------------------------------------------------------------------------------
    def write(self, memories: list[Memory]) -> str | None:
        engine = self.owner.engine
        target = engine.target()
        if target is None:
            raise ModelUnavailableError(engine.service.model, {"space": "no model of the store's space"})
        given: dict[str, tuple[list[float], str | None]] = getattr(self.local, "vectors", None) or {}
        nodes, fresh, texts = [], [], []
        for memory in memories:
            node, text = self._inner_node(memory)
            vector, fp = given.get(memory.id, (None, None))
            if vector is not None and fp == target:
                node.embedding = list(vector)
            else:
                fresh.append(node)
                texts.append(text)
            nodes.append(node)
        if fresh:
            vectors, fp = self.owner.embed_model.service.encode(texts, "document")
            if fp != target:  # the chain moved meanwhile: write nothing, they stay pending
                raise ModelUnavailableError(engine.service.model, {"space": f"vectors came out as {fp}, "
                                                                            f"the store holds {target}"})
            for node, vector in zip(fresh, vectors.tolist()):
                node.embedding = vector
        with self.lock:
            self._delete_inner([self.inner_id(m.id) for m in memories])
            self.inner.add(nodes)
        return target

    def delete(self, ids: list[str]) -> None:
        self._delete_inner([self.inner_id(i) for i in ids])

    def _delete_inner(self, inner_ids: list[str]) -> None:
        if not inner_ids:
            return
        with self.lock:
            if not self._ready():
                return
            if self.delete_by_node_id:
                for i in range(0, len(inner_ids), _DELETE_CHUNK):
                    self.inner.delete_nodes(node_ids=inner_ids[i:i + _DELETE_CHUNK])
            else:
                for inner_id in inner_ids:  # each node was written with itself as its ref doc
                    self.inner.delete(inner_id)

    def search(self, vector: list[float], k: int) -> list[tuple[str, float]]:
        with self.lock:
            if not self._ready():
                return []
            result = self.inner.query(VectorStoreQuery(query_embedding=list(vector), similarity_top_k=k))
        nodes = list(result.nodes or [])
        ids = list(result.ids) if result.ids is not None else [n.node_id for n in nodes]
        sims = list(result.similarities or [])
        hits = []
        for i, inner_id in enumerate(ids):
            node = nodes[i] if i < len(nodes) else None
            memory_id = node.metadata.get(ID_KEY, inner_id) if node is not None else inner_id
            hits.append((str(memory_id), _relevance(sims[i] if i < len(sims) else None)))
        return hits


# -- the store ---------------------------------------------------------------------------------------------------


class ManagedVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over any other, with the memory database as its truth.

    Args:
        inner_vector_store: the store that holds the vectors (SimpleVectorStore, ChromaVectorStore,
            QdrantVectorStore, ...); it only ever receives vectors of ``embed_model``'s space.
        memory_dir: the memory database's directory (or a :class:`~modelcache.memory.db.MemoryDB`);
            any number of processes may share it.
        memory_url: the memory database on a PostgreSQL server instead of ``memory_dir``
            (``postgresql://...``, needs ``pip install "modelcache[postgres]"``): any number of hosts.
        embed_model: the :class:`ManagedEmbedding` whose space the inner store holds; None: the
            default model with ``allow_degraded=True`` (so ``index.insert`` never fails). Pass
            ``store.embed_model`` to the index.
        mode: ``auto`` (vector while every memory is in the inner store in the model's space, else
            keyword), ``vector``, ``keyword`` (FTS5) or ``hybrid`` (both fused).
        store_key: a stable name for a persistent inner store; default: detected for Chroma and
            Qdrant (see :func:`detect_store_key`), None (process-local) otherwise.
        sync_interval_s: how often the background sync looks for a model while one is missing.

    A query's ``mode`` (``VectorStoreQueryMode.HYBRID`` / ``TEXT_SEARCH``) or
    ``vector_store_kwargs={"mode": ...}`` overrides ``mode``. Scores are in [0, 1]: the inner
    store's similarity (vector), FTS5 BM25 as ``s / (1 + s)`` (keyword) or normalised
    reciprocal rank fusion (hybrid); each result node says how it was found in
    ``metadata["retrieved_by"]`` (hidden from the LLM and the embedding).
    Metadata filters, ``node_ids`` and ``doc_ids`` are applied to the memories' metadata after
    the search (which fetches more to make up for it).
    """

    stores_text: bool = True
    is_embedding_query: bool = False
    mode: str = "auto"
    store_key: Optional[str] = None
    sync_interval_s: float = 5.0

    _inner: Any = PrivateAttr()
    _embed_model: _SpaceTrackingEmbedding = PrivateAttr()
    _adapter: _InnerAdapter = PrivateAttr()
    _engine: MemoryEngine = PrivateAttr()

    def __init__(self, inner_vector_store: Any, memory_dir: str | Path | MemoryDB | None = None, *,
                 embed_model: Optional[ManagedEmbedding] = None, mode: Mode = "auto",
                 store_key: Optional[str] = None, sync_interval_s: float = 5.0, background: bool = True,
                 memory_url: Optional[str] = None) -> None:
        if isinstance(inner_vector_store, ManagedVectorStore):
            raise TypeError("inner_vector_store is already a ManagedVectorStore")
        key = store_key if store_key is not None else detect_store_key(inner_vector_store)
        super().__init__(mode=mode, store_key=key, sync_interval_s=sync_interval_s)
        self._inner = inner_vector_store
        self._embed_model = _store_embedding(embed_model)
        self._adapter = _InnerAdapter(self, inner_vector_store)
        embedding = self._embed_model
        self._engine = MemoryEngine(memory_dir, self._adapter, lambda: embedding.service, store_key=key, mode=mode,
                                    sync_interval_s=sync_interval_s, background=background, memory_url=memory_url)

    @classmethod
    def class_name(cls) -> str:
        return "ModelCacheManagedVectorStore"

    # -- what it is made of -------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The inner vector store."""
        return self._inner

    @property
    def inner_vector_store(self) -> Any:
        return self._inner

    @property
    def embed_model(self) -> ManagedEmbedding:
        """The embed model to give the index:
        ``VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)``."""
        return self._embed_model

    @property
    def engine(self) -> MemoryEngine:
        """The framework-free core (memory database, sync, search)."""
        return self._engine

    # -- writing ------------------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        """Commit every node to the memory database (acknowledged), then put it in the inner store
        if a model of the store's space is available: with its vector when that is known to be of
        the store's space, else re-embedded by :attr:`embed_model`. Without such a model the
        nodes are pending (found by keyword) until the background sync writes them."""
        nodes = list(nodes)
        if not nodes:
            return []
        unique = list({n.node_id: n for n in nodes}.values())  # the last copy of an id wins
        # a store that takes only flat metadata (Chroma) would refuse the node forever: refuse it now
        flat = bool(getattr(self._inner, "flat_metadata", False))
        vectors = {n.node_id: (n.embedding, _SPACES.space(n.embedding)) for n in unique if n.embedding is not None}
        self._adapter.local.vectors = vectors
        try:
            self._engine.add([n.get_content(metadata_mode=MetadataMode.NONE) for n in unique],
                             [node_to_metadata_dict(n, remove_text=True, flat_metadata=flat) for n in unique],
                             [n.node_id for n in unique], [n.ref_doc_id for n in unique])
        finally:
            self._adapter.local.vectors = None
        return [n.node_id for n in nodes]

    async def async_add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        return await asyncio.to_thread(self.add, nodes, **add_kwargs)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Forget every node of source document ``ref_doc_id`` (database, then inner store)."""
        self._engine.delete_ref_doc(ref_doc_id)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    def delete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                     **delete_kwargs: Any) -> None:
        """Forget these nodes (all matching ``filters`` when no ids are given)."""
        if node_ids is None and filters is None:
            return
        if filters is None:
            self._engine.delete(list(node_ids or []))
            return
        self._engine.delete([n.node_id for n in self.get_nodes(node_ids, filters)])

    async def adelete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                            **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters)

    def clear(self) -> None:
        """Forget every memory (of this memory database, in the inner store too)."""
        self._engine.delete(self._engine.db.ids())

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    # -- reading ------------------------------------------------------------------------------------
    def get_nodes(self, node_ids: Optional[List[str]] = None,
                  filters: Optional[MetadataFilters] = None) -> List[BaseNode]:
        """Nodes from the memory database (the truth), in the order of ``node_ids``."""
        memories = self._engine.get(list(node_ids) if node_ids is not None else self._engine.db.ids())
        keep = _filter_fn(filters, None, None)
        return [_node_from_memory(m) for m in memories if keep(m)]

    async def aget_nodes(self, node_ids: Optional[List[str]] = None,
                         filters: Optional[MetadataFilters] = None) -> List[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` best memories for ``query.query_str`` (vector, keyword or hybrid,
        see the class docstring); a query with only ``query_embedding`` runs on the inner store."""
        k = int(query.similarity_top_k)
        mode = self._query_mode(query, kwargs.get("mode"))
        keep = _filter_fn(query.filters, query.node_ids, query.doc_ids)
        filtering = bool(query.filters or query.node_ids or query.doc_ids)
        fetch_k = kwargs.get("fetch_k")
        if query.query_str is not None:
            def run(n: int) -> list[Hit]:
                return self._engine.search(query.query_str, n, mode, fetch_k=fetch_k)
        elif query.query_embedding is not None:
            def run(n: int) -> list[Hit]:
                return self._search_vector(query.query_embedding, n)
        else:
            raise ValueError("VectorStoreQuery needs query_str or query_embedding")
        hits = _search_filtered(run, keep, k, filtering, self._engine.count())
        nodes = [_with_retrieved_by(_node_from_memory(h.memory), h.how) for h in hits]
        return VectorStoreQueryResult(nodes=nodes, similarities=[h.score for h in hits], ids=[h.id for h in hits])

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    def _query_mode(self, query: VectorStoreQuery, override: Optional[str]) -> Mode:
        if override is not None:
            return override  # type: ignore[return-value]  # the engine checks it
        if query.mode in _QUERY_MODES:
            return _QUERY_MODES[query.mode]
        if query.mode in _PASSTHROUGH_MODES:
            return self.mode  # type: ignore[return-value]
        raise NotImplementedError(f"ManagedVectorStore does not support query mode {query.mode!r} "
                                  "(default, mmr, hybrid, text_search and sparse are supported)")

    def _search_vector(self, vector: Sequence[float], k: int) -> list[Hit]:
        target = self._engine.target()
        space = _SPACES.space(vector)
        if target is None or (space is not None and space != target):
            log.warning("ManagedVectorStore: a query by vector alone cannot be answered now (the inner store holds "
                        "%s, the query vector is %s); pass query_str to answer by keyword", target, space)
            return []
        return self._engine.search_by_vector(list(vector), k, target)

    # -- the memory's state -------------------------------------------------------------------------
    def count(self) -> int:
        """How many memories the database holds."""
        return self._engine.count()

    def sync(self, progress: bool = False) -> SyncReport:
        """Write every pending memory to the inner store now (the background sync does it anyway)."""
        return self._engine.sync(progress=progress)

    def wait_synced(self, timeout: float = 60.0) -> bool:
        return self._engine.wait_synced(timeout)

    def pending(self) -> int:
        return self._engine.pending()

    def status(self) -> dict[str, Any]:
        """The embeddings' chain, the memory count, what the inner store holds, what a query runs."""
        return self._engine.status() | {"inner_store": type(self._inner).__name__}

    def persist(self, persist_path: str, fs: Any = None) -> None:
        """The inner store's own persistence (``StorageContext.persist``); the database needs none."""
        persist = getattr(self._inner, "persist", None)
        if persist is not None:
            persist(persist_path, fs=fs) if fs is not None else persist(persist_path)

    def close(self) -> None:
        """Stop the background sync (the database and the inner store keep what they hold; a database
        opened from memory_dir / memory_url has its connections closed)."""
        self._engine.close()


def _filter_fn(filters: Optional[MetadataFilters], node_ids: Optional[List[str]],
               doc_ids: Optional[List[str]]) -> Callable[[Memory], bool]:
    if not filters and not node_ids and not doc_ids:
        return lambda _memory: True
    ids, docs = set(node_ids or ()), set(doc_ids or ())
    rows: dict[str, dict] = {}
    match = build_metadata_filter_fn(lambda id_: rows[id_], filters)

    def keep(memory: Memory) -> bool:
        if ids and memory.id not in ids:
            return False
        if docs and memory.ref_doc_id not in docs:
            return False
        rows[memory.id] = memory.metadata or {}
        try:
            return match(memory.id)
        except TypeError:  # a filter comparing across types (e.g. str > int) does not match
            return False
        finally:
            rows.pop(memory.id, None)

    return keep


def _search_filtered(run: Callable[[int], list[Hit]], keep: Callable[[Memory], bool], k: int, filtering: bool,
                     total: int) -> list[Hit]:
    """``run(k)``; with filters, fetch more until ``k`` pass or every memory was looked at."""
    if k <= 0:
        return []
    if not filtering:
        return run(k)
    n = max(10 * k, 100)
    while True:
        hits = [h for h in run(n) if keep(h.memory)]
        if len(hits) >= k or n >= total:
            return hits[:k]
        n *= 4


__all__ = ["ManagedVectorStore", "RETRIEVED_BY", "detect_store_key"]
