"""The memory retrievers on real stores with the real (bundled) model, no network.

LangChain: ``InMemoryVectorStore`` (dump/load) and FAISS (save_local/load_local, when
``faiss-cpu`` + ``langchain-community`` are installed). LlamaIndex: ``VectorStoreIndex`` with
its default store, persisted and reloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import VectorStoreIndex

from langchain_modelcache import FallbackRetriever as LCRetriever
from langchain_modelcache import ManagedEmbeddings
from llamaindex_modelcache import FallbackRetriever as LIRetriever
from llamaindex_modelcache import ManagedEmbedding
from modelcache.memory.index import FINGERPRINT_KEY
from modelcache.memory.sync import ID_KEY

MEMORIES = {
    "car": "I left the car on level 3 of the airport parking garage.",
    "tea": "Alice prefers green tea without sugar.",
    "meeting": "The quarterly budget review was moved to Thursday morning.",
    "wifi": "The guest wifi password is sunflower42.",
    "dentist": "Bob has a dentist appointment next Tuesday.",
    "keys": "The spare house keys are in the blue kitchen drawer.",
    "flight": "My flight to Lisbon departs at 7:40 from gate B12.",
    "plant": "Water the fern on the balcony every three days.",
    "birthday": "Mum's birthday is on the 14th of June; she likes orchids.",
    "server": "The staging server runs Ubuntu 24.04 with 64 GB of RAM.",
}
# paraphrases with little word overlap: vector search must carry them
SEMANTIC = {
    "where did I park the vehicle?": "car",
    "what drink does Alice like?": "tea",
    "when is the finance meeting?": "meeting",
    "which gift flowers for my mother?": "birthday",
}
# exact terms: BM25 must carry them
LEXICAL = {"sunflower42": "wifi", "gate B12 Lisbon": "flight", "Ubuntu RAM": "server"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("retriever-cache"))


@pytest.fixture(scope="module")
def lc_embeddings(cache_dir: str) -> ManagedEmbeddings:
    return ManagedEmbeddings(offline=True, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def li_embedding(cache_dir: str) -> ManagedEmbedding:
    return ManagedEmbedding(offline=True, cache_dir=cache_dir)


def _check_answers(search) -> None:
    """auto (vector) finds paraphrases first, bm25 exact terms first; hybrid has both in its top k."""
    for query, want in SEMANTIC.items():
        assert search(query, "auto")[0] == want, query
        assert want in search(query, "hybrid"), query
    for query, want in LEXICAL.items():
        assert search(query, "bm25")[0] == want, query
        assert want in search(query, "hybrid"), query


# -- LangChain --------------------------------------------------------------------------------


def test_langchain_in_memory_store(lc_embeddings: ManagedEmbeddings, tmp_path: Path) -> None:
    store = InMemoryVectorStore(lc_embeddings)
    memory = LCRetriever(vectorstore=store, k=3, persist_dir=tmp_path / "mem",
                         persist_store=lambda: store.dump(str(tmp_path / "store.json")))
    assert memory.add_texts(list(MEMORIES.values()), [{"topic": k} for k in MEMORIES], list(MEMORIES)) == list(MEMORIES)
    fp = lc_embeddings.fingerprint
    assert not lc_embeddings.degraded and memory.status()["query_mode"] == "vector"
    doc = store.get_by_ids(["car"])[0]
    assert doc.metadata == {"topic": "car", FINGERPRINT_KEY: fp, ID_KEY: "car"}

    def search(query: str, mode: str) -> list[str]:
        docs = memory.invoke(query, mode=mode)
        assert {d.metadata["retrieved_by"] for d in docs} == {"vector" if mode == "auto" else mode}
        return [d.id for d in docs]

    _check_answers(search)

    memory.add_texts(["I moved the car to level 5."], ids=["car"])  # upsert, not a second copy
    assert len(store.store) == len(MEMORIES) and len(memory.memory) == len(MEMORIES)
    assert "level 5" in memory.invoke("where did I park the vehicle?")[0].page_content
    memory.delete(["tea"])
    assert "tea" not in store.store and "tea" not in memory.memory
    assert "tea" not in [d.id for d in memory.invoke("what drink does Alice like?", k=10)]

    reopened_store = InMemoryVectorStore.load(str(tmp_path / "store.json"), lc_embeddings)
    reopened = LCRetriever(vectorstore=reopened_store, k=3, persist_dir=tmp_path / "mem")
    assert len(reopened.memory) == len(MEMORIES) - 1
    assert reopened.invoke("which gift flowers for my mother?")[0].id == "birthday"
    assert reopened.invoke("sunflower42", mode="bm25")[0].id == "wifi"


async def test_langchain_async(lc_embeddings: ManagedEmbeddings) -> None:
    memory = LCRetriever(vectorstore=InMemoryVectorStore(lc_embeddings), k=2)
    memory.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    docs = await memory.ainvoke("where did I park the vehicle?")
    assert docs[0].id == "car"


def test_langchain_faiss_store(lc_embeddings: ManagedEmbeddings, tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    community = pytest.importorskip("langchain_community.vectorstores")
    store = community.FAISS.from_texts(list(MEMORIES.values()), lc_embeddings, ids=list(MEMORIES),
                                       metadatas=[{ID_KEY: k} for k in MEMORIES])
    store.delete(list(MEMORIES))  # an empty FAISS store of the right dimension
    saved = tmp_path / "faiss"
    memory = LCRetriever(vectorstore=store, k=3, persist_dir=tmp_path / "mem",
                         persist_store=lambda: store.save_local(str(saved)))
    memory.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))

    def search(query: str, mode: str) -> list[str]:
        return [d.id for d in memory.invoke(query, mode=mode)]

    _check_answers(search)
    memory.add_texts(["I moved the car to level 5."], ids=["car"])
    assert store.index.ntotal == len(MEMORIES)  # replaced, not duplicated (FAISS refuses duplicate ids)

    reopened_store = community.FAISS.load_local(str(saved), lc_embeddings, allow_dangerous_deserialization=True)
    reopened = LCRetriever(vectorstore=reopened_store, k=3, persist_dir=tmp_path / "mem")
    assert reopened_store.index.ntotal == len(MEMORIES)
    assert reopened.invoke("where did I park the vehicle?")[0].id == "car"


def test_langchain_requires_managed_embeddings() -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    with pytest.raises(TypeError, match="ManagedEmbeddings"):
        LCRetriever(vectorstore=InMemoryVectorStore(DeterministicFakeEmbedding(size=8)))


# -- LlamaIndex -------------------------------------------------------------------------------


def test_llamaindex_vector_store_index(li_embedding: ManagedEmbedding, tmp_path: Path) -> None:
    index = VectorStoreIndex([], embed_model=li_embedding)
    memory = LIRetriever(index, similarity_top_k=3, persist_dir=tmp_path / "li")
    memory.add_texts(list(MEMORIES.values()), [{"topic": k} for k in MEMORIES], list(MEMORIES))
    node = index.docstore.get_node("car")
    assert node.metadata[FINGERPRINT_KEY] == li_embedding.fingerprint
    assert FINGERPRINT_KEY not in node.get_content(metadata_mode="embed")  # only the text is embedded

    def search(query: str, mode: str) -> list[str]:
        hits = memory.search(query, mode=mode)
        assert {h.node.metadata["retrieved_by"] for h in hits} == {"vector" if mode == "auto" else mode}
        return [h.node.node_id for h in hits]

    _check_answers(search)
    memory.add_texts(["I moved the car to level 5."], ids=["car"])
    assert len(index.index_struct.nodes_dict) == len(MEMORIES)
    memory.delete(["tea"])
    assert "tea" not in index.index_struct.nodes_dict and "tea" not in memory.memory

    reopened = LIRetriever.load(tmp_path / "li", li_embedding, similarity_top_k=3)
    assert len(reopened.index.index_struct.nodes_dict) == len(MEMORIES) - 1
    top = reopened.retrieve("where did I park the vehicle?")[0]
    assert top.node.node_id == "car" and "level 5" in top.node.get_content()
    assert reopened.retrieve("which gift flowers for my mother?")[0].node.node_id == "birthday"


async def test_llamaindex_async(li_embedding: ManagedEmbedding) -> None:
    memory = LIRetriever(VectorStoreIndex([], embed_model=li_embedding), similarity_top_k=2)
    memory.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    hits = await memory.aretrieve("where did I park the vehicle?")
    assert hits[0].node.node_id == "car"


def test_same_memory_answers_through_both_frameworks(lc_embeddings: ManagedEmbeddings,
                                                     li_embedding: ManagedEmbedding) -> None:
    lc = LCRetriever(vectorstore=InMemoryVectorStore(lc_embeddings), k=3)
    li = LIRetriever(VectorStoreIndex([], embed_model=li_embedding), similarity_top_k=3)
    lc.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    li.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    assert lc_embeddings.fingerprint == li_embedding.fingerprint
    for query in SEMANTIC:
        assert [d.id for d in lc.invoke(query)] == [h.node.node_id for h in li.retrieve(query)]
