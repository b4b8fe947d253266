"""Memory on servers: the memory database on a real PostgreSQL, the vectors in Chroma in client/server
mode (``chroma run`` on 127.0.0.1), through ``langchain_modelcache.ManagedVectorStore(memory_url=...)``.

The model is the bundled copy of all-MiniLM-L6-v2 (offline, no network). Checked: every answer by
vector and by keyword (PostgreSQL full-text search), a Chroma restart (answers unchanged, nothing
re-embedded), Chroma down (adds acknowledged in PostgreSQL, queries answered by keyword, the pending
memories written exactly once when it is back), a second service opening the same two servers, the
SQLite suite's every-method and no-model (keyword only) checks over both servers, and the LlamaIndex
store over the same database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from langchain_modelcache import ManagedEmbeddings, ManagedVectorStore
from modelcache.memory.postgres import PostgresMemoryDB
from tests.support.memories import MEMORIES, SEMANTIC

chromadb = pytest.importorskip("chromadb")
from chromadb.config import Settings  # noqa: E402
from langchain_chroma import Chroma  # noqa: E402

from tests.support.chroma_server import ChromaServer  # noqa: E402
from tests.support.postgres import PASSWORD, PostgresServer  # noqa: E402

LEXICAL = {"sunflower42": "wifi", "gate B12 Lisbon": "flight", "Ubuntu RAM": "server",
           "spare keys kitchen drawer": "keys", "green tea Alice": "tea"}


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("pg-chroma-cache"))


@pytest.fixture(scope="module")
def emb(model_cache: str) -> ManagedEmbeddings:
    found = ManagedEmbeddings(offline=True, cache_dir=model_cache)
    found.embed_query("warm up")
    assert not found.degraded
    return found


@pytest.fixture
def chroma(tmp_path: Path) -> Iterator[ChromaServer]:
    with ChromaServer(tmp_path / "chroma-data") as server:
        yield server


def client(server: ChromaServer):
    return chromadb.HttpClient(host=server.host, port=server.port, settings=Settings(anonymized_telemetry=False))


def store_over(server: ChromaServer, emb: ManagedEmbeddings, url: str, **kwargs) -> ManagedVectorStore:
    inner = Chroma(collection_name="memories", embedding_function=emb, client=client(server))
    return ManagedVectorStore(inner, memory_url=url, **kwargs)


def check_answers(store: ManagedVectorStore, how: str = "vector") -> None:
    for query, want in SEMANTIC.items():
        docs = store.similarity_search(query, k=3)
        assert docs[0].id == want and docs[0].metadata["memory_search"] == how, query
    for query, want in LEXICAL.items():
        docs = store.similarity_search(query, k=3, mode="keyword")
        assert docs[0].id == want and docs[0].metadata["memory_search"] == "keyword", query
        assert want in [d.id for d in store.similarity_search(query, k=3, mode="hybrid")], query


def test_chroma_server_and_postgres_memory_through_restarts_and_an_outage(
        postgres: PostgresServer, chroma: ChromaServer, emb: ManagedEmbeddings) -> None:
    url = postgres.url()
    store = store_over(chroma, emb, url, sync_interval_s=0.2)
    try:
        assert PASSWORD not in repr(store) and "postgresql://***@" in repr(store)
        assert store.memory_dir is None and store.store_key.startswith("chroma:")
        assert store.add_texts(list(MEMORIES.values()), [{"topic": k} for k in MEMORIES],
                               ids=list(MEMORIES)) == list(MEMORIES)
        n = len(MEMORIES)
        status = store.status()
        assert status["query_mode"] == "vector" and status["pending"] == 0
        assert status["store_fingerprints"] == {emb.fingerprint: n} and store.inner_count() == n
        check_answers(store)

        # 1. Chroma restarts: what it persisted is there, the same client reconnects, nothing re-embedded
        chroma.stop()
        chroma.start()
        check_answers(store)
        assert store.inner_count() == n and store.status()["pending"] == 0

        # 2. Chroma down: adds are acknowledged by PostgreSQL, queries answered by keyword
        chroma.stop()
        assert store.add_texts(["Bob's bike is locked at the train station."], [{"topic": "bike"}],
                               ids=["bike"]) == ["bike"]
        assert store.count() == n + 1
        docs = store.similarity_search("bike train station", k=2)
        assert docs[0].id == "bike" and docs[0].metadata["memory_search"] == "keyword"
        docs = store.similarity_search("where did I park the vehicle?", k=3, mode="vector")  # asked for vectors
        assert {d.metadata["memory_search"] for d in docs} == {"keyword"}
        assert store.get_by_ids(["bike"])[0].page_content.startswith("Bob's bike")

        # 3. Chroma back: the pending memory goes in by itself, once
        chroma.start()
        assert store.wait_synced(timeout=60)
        assert store.inner_count() == n + 1
        check_answers(store)
        assert store.similarity_search("where is the bicycle?", k=1)[0].id == "bike"
    finally:
        store.close()

    # 4. another service: the same PostgreSQL and Chroma server, a new client; everything is there once
    other = store_over(chroma, emb, url, background=False)
    try:
        assert other.count() == len(MEMORIES) + 1 and other.status()["pending"] == 0
        stored = other.inner_store._collection.get(include=["metadatas"])["metadatas"]
        assert sorted(m["memory_id"] for m in stored) == sorted([*MEMORIES, "bike"])
        check_answers(other)
        # 5. one sync per store across processes and hosts: the store's advisory lock, held by another session
        holder = PostgresMemoryDB(url).sync_lock(other.store_key)
        holder.acquire(timeout=0)
        try:
            assert other.engine.sync(wait=False).skipped == "another process is syncing"
        finally:
            holder.release()
        assert other.engine.sync(wait=False).skipped is None
    finally:
        other.close()


@pytest.mark.parametrize("state", ["model", "no_model"])
def test_every_method_over_chroma_server_and_postgres(state: str, postgres: PostgresServer, chroma: ChromaServer,
                                                      emb: ManagedEmbeddings, tmp_path: Path) -> None:
    """The managed-store checks of the SQLite suite (every method; no model at all: keyword only), reused."""
    from tests.integration.test_langchain_managed_store import check_keyword_only, check_with_model, write_config

    if state == "model":
        store = store_over(chroma, emb, postgres.url())
        try:
            check_with_model(store, emb)
        finally:
            store.close()
        return
    no_model = ManagedEmbeddings(cache_dir=str(tmp_path / "empty-cache"),
                                 config=write_config(tmp_path / "no-model.yaml", bundled=False))
    store = store_over(chroma, no_model, postgres.url())
    try:
        check_keyword_only(store, no_model)
    finally:
        store.close()


def test_llamaindex_store_over_postgres_memory(postgres: PostgresServer, emb: ManagedEmbeddings,
                                               model_cache: str) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores import SimpleVectorStore
    from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

    from llamaindex_modelcache import ManagedEmbedding
    from llamaindex_modelcache import ManagedVectorStore as LlamaStore

    url = postgres.url()
    embed = ManagedEmbedding(offline=True, cache_dir=model_cache)  # the bundled copy went into it (emb)
    store = LlamaStore(SimpleVectorStore(), memory_url=url, embed_model=embed, background=False)
    try:
        store.add([TextNode(id_=k, text=v) for k, v in MEMORIES.items()])
        assert store.engine.count() == len(MEMORIES) and PASSWORD not in repr(store.engine.db)
        assert store.engine.status()["pending"] == 0 and store.engine.status()["query_mode"] == "vector"
        found = store.query(VectorStoreQuery(query_str="sunflower42", similarity_top_k=1,
                                             mode=VectorStoreQueryMode.TEXT_SEARCH))
        assert found.ids == ["wifi"]
        query = "where did I park the vehicle?"
        found = store.query(VectorStoreQuery(query_embedding=embed.get_query_embedding(query), query_str=query,
                                             similarity_top_k=1))
        assert found.ids == ["car"]
    finally:
        store.close()
    with pytest.raises(ValueError, match="not both"):
        LlamaStore(SimpleVectorStore(), "some/dir", memory_url=url)
