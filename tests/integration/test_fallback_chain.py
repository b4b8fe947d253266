"""The fallback chain end to end, against the local Hub behind the fault proxy.

Hub down + empty cache → bundled (same vectors and fingerprint as the Hub's model); bundled
missing → keyword mode, retrievers still find the memory (and a bare embeddings object raises);
preferred back → recovery; another model's space → keyword answers and the store gets nothing
until the model is back, then the pending memories go in by themselves; strict → error; an
interrupted sync resumes; the same text gives the same vector through both frameworks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_modelcache import FallbackRetriever as LCRetriever
from langchain_modelcache import ManagedEmbeddings
from llamaindex_modelcache import ManagedEmbedding
from modelcache.backends.hashed import HashedEncoder
from modelcache.errors import ModelUnavailableError
from modelcache.manager import ModelManager
from modelcache.memory.records import ID_KEY
from modelcache.serving.service import EmbeddingService
from modelcache.settings import load_settings
from tests.support.fault_proxy import FaultProxy
from tests.support.hub import MINILM_REPO, TINY_REPO, LocalHub

MEMORIES = {
    "car": "The car is parked on level 3 of the airport garage, spot C42.",
    "tea": "Alice prefers green tea without sugar in the afternoon.",
    "meeting": "The quarterly budget meeting moved to Thursday at 10am.",
    "wifi": "The office wifi password is written on the whiteboard.",
    "dentist": "Dentist appointment for Bob next Tuesday morning.",
    "keys": "Spare house keys are in the blue drawer of the kitchen.",
}
COOL_DOWN = 0.2


def chain_config(endpoint: str, **fallback) -> dict:
    """Fast failure against a dead endpoint (no retries) and a short cool-down."""
    return {"download": {"endpoints": [endpoint], "retries": 0, "connect_timeout": 5},
            "fallback": {"retry_preferred_after_s": COOL_DOWN, **fallback}}


def config_file(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "modelcache.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# -- hub down + empty cache → bundled, same as the Hub's model -----------------------------


def test_hub_down_empty_cache_gives_bundled_identical_to_hub_model(proxy: FaultProxy, hub: LocalHub,
                                                                   tmp_path: Path) -> None:
    proxy.down()
    service = EmbeddingService(load_settings(chain_config(proxy.endpoint)))
    texts = ["Hello world", "where did I park the car?"]
    offline_vectors = service.embed(texts, "document")
    status = service.status()
    assert service.active_tier == "bundled" and service.active_model == "bundled-mini"
    assert not service.degraded  # same weights: the same embedding space
    preferred = status["tiers"][0]
    assert preferred["ok"] is False and "503" in preferred["reason"] and preferred["last_failure"]
    assert proxy.count() > 0  # it did try the Hub first

    proxy.up()
    hub_settings = load_settings(chain_config(proxy.endpoint), model_cache={"directory": str(tmp_path / "hubcache")})
    hub_model = ModelManager(hub_settings).load("all-MiniLM-L6-v2")
    assert proxy.count(path_contains=MINILM_REPO) > 0  # pulled through the local Hub
    assert hub_model.fingerprint == service.fingerprint
    np.testing.assert_allclose(hub_model.encode(texts, kind="document"), offline_vectors, atol=1e-6)


def test_first_embed_fails_fast_on_a_dead_hub(proxy: FaultProxy) -> None:
    proxy.down()
    settings = load_settings({"download": {"endpoints": [proxy.endpoint], "retries": 5, "backoff_base": 0.01},
                              "fallback": {"retry_preferred_after_s": 3600}})
    assert settings.fallback.first_try_retries == 1
    service = EmbeddingService(settings, background_recovery=False)
    service.embed(["Hello world"], "query")
    assert service.active_tier == "bundled"
    assert proxy.count() == 2  # one try + one retry in the caller's thread, not download.retries + 1


# -- bundled missing → keyword mode; retrievers still find the memory ----------------------


def test_bundled_missing_gives_keyword_mode_and_memory_still_answers(tmp_path: Path) -> None:
    config = config_file(tmp_path, {"offline": True, "fallback": {"bundled": False}})
    lc = ManagedEmbeddings(config=config)
    lc_store = InMemoryVectorStore(lc)
    lc_memory = LCRetriever(vectorstore=lc_store, k=2, memory_dir=tmp_path / "lc-memory")
    lc_memory.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))

    for emb in (lc,):  # the LlamaIndex side: test_llamaindex_retriever.py
        assert emb.active_tier == "keyword" and emb.degraded
        assert emb.fingerprint == "keyword-hash-384"
        tiers = {t["name"]: t for t in emb.status()["tiers"]}
        assert tiers["bundled"]["enabled"] is False and "fallback.bundled" in tiers["bundled"]["reason"]
        assert tiers["preferred"]["ok"] is False
    with pytest.raises(ModelUnavailableError, match="allow_degraded"):  # never another space silently
        lc.embed_query("where is the car parked?")
    vector = ManagedEmbeddings(config=config, allow_degraded=True).embed_query("where is the car parked?")
    assert len(vector) == 384 and abs(np.linalg.norm(vector) - 1) < 1e-5  # opted in: keyword vectors

    docs = lc_memory.invoke("where is the car parked?")
    assert docs[0].id == "car" and docs[0].metadata["memory_search"] == "keyword"
    assert lc_memory.invoke("green tea for Alice")[0].id == "tea"
    assert len(lc_store.store) == 0  # the store received no vector


def test_keyword_mode_fails_once_in_the_log_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({"offline": True, "fallback": {"bundled": False, "retry_preferred_after_s": 0}})
    service = EmbeddingService(settings, background_recovery=False)
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        for _ in range(4):
            service.embed(["hello"])
    failures = [r for r in caplog.records if "tier preferred" in r.getMessage()]
    degraded = [r for r in caplog.records if "degraded" in r.getMessage()]
    assert len(failures) == 1 and len(degraded) == 1
    assert service.counters["tier_failures:preferred"] == 4  # retried every call (no cool-down), logged once
    assert service.counters["degraded_embeds"] == 4


# -- preferred back → recovery without a restart -------------------------------------------


def test_preferred_back_recovers_without_restart(proxy: FaultProxy) -> None:
    settings = load_settings(chain_config(proxy.endpoint, bundled=False))
    service = EmbeddingService(settings, TINY_REPO, dims=32)
    proxy.down()
    keyword = service.embed(["memory one"])
    assert service.active_tier == "keyword" and service.degraded and keyword.shape == (1, 32)

    proxy.up()
    time.sleep(COOL_DOWN + 0.05)
    service.embed(["memory two"])  # still answers at once; the retry runs in the background
    service.wait_recovery(timeout=60)
    assert service.active_tier == "preferred" and not service.degraded
    assert service.embed(["memory three"]).shape == (1, 32)
    assert service.counters["recoveries"] == 1
    tiers = {t["name"]: t for t in service.status()["tiers"]}
    assert tiers["preferred"]["ok"] is True and tiers["preferred"]["failures"] == 1


# -- space change → BM25 until reindex() ----------------------------------------------------


def _space_change_embeddings(tmp_path: Path, proxy: FaultProxy, tiny_model_dir_v2: Path) -> ManagedEmbeddings:
    """Preferred: the Hub's tiny model v1.0; fallback: a local model with other weights (v2)."""
    return ManagedEmbeddings(model=TINY_REPO, revision="v1.0", fallback_models=[str(tiny_model_dir_v2)],
                             fallback_strategy="manual", config=config_file(tmp_path, chain_config(proxy.endpoint)))


