"""The LangChain standard embedding checks, written for LlamaIndex's ``BaseEmbedding`` contract.

Run against a tiny local model and the real bundled one: class_name, query/text methods sync
and async, batching through ``_get_text_embeddings`` in ``embed_batch_size`` chunks, and the
``to_dict`` / ``from_dict`` round trip.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import ValidationError

from llamaindex_modelcache import ManagedEmbedding
from modelcache.errors import EmbeddingSpaceWarning, ModelUnavailableError


@pytest.fixture(scope="module")
def bundled_embedding(tmp_path_factory: pytest.TempPathFactory) -> ManagedEmbedding:
    """The default model with no network: the chain installs the bundled copy (shared by the module)."""
    return ManagedEmbedding(model="all-MiniLM-L6-v2", offline=True,
                            cache_dir=str(tmp_path_factory.mktemp("li-bundled-cache")))


@pytest.fixture(params=["tiny", "bundled"])
def model(request: pytest.FixtureRequest, tiny_model_dir: Path) -> ManagedEmbedding:
    if request.param == "tiny":
        return ManagedEmbedding(model=str(tiny_model_dir), fallback_strategy="strict", embed_batch_size=3)
    return request.getfixturevalue("bundled_embedding")


# -- unit: construction, serialisation ------------------------------------------------------


def test_init() -> None:
    emb = ManagedEmbedding(model="all-MiniLM-L6-v2", offline=True)
    assert isinstance(emb, BaseEmbedding) and emb._service is None  # nothing loaded


def test_class_name() -> None:
    assert ManagedEmbedding.class_name() == "ModelCacheManagedEmbedding"


def test_to_dict_from_dict_round_trip() -> None:
    emb = ManagedEmbedding(model="minilm", revision="abc", fallback_models=["bundled", "keyword"],
                           fallback_strategy="manual", device="cpu", endpoints=["http://mirror"],
                           normalize=True, batch_size=8, offline=True, query_prompt="q: ",
                           document_prompt="d: ", embed_batch_size=7)
    data = emb.to_dict()
    assert data["class_name"] == "ModelCacheManagedEmbedding" and data["model_name"] == "minilm"
    again = ManagedEmbedding.from_dict(data)
    assert again.to_dict() == data
    assert ManagedEmbedding.from_json(emb.to_json()).to_dict() == data


def test_alias_and_forbid_extra() -> None:
    assert ManagedEmbedding(model_name="minilm").model_name == "minilm"
    with pytest.raises(ValidationError):
        ManagedEmbedding(modle="typo")


# -- integration: the standard checks ------------------------------------------------------


def test_get_query_embedding(model: ManagedEmbedding) -> None:
    first, second = model.get_query_embedding("foo"), model.get_query_embedding("bar")
    assert isinstance(first, list) and isinstance(first[0], float)
    assert len(first) > 0 and len(first) == len(second)


def test_get_text_embedding_batch(model: ManagedEmbedding) -> None:
    texts = ["foo bar", "bar foo", "foo", "a", "b", "c", "d"]
    with mock.patch.object(ManagedEmbedding, "_get_text_embeddings", autospec=True,
                           side_effect=ManagedEmbedding._get_text_embeddings) as spy:
        vectors = model.get_text_embedding_batch(texts)
    assert len(vectors) == len(texts) and all(len(v) == len(vectors[0]) for v in vectors)
    assert all(isinstance(v, list) and isinstance(v[0], float) for v in vectors)
    sizes = [len(call.args[1]) for call in spy.call_args_list]
    assert sum(sizes) == len(texts) and max(sizes) <= model.embed_batch_size  # batched, not one by one
    np.testing.assert_allclose(vectors[2], model.get_text_embedding("foo"), atol=1e-5)


async def test_aget_query_embedding(model: ManagedEmbedding) -> None:
    first, second = await model.aget_query_embedding("foo"), await model.aget_query_embedding("bar")
    assert isinstance(first, list) and isinstance(first[0], float)
    assert len(first) > 0 and len(first) == len(second)
    np.testing.assert_allclose(first, model.get_query_embedding("foo"), atol=1e-6)


async def test_aget_text_embedding_batch(model: ManagedEmbedding) -> None:
    texts = ["foo bar", "bar foo", "foo", "x", "y"]
    with mock.patch.object(ManagedEmbedding, "_aget_text_embeddings", autospec=True,
                           side_effect=ManagedEmbedding._aget_text_embeddings) as spy:
        vectors = await model.aget_text_embedding_batch(texts)
    assert len(vectors) == len(texts) and all(len(v) == len(vectors[0]) for v in vectors)
    assert spy.call_count == -(-len(texts) // model.embed_batch_size)
    np.testing.assert_allclose(vectors, model.get_text_embedding_batch(texts), atol=1e-6)
    np.testing.assert_allclose(await model.aget_text_embedding("foo"), model.get_text_embedding("foo"), atol=1e-6)


def test_state_is_exposed(model: ManagedEmbedding) -> None:
    model.get_query_embedding("warm")
    assert model.active_tier in ("preferred", "bundled") and not model.degraded
    assert model.fingerprint.startswith("mc1-")
    status = model.status()
    assert status["active_tier"] == model.active_tier and status["tiers"][0]["name"] == "preferred"


def test_semantics_with_the_real_model(bundled_embedding: ManagedEmbedding) -> None:
    query = np.array(bundled_embedding.get_query_embedding("Where did I park my car?"))
    docs = np.array(bundled_embedding.get_text_embedding_batch(["The vehicle is in the garage on level 3.",
                                                                "Alice likes green tea."]))
    sims = docs @ query
    assert sims[0] > sims[1] + 0.2


def test_bad_input(tiny_model_dir: Path) -> None:
    emb = ManagedEmbedding(model=str(tiny_model_dir))
    assert emb.get_text_embedding_batch([]) == []
    assert len(emb.get_text_embedding("")) == 32
    with pytest.raises(TypeError, match="texts\\[0\\] is int"):
        emb.get_text_embedding_batch([3])


def test_vectors_know_their_space(model: ManagedEmbedding) -> None:
    vectors = [model.get_query_embedding("foo"), *model.get_text_embedding_batch(["foo", "bar"])]
    assert {v.fingerprint for v in vectors} == {model.fingerprint}


def test_no_model_raises_unless_degraded_vectors_are_allowed(tmp_path: Path) -> None:
    """No model of the space (offline, empty cache, bundled tier off): a bare embedding raises, naming the fix."""
    config = tmp_path / "no-model.yaml"
    config.write_text("offline: true\nfallback:\n  bundled: false\n")
    strict = ManagedEmbedding(config=str(config))
    with pytest.warns(EmbeddingSpaceWarning), pytest.raises(ModelUnavailableError, match="allow_degraded=True"):
        strict.get_query_embedding("where is the car?")
    with pytest.raises(ModelUnavailableError, match="ManagedVectorStore"):
        strict.get_text_embedding_batch(["a", "b"])
    loose = ManagedEmbedding(config=str(config), allow_degraded=True)
    with pytest.warns(EmbeddingSpaceWarning, match="left the embedding space"):
        vector = loose.get_text_embedding("where is the car?")
    assert len(vector) == 384 and vector.fingerprint == "keyword-hash-384" and loose.degraded
