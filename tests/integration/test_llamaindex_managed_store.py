"""``llamaindex_modelcache.ManagedVectorStore`` on real stores with the real model, no network.

The usual LlamaIndex idiom — ``VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)``
with ``index.insert``, ``index.delete_ref_doc``, ``index.as_retriever().retrieve`` and
``index.as_query_engine()`` — over SimpleVectorStore, Chroma (persisted) and Qdrant (local path),
in each state of the embeddings' chain:

- ``model``: all-MiniLM-L6-v2 in the cache (the preferred tier);
- ``bundled``: offline on an empty cache, the bundled copy (same weights, same space);
- ``keyword``: no model at all (not cached, offline, bundled tier disabled): only keyword vectors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import yaml
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    ExactMatchFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from llamaindex_modelcache import ManagedEmbedding, ManagedVectorStore
from modelcache.errors import ModelUnavailableError

chromadb = pytest.importorskip("chromadb")
qdrant_client = pytest.importorskip("qdrant_client")
ChromaVectorStore = pytest.importorskip("llama_index.vector_stores.chroma").ChromaVectorStore
QdrantVectorStore = pytest.importorskip("llama_index.vector_stores.qdrant").QdrantVectorStore

ROOT = Path(__file__).resolve().parents[2]
MEMORIES = {
    "car": "I left the car on level 3 of the airport parking garage.",
    "tea": "Alice prefers green tea without sugar.",
    "meeting": "The quarterly budget review was moved to Thursday morning.",
    "wifi": "The guest wifi password is sunflower42.",
    "keys": "The spare house keys are in the blue kitchen drawer.",
    "flight": "My flight to Lisbon departs at 7:40 from gate B12.",
    "birthday": "Mum's birthday is on the 14th of June; she likes orchids.",
    "server": "The staging server runs Ubuntu 24.04 with 64 GB of RAM.",
}
# paraphrases with little word overlap: only vectors find them
SEMANTIC = {"where did I park the vehicle?": "car", "which gift flowers for my mother?": "birthday"}
# shared words: keyword search finds them
LEXICAL = {"where is the car parked": "car", "green tea for Alice": "tea", "sunflower42": "wifi"}
STORES = ("simple", "chroma", "qdrant")
STATES = ("model", "bundled", "keyword")


# -- the three states of the chain ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A cache holding all-MiniLM-L6-v2 (installed from the bundled package, offline)."""
    cache = str(tmp_path_factory.mktemp("li-store-warm-cache"))
    ManagedEmbedding(offline=True, cache_dir=cache).get_text_embedding("warm the cache")
    return cache


def no_model_config(tmp_path: Path, **fallback) -> str:
    """Offline, nothing cached, bundled tier off: keyword vectors only."""
    path = tmp_path / "no-model.yaml"
    path.write_text(yaml.safe_dump({"offline": True, "fallback": {"bundled": False, **fallback}}))
    return str(path)


def embedding_for(state: str, tmp_path: Path, warm_cache: str) -> ManagedEmbedding:
    if state == "model":
        return ManagedEmbedding(offline=True, cache_dir=warm_cache, allow_degraded=True)
    if state == "bundled":
        return ManagedEmbedding(offline=True, cache_dir=str(tmp_path / "empty-cache"), allow_degraded=True)
    return ManagedEmbedding(config=no_model_config(tmp_path), cache_dir=str(tmp_path / "kw-cache"),
                            allow_degraded=True)


# -- the three stores --------------------------------------------------------------------------------------------


