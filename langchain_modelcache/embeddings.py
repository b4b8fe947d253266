"""``ManagedEmbeddings``: a LangChain ``Embeddings`` over modelcache's fallback chain.

A thin adapter: every call goes to one :class:`modelcache.fallback.EmbeddingService`, created
on the first embed (constructing this class loads nothing and imports no torch).
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from modelcache.fallback import EmbeddingService
from modelcache.memory import ServiceHandle

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class ManagedEmbeddings(ServiceHandle, BaseModel, Embeddings):
    """Embeddings from a managed model, falling back (same space → bundled → keyword) when needed.

    Example:
        ```python
        from langchain_modelcache import ManagedEmbeddings

        embeddings = ManagedEmbeddings(model="all-MiniLM-L6-v2")
        vector = embeddings.embed_query("where did I park?")
        embeddings.active_model, embeddings.degraded, embeddings.fingerprint
        ```

    ``None`` fields mean "as configured" (modelcache settings: env vars, config file, profile).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=(),
                              use_attribute_docstrings=True)

    model_name: str = Field(default=DEFAULT_MODEL, alias="model")
    """Registry name or alias, Hub repo id (``org/name``) or local model directory."""

    revision: str | None = None
    """Branch, tag or commit of the preferred model. None: the registry's (``main``)."""

    fallback_models: list[str] | None = None
    """Models to try after the preferred one (``"bundled"`` and ``"keyword"`` allowed). None: ``fallback.models``."""

    fallback_strategy: Literal["auto", "manual", "strict"] | None = None
    """auto: whole chain; manual: only the listed tiers; strict: never degrade, raise instead."""

    backend: Literal["torch", "onnx", "auto"] | None = None
    """Inference backend. None: ``embedding.backend``."""

    device: str | None = None
    """Torch device (``cpu``, ``cuda``...). None: ``embedding.device``."""

    cache_dir: str | None = None
    """Hub-layout model cache. None: MODELCACHE_CACHE_DIR / HF_HUB_CACHE / HF_HOME."""

    endpoints: list[str] | None = None
    """Hub endpoints or mirrors, tried in order. None: MODELCACHE_ENDPOINTS / HF_ENDPOINT / huggingface.co."""

    normalize: bool | None = None
    """L2-normalise vectors. None: the registry's setting for the model (true for all built-ins)."""

    batch_size: int | None = Field(default=None, ge=1, le=4096)
    """Texts per forward pass. None: ``embedding.batch_size``."""

    offline: bool | None = None
    """Never touch the network. None: MODELCACHE_OFFLINE / HF_HUB_OFFLINE."""

    query_prompt: str | None = None
    """Prefix for queries, overriding the registry's (e5: ``"query: "``). Part of the fingerprint."""

    document_prompt: str | None = None
    """Prefix for documents, overriding the registry's (e5: ``"passage: "``). Part of the fingerprint."""

    config: str | None = None
    """A modelcache YAML config file for everything else. None: MODELCACHE_CONFIG."""

    # service, active_tier, active_model, fingerprint, degraded and status() come from ServiceHandle
    _service: EmbeddingService | None = PrivateAttr(default=None)
    _service_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def _embed(self, texts: list[str], kind: str) -> list[list[float]]:
        return self.service.embed(texts, kind).tolist()

    # -- LangChain API ------------------------------------------------------------------
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (the registry's document prompt applied)."""
        return self._embed(texts, "document")

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (the registry's query prompt applied)."""
        return self._embed([_one(text)], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Like :meth:`embed_documents`, computed in a worker thread."""
        return (await self.service.aembed(texts, "document")).tolist()

    async def aembed_query(self, text: str) -> list[float]:
        """Like :meth:`embed_query`, computed in a worker thread."""
        return (await self.service.aembed([_one(text)], "query")).tolist()[0]


def _one(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return text


__all__ = ["ManagedEmbeddings"]