def test_other_space_answers_by_keyword_until_the_model_is_back(proxy: FaultProxy, tiny_model_dir_v2: Path,
                                                                 tmp_path: Path) -> None:
    emb = _space_change_embeddings(tmp_path, proxy, tiny_model_dir_v2)
    store = InMemoryVectorStore(emb)
    memory = LCRetriever(vectorstore=store, k=3, memory_dir=tmp_path / "memory", sync_interval_s=0.1)
    proxy.down()
    memory.add_texts(list(MEMORIES.values()), ids=list(MEMORIES))
    assert emb.active_tier.startswith("fallback:") and emb.degraded  # another model's space
    old_fp = emb.fingerprint
    docs = memory.invoke("car garage")
    assert docs[0].id == "car" and docs[0].metadata["memory_search"] == "keyword"
    assert len(store.store) == 0 and memory.status()["pending"] == len(MEMORIES)  # no v2 vector went in

    proxy.up()  # nobody calls reindex(): the background sync recovers the model and writes the pending ones
    assert memory.wait_synced(timeout=60)
    assert emb.active_tier == "preferred" and not emb.degraded and emb.fingerprint != old_fp
    assert memory.status()["store_fingerprints"] == {emb.fingerprint: len(MEMORIES)}
    docs = memory.invoke("car garage")
    assert docs and {d.metadata["memory_search"] for d in docs} == {"vector"}
    stored = store.get_by_ids(list(MEMORIES))
    assert sorted(d.metadata[ID_KEY] for d in stored) == sorted(MEMORIES)  # each exactly once
    hybrid = memory.invoke("car garage", mode="hybrid")
    assert hybrid[0].id == "car" and hybrid[0].metadata["memory_search"] == "hybrid"
    assert memory.reindex().pending == 0  # the old name still works
    memory.close()


# -- strict → error -------------------------------------------------------------------------


