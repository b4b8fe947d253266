"""The same memories through both frameworks' retrievers, with the real (bundled) model, no network.

Each retriever's own checks: test_langchain_retriever.py and test_llamaindex_retriever.py.
"""

from __future__ import annotations

import pytest
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import VectorStoreIndex

from langchain_modelcache import FallbackRetriever as LCRetriever
from langchain_modelcache import ManagedEmbeddings
from llamaindex_modelcache import FallbackRetriever as LIRetriever
from llamaindex_modelcache import ManagedEmbedding
from tests.support.memories import MEMORIES, SEMANTIC  # noqa: E402


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("retriever-cache"))


@pytest.fixture(scope="module")
def lc_embeddings(cache_dir: str) -> ManagedEmbeddings:
    return ManagedEmbeddings(offline=True, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def li_embedding(cache_dir: str) -> ManagedEmbedding:
    return ManagedEmbedding(offline=True, cache_dir=cache_dir)


# -- both frameworks --------------------------------------------------------------------------


def test_same_memory_answers_through_both_frameworks(lc_embeddings: ManagedEmbeddings,
                                                     li_embedding: ManagedEmbedding) -> None:
    lc = LCRetriever(vectorstore=InMemoryVectorStore(lc_embeddings), k=3)
    li = LIRetriever(VectorStoreIndex([], embed_model=li_embedding), similarity_top_k=3)
    lc.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    li.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    assert lc_embeddings.fingerprint == li_embedding.fingerprint
    for query in SEMANTIC:
        assert [d.id for d in lc.invoke(query)] == [h.node.node_id for h in li.retrieve(query)]
