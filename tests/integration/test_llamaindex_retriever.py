"""LlamaIndex ``FallbackRetriever`` (a convenience over ``ManagedVectorStore``) with the real
(bundled) model and real tiny models, no network; moved here from test_retrievers.py and
test_fallback_chain.py, which keep the LangChain and cross-framework checks.
"""

from __future__ import annotations

import time
from pathlib import Path
from unittest import mock

import pytest
import yaml
from llama_index.core import VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.vector_stores import SimpleVectorStore

from llamaindex_modelcache import FallbackRetriever, ManagedEmbedding, ManagedVectorStore
from modelcache.errors import ModelUnavailableError
from tests.support.fault_proxy import FaultProxy
from tests.support.hub import TINY_REPO
from tests.support.memories import MEMORIES, SEMANTIC  # noqa: E402

# exact terms: keyword search must carry them
LEXICAL = {"sunflower42": "wifi", "gate B12 Lisbon": "flight", "Ubuntu RAM": "server"}
COOL_DOWN = 0.2


@pytest.fixture(scope="module")
def li_embedding(tmp_path_factory: pytest.TempPathFactory) -> ManagedEmbedding:
    return ManagedEmbedding(offline=True, cache_dir=str(tmp_path_factory.mktemp("li-retriever-cache")))


def config_file(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "modelcache.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_fallback_retriever_over_a_vector_store_index(li_embedding: ManagedEmbedding, tmp_path: Path) -> None:
    index = VectorStoreIndex([], embed_model=li_embedding)  # its SimpleVectorStore gets managed
    memory = FallbackRetriever(index, similarity_top_k=3, persist_dir=tmp_path / "li")
    assert isinstance(memory.store, ManagedVectorStore) and memory.store.client is index.vector_store
    assert memory.add_texts(list(MEMORIES.values()), [{"topic": k} for k in MEMORIES], list(MEMORIES)) == list(MEMORIES)
    assert memory.status()["query_mode"] == "vector" and memory.status()["pending"] == 0
    node = memory.store.get_nodes(["car"])[0]
    assert node.metadata == {"topic": "car"} and "topic" not in node.get_content(metadata_mode="embed")

    def search(query: str, mode: str) -> list[str]:
        hits = memory.search(query, mode=mode)
        expected = {"auto": "vector", "bm25": "keyword"}.get(mode, mode)
        assert {h.node.metadata["retrieved_by"] for h in hits} == {expected}
        return [h.node.node_id for h in hits]

    for query, want in SEMANTIC.items():
        assert search(query, "auto")[0] == want, query
        assert want in search(query, "hybrid"), query
    for query, want in LEXICAL.items():
        assert search(query, "keyword")[0] == want, query
        assert search(query, "bm25")[0] == want, query  # the old name
        assert want in search(query, "hybrid"), query

    memory.add_texts(["I moved the car to level 5."], ids=["car"])  # replaced, not a second copy
    assert memory.store.count() == len(MEMORIES) and len(index.vector_store.data.embedding_dict) == len(MEMORIES)
    memory.delete(["tea"])
    assert memory.store.count() == len(MEMORIES) - 1 and "tea" not in index.vector_store.data.embedding_dict
    assert "tea" not in [h.node.node_id for h in memory.search("what drink does Alice like?", k=10)]

    reopened = FallbackRetriever.load(tmp_path / "li", li_embedding, similarity_top_k=3)
    assert reopened.store.count() == len(MEMORIES) - 1
    assert reopened.store.wait_synced(timeout=60)  # its fresh in-memory store is filled from the database
    top = reopened.retrieve("where did I park the vehicle?")[0]
    assert top.node.node_id == "car" and "level 5" in top.node.get_content()
    assert top.node.metadata["retrieved_by"] == "vector"
    assert reopened.retrieve("which gift flowers for my mother?")[0].node.node_id == "birthday"
    answer = reopened.index.as_query_engine(llm=MockLLM(), similarity_top_k=1).query("where is the car?")
    assert answer.source_nodes[0].node.node_id == "car"
    memory.close()
    reopened.close()


async def test_fallback_retriever_async(li_embedding: ManagedEmbedding) -> None:
    memory = FallbackRetriever(VectorStoreIndex([], embed_model=li_embedding), similarity_top_k=2)
    memory.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    hits = await memory.aretrieve("where did I park the vehicle?")
    assert hits[0].node.node_id == "car"
    memory.close()


def test_no_model_keyword_mode_and_the_bare_embedding_raises(tmp_path: Path) -> None:
    config = config_file(tmp_path, {"offline": True, "fallback": {"bundled": False}})
    li = ManagedEmbedding(config=config)
    memory = FallbackRetriever(VectorStoreIndex([], embed_model=li), similarity_top_k=2)
    memory.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))  # accepted in every state
    assert li.active_tier == "keyword" and li.degraded and li.fingerprint == "keyword-hash-384"
    tiers = {t["name"]: t for t in li.status()["tiers"]}
    assert tiers["bundled"]["enabled"] is False and "fallback.bundled" in tiers["bundled"]["reason"]
    assert tiers["preferred"]["ok"] is False
    assert memory.status()["pending"] == len(MEMORIES) and memory.status()["query_mode"] == "keyword"
    assert len(memory.store.client.data.embedding_dict) == 0

    nodes = memory.retrieve("where is the car parked?")
    assert nodes[0].node.node_id == "car" and nodes[0].node.metadata["retrieved_by"] == "keyword"
    assert memory.retrieve("green tea for Alice")[0].node.node_id == "tea"
    # a bare embedding never changes space silently
    with pytest.raises(ModelUnavailableError, match="allow_degraded=True"):
        li.get_query_embedding("where is the car parked?")
    memory.close()