class Stores:
    """Opens inner stores under ``root`` and closes them at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.qdrant_clients: list = []

    def inner(self, kind: str, name: str = "memories"):
        if kind == "simple":
            return SimpleVectorStore()
        if kind == "chroma":
            client = chromadb.PersistentClient(path=str(self.root / "chroma"),
                                               settings=chromadb.config.Settings(anonymized_telemetry=False))
            return ChromaVectorStore(chroma_collection=client.get_or_create_collection(name))
        client = qdrant_client.QdrantClient(path=str(self.root / "qdrant"))
        self.qdrant_clients.append(client)
        return QdrantVectorStore(collection_name=name, client=client)

    def close(self) -> None:
        for client in self.qdrant_clients:
            client.close()


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    opened = Stores(tmp_path)
    yield opened
    opened.close()


def inner_count(inner) -> int:
    """How many vectors the inner store holds."""
    if isinstance(inner, SimpleVectorStore):
        return len(inner.data.embedding_dict)
    if isinstance(inner, ChromaVectorStore):
        return inner.client.count()
    client = inner.client
    if not client.collection_exists(inner.collection_name):
        return 0
    return client.count(inner.collection_name).count


def insert_all(index: VectorStoreIndex) -> None:
    for key, text in MEMORIES.items():
        index.insert(Document(text=text, id_=key, metadata={"topic": key}))


def top(nodes) -> str:
    return nodes[0].node.ref_doc_id


# -- the idiom, in every state, on every store -------------------------------------------------------------------


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind", STORES)
def test_the_llamaindex_idiom_in_every_state(kind: str, state: str, stores: Stores, tmp_path: Path,
                                             warm_cache: str) -> None:
    inner = stores.inner(kind)
    emb = embedding_for(state, tmp_path, warm_cache)
    store = ManagedVectorStore(inner, memory_dir=tmp_path / "mem", embed_model=emb)
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    insert_all(index)  # never fails, whatever the state

    emb = store.embed_model
    assert emb.active_tier == {"model": "preferred", "bundled": "bundled", "keyword": "keyword"}[state]
    assert store.count() == len(MEMORIES)
    in_space = state != "keyword"
    status = store.status()
    assert status["pending"] == (0 if in_space else len(MEMORIES))
    assert status["query_mode"] == ("vector" if in_space else "keyword")
    # the inner store holds every memory in the model's space, or nothing at all
    assert inner_count(inner) == (len(MEMORIES) if in_space else 0)
    assert store.engine.db.embedded_fingerprints(store.engine.store_key) == (
        {emb.fingerprint: len(MEMORIES)} if in_space else {})

    retriever = index.as_retriever(similarity_top_k=3)
    how = "vector" if in_space else "keyword"
    queries = SEMANTIC if in_space else LEXICAL
    for query, want in queries.items():
        hits = retriever.retrieve(query)
        assert top(hits) == want, query
        assert {h.node.metadata["retrieved_by"] for h in hits} == {how}
        assert all(0.0 <= h.score <= 1.0 for h in hits) and hits[0].score >= hits[-1].score
        assert hits[0].node.metadata["topic"] == want  # the node comes back as it was inserted
        assert "retrieved_by" not in hits[0].node.get_content(metadata_mode="llm")

    answer = index.as_query_engine(llm=MockLLM(), similarity_top_k=2).query("where is the car parked?")
    assert answer.source_nodes and top(answer.source_nodes) == "car"
    assert "level 3" in str(answer)  # MockLLM echoes the prompt: the memory reached the LLM

    index.delete_ref_doc("tea")
    assert store.count() == len(MEMORIES) - 1
    assert inner_count(inner) == (len(MEMORIES) - 1 if in_space else 0)
    assert "tea" not in [h.node.ref_doc_id for h in index.as_retriever(similarity_top_k=7).retrieve("green tea")]
    store.close()


def test_hybrid_keyword_and_filters_through_the_retriever(stores: Stores, tmp_path: Path, warm_cache: str) -> None:
    store = ManagedVectorStore(stores.inner("chroma"), tmp_path / "mem", embed_model=embedding_for("model", tmp_path,
                                                                                                   warm_cache))
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    insert_all(index)

    hybrid = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=3)
    for query, want in (SEMANTIC | LEXICAL).items():
        hits = hybrid.retrieve(query)
        assert want in [h.node.ref_doc_id for h in hits], query
        assert {h.node.metadata["retrieved_by"] for h in hits} == {"hybrid"}
    text = index.as_retriever(vector_store_query_mode="text_search").retrieve("gate B12 Lisbon")
    assert top(text) == "flight" and text[0].node.metadata["retrieved_by"] == "keyword"
    forced = index.as_retriever(vector_store_kwargs={"mode": "keyword"}).retrieve("Ubuntu RAM")
    assert top(forced) == "server" and forced[0].node.metadata["retrieved_by"] == "keyword"

    only_tea = MetadataFilters(filters=[ExactMatchFilter(key="topic", value="tea")])
    hits = index.as_retriever(filters=only_tea, similarity_top_k=3).retrieve("where did I park the vehicle?")
    assert [h.node.ref_doc_id for h in hits] == ["tea"]
    hits = index.as_retriever(doc_ids=["keys", "wifi"], similarity_top_k=5).retrieve("house keys")
    assert {h.node.ref_doc_id for h in hits} <= {"keys", "wifi"} and top(hits) == "keys"

    # get_nodes / count come from the database; delete_nodes with filters; a query by vector alone
    assert {n.ref_doc_id for n in store.get_nodes()} == set(MEMORIES)
    assert store.get_nodes(filters=only_tea)[0].get_content() == MEMORIES["tea"]
    store.delete_nodes(filters=only_tea)
    assert store.count() == len(MEMORIES) - 1 and store.client.client.count() == len(MEMORIES) - 1
    vector = store.embed_model.get_query_embedding("where did I park the vehicle?")
    result = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=1))
    assert result.nodes[0].ref_doc_id == "car" and result.nodes[0].metadata["retrieved_by"] == "vector"
    store.clear()
    assert store.count() == 0 and store.client.client.count() == 0


def test_the_index_vectors_go_to_the_store_without_a_second_embedding(stores: Stores, tmp_path: Path,
                                                                      warm_cache: str) -> None:
    inner = stores.inner("chroma")
    store = ManagedVectorStore(inner, tmp_path / "mem", embed_model=embedding_for("model", tmp_path, warm_cache))
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    service = store.embed_model.service
    index.insert(Document(text=MEMORIES["car"], id_="car"))
    before = service.counters["texts"]
    index.insert(Document(text=MEMORIES["tea"], id_="tea"))
    assert service.counters["texts"] == before + 1  # the index's embedding, reused

    # a vector of unknown origin is never passed on: the store's model embeds the node again
    node = TextNode(id_="alien", text=MEMORIES["keys"], embedding=list(np.ones(384) / np.sqrt(384)))
    index.insert_nodes([node])
    assert service.counters["texts"] == before + 2
    stored = np.array(inner.client.get(ids=["alien"], include=["embeddings"])["embeddings"][0])
    np.testing.assert_allclose(stored, store.embed_model.get_text_embedding(MEMORIES["keys"]), atol=1e-5)

    # the same id again replaces the memory (database and inner store), never a second copy
    index.insert_nodes([TextNode(id_="alien", text="The spare keys moved to the hall cupboard.")])
    assert store.count() == 3 and inner.client.count() == 3
    assert store.get_nodes(["alien"])[0].get_content().startswith("The spare keys moved")


def test_a_user_managed_embedding_is_tracked_and_shares_its_chain(stores: Stores, tmp_path: Path,
                                                                  warm_cache: str) -> None:
    emb = ManagedEmbedding(offline=True, cache_dir=warm_cache)  # allow_degraded=False: the user's choice stays
    store = ManagedVectorStore(stores.inner("simple"), tmp_path / "mem", embed_model=emb)
    assert store.embed_model.service is emb.service and store.embed_model.allow_degraded is False
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    insert_all(index)
    assert top(index.as_retriever().retrieve("which gift flowers for my mother?")) == "birthday"
    with pytest.raises(TypeError, match="ManagedEmbedding"):
        ManagedVectorStore(SimpleVectorStore(), tmp_path / "other", embed_model=MockEmbedding())


def MockEmbedding():  # noqa: N802 - a stand-in for any other embed model
    from llama_index.core import MockEmbedding as _Mock

    return _Mock(embed_dim=8)


async def test_async_idiom(stores: Stores, tmp_path: Path, warm_cache: str) -> None:
    store = ManagedVectorStore(stores.inner("qdrant"), tmp_path / "mem",
                               embed_model=embedding_for("bundled", tmp_path, warm_cache))
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    for key, text in MEMORIES.items():
        await index.ainsert(Document(text=text, id_=key))
    hits = await index.as_retriever(similarity_top_k=2).aretrieve("where did I park the vehicle?")
    assert top(hits) == "car"
    await index.adelete_ref_doc("car")
    assert store.count() == len(MEMORIES) - 1 and inner_count(store.client) == len(MEMORIES) - 1
    answer = await index.as_query_engine(llm=MockLLM()).aquery("what does Alice drink?")
    assert top(answer.source_nodes) == "tea"


# -- no model, then the model back ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STORES)
def test_no_model_answers_from_fts5_and_the_store_receives_nothing(kind: str, stores: Stores, tmp_path: Path) -> None:
    inner = stores.inner(kind)
    with mock.patch.object(type(inner), "add", autospec=True, side_effect=type(inner).add) as inner_add:
        store = ManagedVectorStore(inner, tmp_path / "mem",
                                   embed_model=embedding_for("keyword", tmp_path, ""), sync_interval_s=0.05)
        index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
        insert_all(index)
        for query, want in LEXICAL.items():
            hits = index.as_retriever(similarity_top_k=2).retrieve(query)
            assert top(hits) == want and hits[0].node.metadata["retrieved_by"] == "keyword"
        store.sync()  # nothing to write it with
        store.engine.wait_synced(timeout=0.3)  # let the background sync look, too
        assert store.embed_model.degraded and store.embed_model.active_tier == "keyword"
        assert inner_add.call_count == 0 and inner_count(inner) == 0  # not one vector reached the store
        assert store.status()["pending"] == len(MEMORIES)
    store.close()


@pytest.mark.parametrize("kind", STORES)
def test_model_back_pending_memories_reach_the_store_by_themselves(kind: str, stores: Stores, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = no_model_config(tmp_path, retry_preferred_after_s=0.1)
    inner = stores.inner(kind)
    store = ManagedVectorStore(inner, tmp_path / "mem", sync_interval_s=0.1,
                               embed_model=ManagedEmbedding(config=config, cache_dir=str(cache), allow_degraded=True))
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    insert_all(index)
    assert store.embed_model.degraded and inner_count(inner) == 0

    # the model comes back: another process installs it into the cache (here: the bundled copy)
    ManagedEmbedding(offline=True, cache_dir=str(cache)).get_text_embedding("install")
    deadline = time.monotonic() + 120
    while inner_count(inner) < len(MEMORIES):  # the background sync does it: nobody calls sync()
        assert time.monotonic() < deadline, "the pending memories never reached the store"
        time.sleep(0.1)
    assert store.wait_synced(timeout=30)
    emb = store.embed_model
    assert emb.active_tier == "preferred" and not emb.degraded
    assert inner_count(inner) == len(MEMORIES)
    assert store.engine.db.embedded_fingerprints(store.engine.store_key) == {emb.fingerprint: len(MEMORIES)}
    # the vectors in the store are the model's, not the keyword vectors the index computed meanwhile
    node = next(n for n in store.get_nodes() if n.ref_doc_id == "car")
    want = np.array(emb.get_text_embedding(node.get_content(metadata_mode="embed")))
    hit = store.engine.inner.search(want.tolist(), 1)[0]
    assert hit[0] == node.node_id and hit[1] > 0.999
    hits = index.as_retriever(similarity_top_k=1).retrieve("where did I park the vehicle?")
    assert top(hits) == "car" and hits[0].node.metadata["retrieved_by"] == "vector"
    store.close()


# -- a persisted store and memory reopened by another process ----------------------------------------------------


REOPEN = textwrap.dedent("""
    import json, sys
    import chromadb
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore
    from llamaindex_modelcache import ManagedEmbedding, ManagedVectorStore

    root, cache = sys.argv[1], sys.argv[2]
    settings = chromadb.config.Settings(anonymized_telemetry=False)
    client = chromadb.PersistentClient(path=root + "/chroma", settings=settings)
    collection = client.get_or_create_collection("memories")
    store = ManagedVectorStore(ChromaVectorStore(chroma_collection=collection), root + "/mem",
                               embed_model=ManagedEmbedding(offline=True, cache_dir=cache, allow_degraded=True))
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    before = {"count": store.count(), "chroma": collection.count(), "pending": store.status()["pending"],
              "docs": sorted(n.ref_doc_id for n in store.get_nodes()), "key": store.store_key}
    hit = index.as_retriever(similarity_top_k=1).retrieve("which gift flowers for my mother?")[0]
    index.insert(Document(text="The bike lock code is 4096.", id_="bike"))
    print(json.dumps(before | {"top": hit.node.ref_doc_id, "how": hit.node.metadata["retrieved_by"],
                               "after": store.count(), "chroma_after": collection.count()}))
    store.close()
