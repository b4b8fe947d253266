"""R10: bad input gets defined behaviour or a clear error; truncation is reported once.

Defined here (``SentenceTransformerEncoder.encode`` and the adapters' ``check_texts``):
``[]`` → ``(0, dims)``; ``""`` → a normal unit vector; a single str, None, a non-str item →
``TypeError`` naming the index; a lone surrogate → ``ValueError`` naming the index; a text over
``max_seq_length`` tokens → truncated like sentence-transformers does, one WARNING per loaded
model; 100k texts → finish with bounded memory; an unknown model → ``UnknownModelError`` with
close matches; a spec whose dims disagree with the model → ``IntegrityError`` (expected/actual).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from modelcache.errors import IntegrityError, UnknownModelError
from tests.reliability import manager, rss_bytes, tiny
from tests.support.hub import TINY_REPO

WORDS = ["alpha", "beta", "gamma", "delta", "unbelievable", "x", "tokenization", "memory", "café", "naïve"]


def megabyte_text() -> str:
    words = [WORDS[(i * 7919) % len(WORDS)] for i in range(180_000)]
    return " ".join(words)[: 1024 * 1024].rsplit(" ", 1)[0]


def truncation_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "modelcache" and "max_seq_length" in r.getMessage()]


@pytest.fixture(scope="module")
def encoder(hub):
    return manager([hub.endpoint]).load(tiny())


@pytest.mark.scenario("R10")
def test_empty_and_odd_inputs_have_defined_results(encoder):
    empty = encoder.encode([])
    assert empty.shape == (0, 32) and empty.dtype == np.float32
    for texts in ([""], (" ",), ["\x00"], ["🙂" * 50], ["a\tb\nc"]):
        vec = encoder.encode(texts)
        assert vec.shape == (1, 32) and np.all(np.isfinite(vec)), texts
        assert abs(float(np.linalg.norm(vec[0])) - 1.0) < 1e-4
    assert encoder.encode(("one", "two")).shape == (2, 32)  # a tuple is a list of texts too


@pytest.mark.scenario("R10")
@pytest.mark.parametrize(("texts", "error", "words"), [
    (None, TypeError, ["list of str", "NoneType"]),
    ("hello", TypeError, ["not a single str", "[text]"]),
    (b"hello", TypeError, ["not a single bytes"]),
    (["ok", 3], TypeError, ["texts[1]", "int"]),
    (["ok", "fine", None], TypeError, ["texts[2]", "NoneType"]),
    ([b"bytes"], TypeError, ["texts[0]", "bytes"]),
    ({"a": 1}, TypeError, ["dict"]),
    (["ok", "bad \ud800 surrogate"], ValueError, ["texts[1]", "Unicode"]),
], ids=["none", "str", "bytes", "int-item", "none-item", "bytes-item", "dict", "surrogate"])
def test_bad_texts_raise_naming_what_and_where(encoder, texts, error, words):
    with pytest.raises(error) as err:
        encoder.encode(texts)
    for word in words:
        assert word in str(err.value), str(err.value)


@pytest.mark.scenario("R10")
def test_one_megabyte_text_is_truncated_and_reported_once(hub, caplog, record_property):
    caplog.set_level(logging.WARNING, logger="modelcache")
    enc = manager([hub.endpoint]).load(tiny())
    enc.__dict__.pop("_truncation_reported", None)  # a fresh report for this test (pooled encoder)
    big = megabyte_text()
    t0 = time.perf_counter()
    vec = enc.encode([big, "short one"])
    seconds = time.perf_counter() - t0
    assert vec.shape == (2, 32) and np.all(np.isfinite(vec))
    # exactly what sentence-transformers gives for the text cut at its max length
    head = " ".join(big.split(" ")[: enc.max_seq_length * 2])
    assert np.allclose(vec[0], enc.encode([head])[0], atol=1e-6)
    enc.encode([big + " more", big])
    warned = truncation_warnings(caplog)
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert str(enc.max_seq_length) in warned[0].getMessage() and "truncated" in warned[0].getMessage()
    record_property("text_bytes", len(big.encode()))
    record_property("encode_1MB_s", round(seconds, 3))
    record_property("warnings", len(warned))


@pytest.mark.scenario("R10")
@pytest.mark.slow
def test_hundred_thousand_short_texts_finish_with_bounded_memory(hub, record_property):
    torch = pytest.importorskip("torch")
    mgr = manager([hub.endpoint], {"embedding": {"batch_size": 256}})
    enc = mgr.load(tiny())
    texts = [f"note {i}: likes item {i % 97}" for i in range(100_000)]
    peak, stop = [rss_bytes()], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.append(rss_bytes())
            time.sleep(0.05)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: intra-op threads only contend here
    base = rss_bytes()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        vectors = enc.encode(texts)
    finally:
        seconds = time.perf_counter() - t0
        stop.set()
        sampler.join()
        torch.set_num_threads(threads)
    growth = max(peak) - base
    assert vectors.shape == (100_000, 32) and vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    assert growth < 512 * 1024 * 1024, f"RSS grew by {growth / 1e6:.0f} MB for 100k texts"
    record_property("texts", len(texts))
    record_property("seconds", round(seconds, 1))
    record_property("texts_per_s", round(len(texts) / seconds))
    record_property("rss_growth_MB", round(growth / 1e6, 1))


@pytest.mark.scenario("R10")
def test_unknown_model_is_a_clear_error_with_close_matches(hub):
    mgr = manager([hub.endpoint])
    with pytest.raises(UnknownModelError) as err:
        mgr.load("all-MiniLM-L6")
    assert "all-minilm-l6-v2" in str(err.value).lower() and "register" in str(err.value)
    for bad in ("no such model", 123, "   ", "a/b/c/d"):
        with pytest.raises(UnknownModelError):
            mgr.load(bad)  # type: ignore[arg-type]
    assert not any(mgr.store.root.glob("models--*"))  # nothing was fetched for a bad name


@pytest.mark.scenario("R10")
def test_empty_model_name_and_wrong_dims_at_load_are_errors(hub):
    mgr = manager([hub.endpoint])
    mgr.pull(tiny())
    with pytest.raises(IntegrityError) as err:
        mgr.load(tiny(dims=64))  # cached and verified files, but the registry says 64 and the model gives 32
    assert err.value.expected == 64 and err.value.actual == 32 and "dims" in err.value.check
    with pytest.raises(UnknownModelError):
        mgr.spec("")  # not "the default model"


@pytest.mark.scenario("R10")
def test_adapters_give_the_same_defined_behaviour(hub, caplog):
    pytest.importorskip("langchain_modelcache")
    from langchain_modelcache import ManagedEmbeddings

    caplog.set_level(logging.WARNING, logger="modelcache")
    lc = ManagedEmbeddings(model=TINY_REPO, endpoints=[hub.endpoint], fallback_strategy="strict")
    assert lc.embed_documents([]) == []
    assert len(lc.embed_query("")) == 32
    for bad, where in ((None, "NoneType"), ("text", "single str"), (["ok", 1], "texts[1]")):
        with pytest.raises(TypeError) as err:
            lc.embed_documents(bad)  # type: ignore[arg-type]
        assert where in str(err.value)
    with pytest.raises(TypeError):
        lc.embed_query(None)  # type: ignore[arg-type]
    lc.service.manager.load(TINY_REPO).__dict__.pop("_truncation_reported", None)
    big = megabyte_text()
    assert len(lc.embed_documents([big, big])) == 2 and len(lc.embed_query(big)) == 32
    assert len(truncation_warnings(caplog)) == 1
    assert lc.active_tier == "preferred" and not lc.degraded

    pytest.importorskip("llamaindex_modelcache")
    from llamaindex_modelcache import ManagedEmbedding

    li = ManagedEmbedding(model=TINY_REPO, endpoints=[hub.endpoint], fallback_strategy="strict")
    assert li.get_text_embedding_batch([]) == []
    assert len(li.get_query_embedding("")) == 32
    with pytest.raises(TypeError) as err:
        li.get_text_embedding_batch(["ok", 3])  # type: ignore[list-item]
    assert "texts[1]" in str(err.value)
    assert np.allclose(li.get_query_embedding("same text"), lc.embed_query("same text"), atol=1e-6)


@pytest.mark.scenario("R10")
def test_one_bad_text_never_degrades_the_service(hub):
    pytest.importorskip("langchain_modelcache")
    from langchain_modelcache import ManagedEmbeddings

    lc = ManagedEmbeddings(model=TINY_REPO, endpoints=[hub.endpoint], fallback_strategy="auto")
    lc.embed_query("warm up")
    assert lc.active_tier == "preferred"
    with pytest.raises(ValueError) as err:
        lc.embed_documents(["ok", "bad \ud800 text"])
    assert "texts[1]" in str(err.value)
    assert lc.active_tier == "preferred" and not lc.degraded
