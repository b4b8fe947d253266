"""LangChain ``FallbackRetriever`` (a thin convenience over ``ManagedVectorStore``) on real stores with
the real (bundled) model, no network: InMemoryVectorStore and FAISS saved under a store key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_modelcache import FallbackRetriever, ManagedEmbeddings, ManagedVectorStore
from modelcache.memory.records import ID_KEY
from tests.support.memories import MEMORIES, SEMANTIC  # noqa: E402

LEXICAL = {"sunflower42": "wifi", "gate B12 Lisbon": "flight", "Ubuntu RAM": "server"}


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory: pytest.TempPathFactory) -> ManagedEmbeddings:
    return ManagedEmbeddings(offline=True, cache_dir=str(tmp_path_factory.mktemp("lc-retriever-cache")))


@pytest.fixture
def opened() -> list[FallbackRetriever]:
    made: list[FallbackRetriever] = []
    yield made
    for retriever in made:
        retriever.close()


def check_answers(search) -> None:
    """auto (vector) finds paraphrases first, keyword exact terms first; hybrid has both in its top k."""
    for query, want in SEMANTIC.items():
        assert search(query, "auto")[0] == want, query
        assert want in search(query, "hybrid"), query
    for query, want in LEXICAL.items():
        assert search(query, "keyword")[0] == want, query
        assert search(query, "bm25")[0] == want, query  # the old name of keyword mode
        assert want in search(query, "hybrid"), query


def test_in_memory_store(embeddings: ManagedEmbeddings, tmp_path: Path, opened: list) -> None:
    store = InMemoryVectorStore(embeddings)
    memory = FallbackRetriever(vectorstore=store, k=3, memory_dir=tmp_path / "mem")
    opened.append(memory)
    assert isinstance(memory, BaseRetriever) and isinstance(memory.store, ManagedVectorStore)
    assert memory.add_texts(list(MEMORIES.values()), [{"topic": k} for k in MEMORIES], list(MEMORIES)) == list(MEMORIES)
    assert not embeddings.degraded and memory.status()["query_mode"] == "vector"
    assert store.get_by_ids(["car"])[0].metadata == {"topic": "car", ID_KEY: "car"}  # the inner store's copy

    def search(query: str, mode: str) -> list[str]:
        docs = memory.invoke(query, mode=mode)
        want = {"auto": "vector", "bm25": "keyword"}.get(mode, mode)
        assert {d.metadata["memory_search"] for d in docs} == {want}
        assert all(0 <= d.metadata["memory_score"] <= 1 for d in docs)
        return [d.id for d in docs]

    check_answers(search)

    memory.add_texts(["I moved the car to level 5."], ids=["car"])  # upsert, not a second copy
    assert len(store.store) == len(MEMORIES) and memory.count() == len(MEMORIES)
    assert "level 5" in memory.invoke("where did I park the vehicle?")[0].page_content
    memory.delete(["tea"])
    assert "tea" not in store.store and memory.get_by_ids(["tea"]) == []
    assert "tea" not in [d.id for d in memory.invoke("what drink does Alice like?", k=10)]

    # a new process-local store over the same memory_dir is filled from the database by itself
    reopened = FallbackRetriever(vectorstore=InMemoryVectorStore(embeddings), k=3, persist_dir=tmp_path / "mem",
                                 sync_interval_s=0.1)
    opened.append(reopened)
    assert reopened.count() == len(MEMORIES) - 1
    assert reopened.invoke("sunflower42", mode="keyword")[0].id == "wifi"  # answers at once, by keyword
    assert reopened.wait_synced(timeout=60)
    top = reopened.invoke("which gift flowers for my mother?")[0]
    assert top.id == "birthday" and top.metadata["memory_search"] == "vector"


def test_search_kwargs_search_types_and_scores(embeddings: ManagedEmbeddings, tmp_path: Path, opened: list) -> None:
    memory = FallbackRetriever(vectorstore=InMemoryVectorStore(embeddings), memory_dir=tmp_path / "mem",
                               search_kwargs={"k": 2})
    opened.append(memory)
    memory.add_documents([Document(id=k, page_content=v, metadata={"topic": k}) for k, v in MEMORIES.items()])
    query = "where did I park the vehicle?"
    docs = memory.invoke(query)
    assert len(docs) == 2 and docs[0].id == "car"
    assert len(memory.invoke(query, k=5)) == 5
    assert [d.id for d in memory.invoke(query, filter={"topic": "keys"})] == ["keys"]
    scored = memory.similarity_search_with_score(query)
    assert scored[0][0].id == "car" and scored[0][1] == scored[0][0].metadata["memory_score"] > scored[1][1]

    mmr = FallbackRetriever(vectorstore=InMemoryVectorStore(embeddings), memory_dir=tmp_path / "mem",
                            search_type="mmr", search_kwargs={"k": 3, "fetch_k": 10, "lambda_mult": 0.5})
    opened.append(mmr)
    assert mmr.wait_synced(timeout=60)
    picked = mmr.invoke(query)
    assert len(picked) == 3 and picked[0].id == "car" and len({d.id for d in picked}) == 3

    threshold = FallbackRetriever(vectorstore=InMemoryVectorStore(embeddings), memory_dir=tmp_path / "mem",
                                  search_type="similarity_score_threshold",
                                  search_kwargs={"score_threshold": float(scored[0][1]) - 1e-6, "k": 10})
    opened.append(threshold)
    assert threshold.wait_synced(timeout=60)
    assert [d.id for d in threshold.invoke(query)] == ["car"]
    with pytest.raises(ValueError, match="score_threshold"):
        FallbackRetriever(vectorstore=InMemoryVectorStore(embeddings), search_type="similarity_score_threshold")


async def test_async(embeddings: ManagedEmbeddings, tmp_path: Path, opened: list) -> None:
    memory = FallbackRetriever(vectorstore=InMemoryVectorStore(embeddings), k=2, memory_dir=tmp_path / "mem")
    opened.append(memory)
    memory.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    docs = await memory.ainvoke("where did I park the vehicle?")
    assert docs[0].id == "car" and len(docs) == 2
    assert (await memory.ainvoke("sunflower42", mode="keyword"))[0].id == "wifi"


def test_faiss_store_saved_under_a_store_key(embeddings: ManagedEmbeddings, tmp_path: Path, opened: list) -> None:
    pytest.importorskip("faiss")
    community = pytest.importorskip("langchain_community.vectorstores")
    import faiss
    from langchain_community.docstore.in_memory import InMemoryDocstore

    store = community.FAISS(embeddings, faiss.IndexFlatL2(384), InMemoryDocstore(), {})
    saved = tmp_path / "faiss"
    memory = FallbackRetriever(vectorstore=store, k=3, memory_dir=tmp_path / "mem", store_key="faiss:notes",
                               persist_store=lambda: store.save_local(str(saved)))
    opened.append(memory)
    memory.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    check_answers(lambda query, mode: [d.id for d in memory.invoke(query, mode=mode)])
    memory.add_texts(["I moved the car to level 5."], ids=["car"])
    assert store.index.ntotal == len(MEMORIES)  # replaced, not duplicated (FAISS refuses duplicate ids)

    reopened_store = community.FAISS.load_local(str(saved), embeddings, allow_dangerous_deserialization=True)
    reopened = FallbackRetriever(vectorstore=reopened_store, k=3, memory_dir=tmp_path / "mem", store_key="faiss:notes")
    opened.append(reopened)
    assert reopened_store.index.ntotal == len(MEMORIES) and reopened.status()["pending"] == 0
    top = reopened.invoke("where did I park the vehicle?")[0]
    assert top.id == "car" and "level 5" in top.page_content and top.metadata["memory_search"] == "vector"


def test_no_model_answers_by_keyword_and_the_store_gets_nothing(tmp_path: Path, opened: list) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"offline": True, "fallback": {"bundled": False}}))
    emb = ManagedEmbeddings(cache_dir=str(tmp_path / "empty"), config=str(config))
    store = InMemoryVectorStore(emb)
    memory = FallbackRetriever(vectorstore=store, k=2, memory_dir=tmp_path / "mem")
    opened.append(memory)
    memory.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    docs = memory.invoke("Where are the spare keys?")
    assert docs[0].id == "keys" and docs[0].metadata["memory_search"] == "keyword"
    assert len(store.store) == 0 and memory.count() == len(MEMORIES)
    assert memory.reindex().skipped and memory.status()["pending"] == len(MEMORIES)


def test_requires_managed_embeddings() -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    with pytest.raises(TypeError, match="FallbackRetriever needs .*ManagedEmbeddings"):
        FallbackRetriever(vectorstore=InMemoryVectorStore(DeterministicFakeEmbedding(size=8)))
    with pytest.raises(ValueError, match="differ"):
        FallbackRetriever(vectorstore=InMemoryVectorStore(ManagedEmbeddings()), memory_dir="a", persist_dir="b")
