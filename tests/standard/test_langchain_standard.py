"""LangChain's standard suites: embeddings against a tiny local model and the real bundled one, and
the vector store suite against ``ManagedVectorStore`` (over InMemory and a persisted Chroma).

``EmbeddingsUnitTests`` builds the class from ``embedding_model_params`` (construction is lazy,
so it loads nothing); ``EmbeddingsIntegrationTests`` embeds for real through the ``model``
fixture. ``VectorStoreIntegrationTests`` compares returned Documents for equality, so those
stores run with ``annotate=False`` (no ``memory_search`` / ``memory_score`` in the metadata).
The extra tests below pin down behaviour the suites do not cover.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from langchain_core.vectorstores import InMemoryVectorStore, VectorStore
from langchain_tests.integration_tests import EmbeddingsIntegrationTests, VectorStoreIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests
from pydantic import ValidationError

from langchain_modelcache import ManagedEmbeddings, ManagedVectorStore


@pytest.fixture(scope="module")
def bundled_embeddings(tmp_path_factory: pytest.TempPathFactory) -> ManagedEmbeddings:
    """The default model with no network: the chain installs the bundled copy (shared by the module)."""
    return ManagedEmbeddings(model="all-MiniLM-L6-v2", offline=True,
                             cache_dir=str(tmp_path_factory.mktemp("lc-bundled-cache")))


class TestManagedEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[ManagedEmbeddings]:
        return ManagedEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": "all-MiniLM-L6-v2", "offline": True, "fallback_strategy": "auto"}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return {"MODELCACHE_OFFLINE": "1"}, {"model": "minilm"}, {"model_name": "minilm"}


class TestTinyModelIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[ManagedEmbeddings]:
        return ManagedEmbeddings

    @pytest.fixture
    def model(self, tiny_model_dir: Path) -> ManagedEmbeddings:
        return ManagedEmbeddings(model=str(tiny_model_dir), fallback_strategy="strict")

    def test_tiny_model_is_really_used(self, model: ManagedEmbeddings) -> None:
        assert len(model.embed_query("hello")) == 32
        assert model.active_tier == "preferred" and not model.degraded


class TestBundledModelIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[ManagedEmbeddings]:
        return ManagedEmbeddings

    @pytest.fixture
    def model(self, bundled_embeddings: ManagedEmbeddings) -> ManagedEmbeddings:
        return bundled_embeddings

    def test_bundled_is_the_default_model_offline(self, model: ManagedEmbeddings) -> None:
        vector = model.embed_query("Hello world")
        assert len(vector) == 384 and abs(np.linalg.norm(vector) - 1) < 1e-5
        assert model.active_tier in ("bundled", "preferred") and not model.degraded
        assert model.fingerprint.startswith("mc1-")

    def test_semantics(self, model: ManagedEmbeddings) -> None:
        query = np.array(model.embed_query("Where did I park my car?"))
        docs = np.array(model.embed_documents(["The vehicle is in the garage on level 3.",
                                               "Alice likes green tea."]))
        sims = docs @ query
        assert sims[0] > sims[1] + 0.2


@pytest.fixture(scope="module")
def tiny_embeddings(tiny_model_dir: Path) -> ManagedEmbeddings:
    return ManagedEmbeddings(model=str(tiny_model_dir), fallback_strategy="strict")


class TestManagedVectorStoreInMemory(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tiny_embeddings: ManagedEmbeddings, tmp_path: Path) -> Iterator[VectorStore]:
        store = ManagedVectorStore(InMemoryVectorStore(tiny_embeddings), tmp_path / "memory", annotate=False)
        try:
            yield store
        finally:
            store.close()


class TestManagedVectorStoreChroma(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tiny_embeddings: ManagedEmbeddings, tmp_path: Path) -> Iterator[VectorStore]:
        chroma = pytest.importorskip("langchain_chroma")
        inner = chroma.Chroma(f"standard-{tmp_path.name}", tiny_embeddings, persist_directory=str(tmp_path / "chroma"))
        store = ManagedVectorStore(inner, tmp_path / "memory", annotate=False)
        try:
            yield store
        finally:
            store.close()


# -- behaviour beyond the standard suites -----------------------------------------------------


def test_construction_is_lazy_and_cheap() -> None:
    emb = ManagedEmbeddings(model="no/such-model")  # nothing resolved or loaded yet
    assert emb.active_tier is None and emb.fingerprint is None and emb.degraded is False
    assert emb._service is None


def test_fields_alias_and_forbid_extra() -> None:
    assert ManagedEmbeddings(model="minilm").model_name == "minilm"
    assert ManagedEmbeddings(model_name="minilm").model_name == "minilm"
    with pytest.raises(ValidationError):
        ManagedEmbeddings(modle="typo")
    with pytest.raises(ValidationError):
        ManagedEmbeddings(fallback_strategy="sometimes")
    assert "Torch device" in ManagedEmbeddings.model_fields["device"].description  # attribute docstrings


def test_bad_input(tiny_model_dir: Path) -> None:
    emb = ManagedEmbeddings(model=str(tiny_model_dir))
    assert emb.embed_documents([]) == []
    assert len(emb.embed_documents([""])[0]) == 32  # the empty string is a text like any other
    with pytest.raises(TypeError, match="texts\\[1\\] is int"):
        emb.embed_documents(["ok", 3])
    with pytest.raises(TypeError, match="single str"):
        emb.embed_documents("not a list")
    with pytest.raises(TypeError, match="must be a str"):
        emb.embed_query(None)


async def test_async_matches_sync(tiny_model_dir: Path) -> None:
    emb = ManagedEmbeddings(model=str(tiny_model_dir))
    texts = ["one memory", "another memory"]
    np.testing.assert_allclose(await emb.aembed_documents(texts), emb.embed_documents(texts), atol=1e-6)
    np.testing.assert_allclose(await emb.aembed_query("q"), emb.embed_query("q"), atol=1e-6)


def test_query_prompt_override_changes_the_space(tiny_model_dir: Path) -> None:
    plain = ManagedEmbeddings(model=str(tiny_model_dir))
    prompted = ManagedEmbeddings(model=str(tiny_model_dir), query_prompt="query: ")
    assert not np.allclose(plain.embed_query("hello"), prompted.embed_query("hello"))
    np.testing.assert_allclose(plain.embed_query("query: hello"), prompted.embed_query("hello"), atol=1e-6)
    assert plain.fingerprint != prompted.fingerprint


def test_no_torch_until_first_embed() -> None:
    import subprocess

    code = ("import sys; from langchain_modelcache import ManagedEmbeddings, FallbackRetriever; "
            "e = ManagedEmbeddings(); e.status(); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