class Interrupt(Exception):
    pass


def test_interrupted_reindex_resumes(proxy: FaultProxy, tiny_model_dir_v2: Path, tmp_path: Path) -> None:
    texts = {f"n{i:02d}": f"note {i} on subject {i % 5}" for i in range(25)}
    config = config_file(tmp_path, {"download": {"endpoints": [proxy.endpoint], "retries": 0, "connect_timeout": 5},
                                    "fallback": {"retry_preferred_after_s": COOL_DOWN}})
    emb = ManagedEmbedding(model=TINY_REPO, revision="v1.0", fallback_models=[str(tiny_model_dir_v2)],
                           fallback_strategy="manual", config=config)
    proxy.down()
    memory = FallbackRetriever(persist_dir=tmp_path / "li", embed_model=emb, background=False)
    memory.add_texts(list(texts.values()), ids=list(texts))
    inner = memory.store.client
    assert emb.active_tier.startswith("fallback:") and emb.degraded  # another space: nothing written
    assert len(inner.data.embedding_dict) == 0 and memory.status()["pending"] == len(texts)
    assert memory.retrieve("note 7")[0].node.metadata["retrieved_by"] == "keyword"

    proxy.up()
    time.sleep(COOL_DOWN + 0.05)
    real_add, calls = SimpleVectorStore.add, {"n": 0}

    def flaky_add(self, nodes, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupt("killed")
        return real_add(self, nodes, **kwargs)

    with mock.patch.object(SimpleVectorStore, "add", flaky_add), pytest.raises(Interrupt):
        memory.reindex(batch_size=10, progress=False)
    assert emb.active_tier == "preferred" and not emb.degraded
    assert len(inner.data.embedding_dict) == 10 and memory.status()["pending"] == 15
    report = memory.reindex(batch_size=10, progress=False)
    assert report.written == 15 and report.pending == 0
    assert sorted(inner.data.embedding_dict) == sorted(texts)  # each memory exactly once
    assert memory.store.engine.db.embedded_fingerprints(memory.store.engine.store_key) == {emb.fingerprint: 25}
    assert memory.retrieve("note 7")[0].node.metadata["retrieved_by"] == "vector"
    memory.close()
