"""``MemoryRouter`` (the framework-free half of both retrievers) and ``ServiceHandle``.

Real pieces only: an ``EmbeddingService`` forced to the keyword tier (or on a tiny local
model when the test needs an undegraded space), a real ``MemoryIndex``, and a dict standing
in for the framework's vector store (what the adapters do with their store's API).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelcache.backends.hashed import KEYWORD_PREFIX
from modelcache.memory.fusion import rrf
from modelcache.memory.index import FINGERPRINT_KEY, MemoryIndex
from modelcache.memory.router import (
    CHECKPOINT_FILE,
    Hit,
    MemoryRetrieverMixin,
    MemoryRouter,
)
from modelcache.memory.sync import ID_KEY
from modelcache.serving.handle import ServiceHandle
from modelcache.serving.service import EmbeddingService
from modelcache.settings import load_settings

MEMORIES = {
    "car": "The car is parked on level 3 of the airport garage.",
    "tea": "Alice prefers green tea without sugar.",
    "keys": "The spare house keys are in the blue kitchen drawer.",
    "wifi": "The guest wifi password is sunflower42.",
}


class DictStore:
    """A vector store as the adapters see one: replace by id, delete by id, nearest by vector."""

    def __init__(self, service: EmbeddingService):
        self.service = service
        self.rows: dict[str, tuple[np.ndarray, str, dict]] = {}
        self.writes: list[tuple[list[str], list[str] | None]] = []
        self.searches: list[int] = []
        self.saves = 0

    def write(self, ids, texts, metadatas, known=None) -> None:
        self.writes.append((list(ids), None if known is None else list(known)))
        self.delete(ids if known is None else known)
        self.insert(ids, texts, metadatas)

    def insert(self, ids, texts, metadatas) -> None:
        vectors = self.service.embed(texts, "document")
        for id_, vec, text, meta in zip(ids, vectors, texts, metadatas):
            self.rows[id_] = (vec, text, meta)

    def delete(self, ids) -> None:
        for id_ in ids:
            self.rows.pop(id_, None)

    def vector_search(self, vector, n):
        self.searches.append(n)
        q = np.asarray(vector, dtype=np.float32)
        ranked = sorted(self.rows, key=lambda i: -float(self.rows[i][0] @ q))[:n]
        return [(id_, ("native", id_)) for id_ in ranked]

    def save(self) -> None:
        self.saves += 1


def keyword_service() -> EmbeddingService:
    """The default model is not cached and we are offline: manual + [keyword] lands on keyword."""
    return EmbeddingService(load_settings({"offline": True, "fallback": {"strategy": "manual",
                                                                         "models": ["keyword"]}}))


@pytest.fixture
def service() -> EmbeddingService:
    return keyword_service()


@pytest.fixture
def store(service: EmbeddingService) -> DictStore:
    return DictStore(service)


def router_for(service: EmbeddingService, store: DictStore, persist_dir: Path | None = None,
               memory: MemoryIndex | None = None) -> MemoryRouter:
    return MemoryRouter(lambda: service, memory if memory is not None else MemoryIndex(), persist_dir, store.save)


def fill(router: MemoryRouter, store: DictStore) -> list[str]:
    return router.add(list(MEMORIES.values()), [{"topic": k} for k in MEMORIES], list(MEMORIES), store.write)


# -- writing ----------------------------------------------------------------------------------


def test_add_stamps_store_and_index_and_persists(service: EmbeddingService, store: DictStore,
                                                 tmp_path: Path) -> None:
    router = router_for(service, store, tmp_path)
    assert fill(router, store) == list(MEMORIES)
    fp = service.fingerprint
    assert service.active_tier == "keyword" and fp == f"{KEYWORD_PREFIX}384"
    assert router.memory.fingerprints() == {fp: len(MEMORIES)}
    text, meta = router.memory.get("tea")
    assert text == MEMORIES["tea"] and meta == {"topic": "tea", FINGERPRINT_KEY: fp, ID_KEY: "tea"}
    assert set(store.rows) == set(MEMORIES) and store.rows["car"][2][FINGERPRINT_KEY] == fp
    assert store.writes == [(list(MEMORIES), [])]  # nothing known yet: nothing to delete first
    assert store.saves == 1 and MemoryIndex.load(tmp_path).ids() == list(MEMORIES)


def test_add_generates_ids_replaces_existing_and_validates(service: EmbeddingService, store: DictStore) -> None:
    router = router_for(service, store)
    ids = router.add(["first memory", "second memory"], None, None, store.write)
    assert len(ids) == 2 and all(len(i) == 32 for i in ids) and ids[0] != ids[1]
    assert router.memory.get(ids[0])[1][ID_KEY] == ids[0]
    router.add(["first memory, edited"], [{"v": 2}], [ids[0]], store.write)
    assert store.writes[-1] == ([ids[0]], [ids[0]])  # the known id is deleted from the store first
    assert len(router.memory) == 2 and len(store.rows) == 2
    assert router.memory.get(ids[0])[0] == "first memory, edited" and store.rows[ids[0]][2]["v"] == 2

    writes = len(store.writes)
    assert router.add([], None, None, store.write) == []
    with pytest.raises(TypeError, match="wrap one text in a list"):
        router.add("one text", None, None, store.write)
    with pytest.raises(ValueError, match="same length"):
        router.add(["a", "b"], [{}], None, store.write)
    with pytest.raises(ValueError, match="same length"):
        router.add(["a"], None, ["x", "y"], store.write)
    assert len(store.writes) == writes and len(router.memory) == 2  # nothing written on bad input


def test_delete_forgets_in_store_and_index(service: EmbeddingService, store: DictStore, tmp_path: Path) -> None:
    router = router_for(service, store, tmp_path)
    fill(router, store)
    deleted = []
    router.delete(iter(["car", "unknown"]), lambda ids: (deleted.append(ids), store.delete(ids)))
    assert deleted == [["car", "unknown"]]
    assert "car" not in router.memory and "car" not in store.rows and len(router.memory) == len(MEMORIES) - 1
    assert store.saves == 2 and "car" not in MemoryIndex.load(tmp_path)


def test_reindex_rewrites_stale_memories_and_clears_checkpoint(service: EmbeddingService, store: DictStore,
                                                               tmp_path: Path) -> None:
    memory = MemoryIndex()
    memory.add(list(MEMORIES), list(MEMORIES.values()),
               [{FINGERPRINT_KEY: "old-space"}, {FINGERPRINT_KEY: "old-space"}, {}, {FINGERPRINT_KEY: "x"}])
    router = router_for(service, store, tmp_path, memory)
    report = router.reindex(store.write, batch_size=3, progress=False)
    fp = service.fingerprint
    assert report.target == fp and report.reembedded == len(MEMORIES) and report.skipped == 0
    assert [w[0] for w in store.writes] == [["car", "tea", "keys"], ["wifi"]]
    assert memory.fingerprints() == {fp: len(MEMORIES)} and memory.stale_ids(fp) == []
    assert {m[FINGERPRINT_KEY] for _, _, m in store.rows.values()} == {fp}
    assert not (tmp_path / CHECKPOINT_FILE).exists() and store.saves >= 2
    assert router.reindex(store.write, progress=False).reembedded == 0  # nothing stale any more


# -- reading ----------------------------------------------------------------------------------


def test_degraded_service_answers_from_bm25(service: EmbeddingService, store: DictStore) -> None:
    router = router_for(service, store)
    fill(router, store)
    for mode in ("auto", "hybrid", "bm25"):
        hits = router.search("where is the car parked?", 2, mode, store.vector_search)
        assert hits and hits[0].id == "car" and {h.how for h in hits} == {"bm25"}, mode
        assert hits[0].text == MEMORIES["car"] and hits[0].metadata["topic"] == "car"
        assert hits[0].score > 0 and hits[0].native is None
    assert store.searches == []  # the store is never asked
    assert router.status("auto")["query_mode"] == "bm25"


def test_bm25_mode_does_not_embed_the_query(service: EmbeddingService, store: DictStore) -> None:
    router = router_for(service, store)
    fill(router, store)
    before = service.counters["texts"]
    assert router.search("sunflower42", 4, "bm25", store.vector_search)[0].id == "wifi"
    assert service.counters["texts"] == before
    assert router.search("nothing matches this", 4, "bm25", store.vector_search) == []


def test_vector_mode_returns_the_stores_own_results(service: EmbeddingService, store: DictStore) -> None:
    router = router_for(service, store)
    fill(router, store)
    hits = router.search("green tea Alice", 3, "vector", store.vector_search)
    assert store.searches == [3] and len(hits) == 3
    assert hits[0] == Hit("tea", None, "vector", native=("native", "tea"))
    assert all(h.text is None and h.metadata is None for h in hits)


def test_hits_of_forgotten_memories_are_dropped(service: EmbeddingService, store: DictStore) -> None:
    router = router_for(service, store)
    fill(router, store)
    router.memory.delete(["tea"])  # search → get race: BM25 ranked it, the record is gone
    assert "tea" not in [h.id for h in router._from_memory([("tea", 1.0), ("car", 0.5)], "bm25")]


def test_bad_query_and_mode(service: EmbeddingService, store: DictStore) -> None:
    router = router_for(service, store)
    with pytest.raises(TypeError, match="query must be a str"):
        router.search(b"car", 2, "auto", store.vector_search)
    with pytest.raises(ValueError, match="mode must be"):
        router.search("car", 2, "semantic", store.vector_search)
    with pytest.raises(ValueError, match="mode must be"):
        router.status("semantic")


def test_status_reports_chain_memories_and_mode(service: EmbeddingService, store: DictStore) -> None:
    router = router_for(service, store)
    fill(router, store)
    status = router.status("vector")
    assert status["memories"] == len(MEMORIES) and status["query_mode"] == "vector"
    assert status["fingerprints"] == {service.fingerprint: len(MEMORIES)}
    assert status["embeddings"]["active_tier"] == "keyword" and status["embeddings"]["degraded"]


def test_undegraded_space_uses_vectors_and_hybrid_fuses(tiny_model_dir: Path) -> None:
    service = EmbeddingService(load_settings({"offline": True}), str(tiny_model_dir), strategy="manual",
                               fallback_models=["keyword"])
    store = DictStore(service)
    router = router_for(service, store)
    fill(router, store)
    assert service.active_tier == "preferred" and not service.degraded
    assert router.status("auto")["query_mode"] == "vector"

    hits = router.search("car garage", 2, "auto", store.vector_search)
    assert store.searches == [2] and [h.how for h in hits] == ["vector", "vector"]

    # a vector result the memory index does not hold is kept, as the store's own object
    store.rows["orphan"] = (service.embed(["car garage level"])[0], "orphan", {})
    store.searches.clear()
    query = "car garage"
    hits = router.search(query, 3, "hybrid", store.vector_search, fetch_k=5, rrf_k=10)
    assert store.searches == [5]
    vec_ids = [i for i, _ in store.vector_search(service.embed([query], "query")[0].tolist(), 5)]
    bm25_ids = [i for i, _ in router.memory.search(query, 5)]
    expected = rrf([vec_ids, bm25_ids], k=10)[:3]
    assert [(h.id, h.score) for h in hits] == expected and "orphan" in [h.id for h in hits]
    for hit in hits:
        if hit.id == "orphan":
            assert hit.how == "vector" and hit.native == ("native", "orphan") and hit.text is None
        else:
            assert hit.how == "hybrid" and hit.text == MEMORIES[hit.id] and hit.native is None
    assert hits[0].id == "car"  # first in BM25, high in vectors

    store.searches.clear()
    router.search(query, 2, "hybrid", store.vector_search)
    assert store.searches == [8]  # fetch_k None: 4 * k


# -- MemoryRetrieverMixin -----------------------------------------------------------------------


class DictRetriever(MemoryRetrieverMixin):
    """What an adapter's retriever provides: a router over its attributes, a mode, store delete/insert."""

    def __init__(self, service: EmbeddingService, persist_dir: Path | None = None):
        self.store = DictStore(service)
        self.service, self.memory, self.persist_dir, self.mode = service, MemoryIndex(), persist_dir, "auto"
        self.deleted: list[list[str]] = []

    def _router(self) -> MemoryRouter:
        return MemoryRouter(lambda: self.service, self.memory, self.persist_dir, self.store.save)

    def _store_delete(self, ids) -> None:
        self.deleted.append(list(ids))
        self.store.delete(ids)

    def _store_insert(self, ids, texts, metadatas) -> None:
        self.store.insert(ids, texts, metadatas)