def test_strict_raises_instead_of_degrading(proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.down()
    emb = ManagedEmbeddings(model=TINY_REPO, fallback_strategy="strict",
                            config=config_file(tmp_path, chain_config(proxy.endpoint)))
    with pytest.raises(ModelUnavailableError) as err:
        emb.embed_query("hello")
    assert TINY_REPO in str(err.value) and "preferred" in err.value.failures
    assert [t["name"] for t in emb.status()["tiers"]] == ["preferred"]  # no keyword tier at all


def test_strict_allows_only_the_same_space(tmp_path: Path) -> None:
    """strict never degrades, but the bundled copy of the same weights is not a degradation."""
    offline = {"offline": True}
    same = EmbeddingService(load_settings(offline), strategy="strict")
    assert same.embed(["hi"]).shape == (1, 384)
    assert same.active_tier == "bundled" and not same.degraded
    assert same.status()["tiers"][0]["ok"] is False  # the preferred model itself is not cached
    empty_cache = {"directory": str(tmp_path / "empty")}  # the first one installed the bundled copy
    without = EmbeddingService(load_settings(offline, fallback={"bundled": False}, model_cache=empty_cache),
                               strategy="strict")
    with pytest.raises(ModelUnavailableError):
        without.embed(["hi"])


def test_manual_uses_only_listed_tiers(tmp_path: Path) -> None:
    service = EmbeddingService(load_settings({"offline": True}), strategy="manual", fallback_models=["keyword"])
    assert [t.name for t in service.tiers] == ["preferred", "keyword"]
    service.embed(["hi"])
    assert service.active_tier == "keyword"
    none = EmbeddingService(load_settings({"offline": True}), strategy="manual")
    with pytest.raises(ModelUnavailableError):
        none.embed(["hi"])


# -- interrupted sync resumes ----------------------------------------------------------------


class Interrupt(Exception):
    pass


def test_interrupted_sync_resumes_without_loss_or_duplicates(proxy: FaultProxy, tiny_model_dir_v2: Path,
                                                             tmp_path: Path) -> None:
    faiss = pytest.importorskip("faiss")
    faiss_mod = pytest.importorskip("langchain_community.vectorstores")
    from langchain_community.docstore.in_memory import InMemoryDocstore

    from langchain_modelcache import ManagedVectorStore

    texts = {f"m{i:03d}": f"memory number {i} about topic {i % 7} and item {i * 13 % 97}" for i in range(45)}
    emb = _space_change_embeddings(tmp_path, proxy, tiny_model_dir_v2)
    proxy.down()
    store = faiss_mod.FAISS(emb, faiss.IndexFlatL2(32), InMemoryDocstore(), {})
    saved = tmp_path / "faiss"
    memory = ManagedVectorStore(store, tmp_path / "memory", store_key="faiss:test", batch_size=10,
                                background=False, persist=lambda: store.save_local(str(saved)))
    memory.add_texts(list(texts.values()), ids=list(texts))
    assert emb.degraded and store.index.ntotal == 0  # on the fallback (v2) model: all pending
    proxy.up()
    time.sleep(COOL_DOWN + 0.05)
    assert emb.service.try_recover() and emb.active_tier == "preferred"

    real_add, calls = store.add_embeddings, {"n": 0}

    def flaky_add(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupt("killed mid-sync")
        return real_add(*args, **kwargs)

    store.add_embeddings = flaky_add
    with pytest.raises(Interrupt):
        memory.sync(progress=False)
    status = memory.status()
    assert status["store_fingerprints"] == {emb.fingerprint: 20} and status["pending"] == len(texts) - 20
    assert memory.similarity_search("topic 3 item 39", k=1)[0].metadata["memory_search"] == "keyword"  # partial

    store.add_embeddings = real_add
    report = memory.sync(progress=False)
    assert report.written == len(texts) - 20 and report.pending == 0
    assert store.index.ntotal == len(texts)
    assert sorted(store.index_to_docstore_id.values()) == sorted(texts)  # each memory exactly once
    assert memory.similarity_search("topic 3 item 39", k=1)[0].metadata["memory_search"] == "vector"
    memory.close()

    reopened = faiss_mod.FAISS.load_local(str(saved), emb, allow_dangerous_deserialization=True)
    assert reopened.index.ntotal == len(texts)


# -- same text, same vector, through either framework ---------------------------------------


def test_same_vector_through_both_frameworks(tiny_model_dir: Path, tmp_path: Path) -> None:
    lc = ManagedEmbeddings(model=str(tiny_model_dir), fallback_strategy="strict")
    li = ManagedEmbedding(model=str(tiny_model_dir), fallback_strategy="strict")
    texts = ["The car is parked on level 3", "", "Ünïcode memory ✓"]
    np.testing.assert_allclose(lc.embed_documents(texts), li.get_text_embedding_batch(texts), atol=1e-6)
    np.testing.assert_allclose(lc.embed_query(texts[0]), li.get_query_embedding(texts[0]), atol=1e-6)
    assert lc.fingerprint == li.fingerprint and lc.active_tier == li.active_tier == "preferred"


def test_same_keyword_vector_through_both_frameworks(tmp_path: Path) -> None:
    config = config_file(tmp_path, {"offline": True, "fallback": {"bundled": False}})
    lc, li = ManagedEmbeddings(config=config, allow_degraded=True), ManagedEmbedding(config=config, allow_degraded=True)
    text = "Spare house keys are in the blue drawer"
    assert lc.embed_query(text) == li.get_query_embedding(text)
    assert np.allclose(lc.embed_query(text), HashedEncoder(384).encode([text])[0])