""")


def test_persisted_chroma_and_memory_reopened_in_a_new_process(stores: Stores, tmp_path: Path,
                                                              warm_cache: str) -> None:
    store = ManagedVectorStore(stores.inner("chroma"), tmp_path / "mem",
                               embed_model=embedding_for("model", tmp_path, warm_cache))
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    insert_all(index)
    key = store.store_key
    assert key.startswith("chroma:memories:")
    store.close()

    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", REOPEN, str(tmp_path), warm_cache], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["key"] == key  # the same collection: its vectors are known, nothing to re-embed
    assert seen["count"] == seen["chroma"] == len(MEMORIES) and seen["pending"] == 0
    assert seen["docs"] == sorted(MEMORIES)  # every memory, once
    assert (seen["top"], seen["how"]) == ("birthday", "vector")
    assert seen["after"] == seen["chroma_after"] == len(MEMORIES) + 1

    # and back here: the other process's memory is in the database and the collection
    again = ManagedVectorStore(stores.inner("chroma"), tmp_path / "mem",
                               embed_model=embedding_for("model", tmp_path, warm_cache))
    assert again.count() == len(MEMORIES) + 1 and again.status()["pending"] == 0
    hits = VectorStoreIndex.from_vector_store(again, embed_model=again.embed_model).as_retriever(
        similarity_top_k=1).retrieve("bike lock code")
    assert top(hits) == "bike"
    again.close()


def test_store_keys() -> None:
    assert ManagedVectorStore.class_name() == "ModelCacheManagedVectorStore"
    from llamaindex_modelcache.vector_stores import detect_store_key

    assert detect_store_key(SimpleVectorStore()) is None
    try:
        ephemeral = chromadb.EphemeralClient(settings=chromadb.config.Settings(anonymized_telemetry=False))
    except ValueError:  # chromadb keeps one ephemeral system per process: another test made it with its settings
        ephemeral = chromadb.EphemeralClient()
    assert detect_store_key(ChromaVectorStore(chroma_collection=ephemeral.get_or_create_collection("eph"))) is None
    memory_client = qdrant_client.QdrantClient(":memory:")
    assert detect_store_key(QdrantVectorStore(collection_name="m", client=memory_client)) is None


def test_qdrant_keys_and_ids(stores: Stores, tmp_path: Path, warm_cache: str) -> None:
    inner = stores.inner("qdrant")
    store = ManagedVectorStore(inner, tmp_path / "mem", embed_model=embedding_for("model", tmp_path, warm_cache))
    assert store.store_key == f"qdrant:memories:{(tmp_path / 'qdrant').resolve()}"
    # ids that are not UUIDs (Qdrant's point ids must be) still work, and map back
    store.add([TextNode(id_="note-1", text=MEMORIES["car"]), TextNode(id_="note-2", text=MEMORIES["tea"])])
    assert inner_count(inner) == 2
    result = store.query(VectorStoreQuery(query_str="where did I park the vehicle?", similarity_top_k=1,
                                          mode=VectorStoreQueryMode.DEFAULT))
    assert result.ids == ["note-1"] and result.nodes[0].metadata["retrieved_by"] == "vector"
    store.delete_nodes(["note-1"])
    assert inner_count(inner) == 1 and store.count() == 1
    store.close()


class RefDocOnlyStore(SimpleVectorStore):
    """A store that can delete only by ref doc id (no ``delete_nodes``), like some LlamaIndex stores."""

    delete_nodes = BasePydanticVectorStore.delete_nodes


def test_a_store_without_delete_nodes_deletes_by_ref_doc(tmp_path: Path, warm_cache: str) -> None:
    inner = RefDocOnlyStore()
    store = ManagedVectorStore(inner, tmp_path / "mem", embed_model=embedding_for("model", tmp_path, warm_cache))
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    insert_all(index)
    index.insert_nodes([TextNode(id_="extra", text=MEMORIES["car"])])
    assert len(inner.data.embedding_dict) == len(MEMORIES) + 1
    index.delete_ref_doc("car")  # one node of the "car" document, not the other node with the same text
    assert "extra" in inner.data.embedding_dict and len(inner.data.embedding_dict) == len(MEMORIES)
    store.delete_nodes(["extra"])
    assert "extra" not in inner.data.embedding_dict and store.count() == len(MEMORIES) - 1
    index.insert_nodes([TextNode(id_="keys2", text="The keys are now on the hook.")])
    index.insert_nodes([TextNode(id_="keys2", text="The keys are back in the drawer.")])  # replaced
    assert store.count() == len(MEMORIES) and len(inner.data.embedding_dict) == len(MEMORIES)
    store.close()


def test_import_is_light() -> None:
    code = ("import sys, llamaindex_modelcache as m; "
            "heavy = [n for n in ('llamaindex_modelcache.vector_stores', 'llamaindex_modelcache.retrievers', "
            "'chromadb', 'qdrant_client', 'torch') if n in sys.modules]; "
            "assert not heavy, heavy; assert m.ManagedVectorStore.__name__ == 'ManagedVectorStore'; "
            "assert m.FallbackRetriever.__name__ == 'FallbackRetriever'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_nested_metadata_is_refused_before_it_is_stored_when_the_store_needs_flat(stores: Stores,
                                                                                  tmp_path: Path) -> None:
    store = ManagedVectorStore(stores.inner("chroma"), tmp_path / "mem",
                               embed_model=embedding_for("keyword", tmp_path, ""))
    with pytest.raises(ValueError, match="must be one of"):
        store.add([TextNode(text="nested", metadata={"tags": {"a": 1}})])
    assert store.count() == 0
    store.close()


def test_a_bare_embedding_in_the_index_cannot_insert_without_a_model(tmp_path: Path) -> None:
    """LlamaIndex embeds with the index's model before ``store.add``: a ManagedEmbedding that refuses
    keyword vectors makes ``index.insert`` fail before the store sees the memory. Queries still work,
    since the store embeds them itself (``is_embedding_query = False``)."""
    store = ManagedVectorStore(SimpleVectorStore(), tmp_path / "mem",
                               embed_model=embedding_for("keyword", tmp_path, ""))
    bare = ManagedEmbedding(config=no_model_config(tmp_path), cache_dir=str(tmp_path / "kw-cache"))
    index = VectorStoreIndex.from_vector_store(store, embed_model=bare)
    with pytest.raises(ModelUnavailableError, match="allow_degraded=True"):
        index.insert(Document(text=MEMORIES["car"], id_="car"))
    assert store.count() == 0  # never reached the store
    store.add([TextNode(text=MEMORIES["car"]), TextNode(text=MEMORIES["tea"])])  # the store itself accepts them
    hits = index.as_retriever(similarity_top_k=1).retrieve("green tea for Alice")
    assert hits[0].node.get_content() == MEMORIES["tea"] and hits[0].node.metadata["retrieved_by"] == "keyword"
    assert "tea" in str(index.as_query_engine(llm=MockLLM()).query("green tea for Alice"))
    store.close()