def test_mixin_gives_the_retrievers_public_methods(service: EmbeddingService, tmp_path: Path) -> None:
    retriever = DictRetriever(service, tmp_path)
    assert retriever.add_texts(list(MEMORIES.values()), ids=list(MEMORIES)) == list(MEMORIES)
    assert retriever.deleted == [[]] and set(retriever.store.rows) == set(MEMORIES)
    retriever.add_texts(["The car is on level 4 now."], ids=["car"])
    assert retriever.deleted[-1] == ["car"] and len(retriever.store.rows) == len(MEMORIES)
    assert retriever.store.rows["car"][1] == "The car is on level 4 now."
    retriever.delete(["tea"])
    assert "tea" not in retriever.memory and "tea" not in retriever.store.rows
    status = retriever.status()
    assert status["memories"] == len(MEMORIES) - 1 and status["query_mode"] == "bm25"
    retriever.memory.update_metadata(["keys"], {FINGERPRINT_KEY: "old-space"})
    assert retriever.reindex(progress=False).reembedded == 1
    assert retriever.deleted[-1] == ["keys"]  # replaced in the store: deleted first, then inserted
    assert retriever.store.rows["keys"][2][FINGERPRINT_KEY] == service.fingerprint
    assert MemoryIndex.load(tmp_path).fingerprints() == {service.fingerprint: len(MEMORIES) - 1}


# -- ServiceHandle ------------------------------------------------------------------------------


class Handle(ServiceHandle):
    """An adapter's embeddings class, without the framework: the shared options and a model name."""

    model_name: str = "all-MiniLM-L6-v2"


def test_service_handle_is_lazy_and_reports_the_chain() -> None:
    handle = Handle(offline=True, fallback_strategy="manual", fallback_models=["keyword"])
    assert handle._service is None
    assert (handle.active_tier, handle.active_model, handle.fingerprint, handle.degraded) == (None, None, None, False)
    service = handle.service
    assert handle.service is service and handle._service is service  # created once
    assert service.model == "all-MiniLM-L6-v2" and service.strategy == "manual"
    service.embed(["hello"])
    assert (handle.active_tier, handle.active_model) == ("keyword", "keyword")
    assert handle.fingerprint == f"{KEYWORD_PREFIX}384" and handle.degraded
    assert handle.status()["active_tier"] == "keyword"
