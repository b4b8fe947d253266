"""``ManagedEmbedding``: a LlamaIndex ``BaseEmbedding`` over modelcache's fallback chain.

A thin adapter: every call goes to one :class:`modelcache.fallback.EmbeddingService`, created
on the first embed (constructing this class loads nothing and imports no torch). Batches
arrive through ``_get_text_embeddings`` / ``_aget_text_embeddings`` (``embed_batch_size``
texts at a time) and go to the model as one batch.
"""

from __future__ import annotations

import threading
from typing import List, Literal, Optional

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import ConfigDict, Field, PrivateAttr

from modelcache.fallback import EmbeddingService
from modelcache.memory import ServiceHandle

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class ManagedEmbedding(ServiceHandle, BaseEmbedding):
    """Embeddings from a managed model, falling back (same space → bundled → keyword) when needed.

    Example:
        ```python
        from llama_index.core import Settings
        from llamaindex_modelcache import ManagedEmbedding

        Settings.embed_model = ManagedEmbedding(model="all-MiniLM-L6-v2")
        ```

    ``None`` fields mean "as configured" (modelcache settings: env vars, config file, profile).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=(),
                              use_attribute_docstrings=True)

    model_name: str = Field(default=DEFAULT_MODEL, alias="model")
    """Registry name or alias, Hub repo id (``org/name``) or local model directory."""

    embed_batch_size: int = Field(default=32, gt=0, le=2048)
    """Texts LlamaIndex hands over per ``_get_text_embeddings`` call."""

    revision: Optional[str] = None
    """Branch, tag or commit of the preferred model. None: the registry's (``main``)."""

    fallback_models: Optional[List[str]] = None
    """Models to try after the preferred one (``"bundled"`` and ``"keyword"`` allowed). None: ``fallback.models``."""

    fallback_strategy: Optional[Literal["auto", "manual", "strict"]] = None
    """auto: whole chain; manual: only the listed tiers; strict: never degrade, raise instead."""

    backend: Optional[Literal["torch", "onnx", "auto"]] = None
    """Inference backend. None: ``embedding.backend``."""

    device: Optional[str] = None
    """Torch device (``cpu``, ``cuda``...). None: ``embedding.device``."""

    cache_dir: Optional[str] = None
    """Hub-layout model cache. None: MODELCACHE_CACHE_DIR / HF_HUB_CACHE / HF_HOME."""

    endpoints: Optional[List[str]] = None
    """Hub endpoints or mirrors, tried in order. None: MODELCACHE_ENDPOINTS / HF_ENDPOINT / huggingface.co."""

    normalize: Optional[bool] = None
    """L2-normalise vectors. None: the registry's setting for the model (true for all built-ins)."""

    batch_size: Optional[int] = Field(default=None, ge=1, le=4096)
    """Texts per forward pass. None: ``embedding.batch_size``."""

    offline: Optional[bool] = None
    """Never touch the network. None: MODELCACHE_OFFLINE / HF_HUB_OFFLINE."""

    query_prompt: Optional[str] = None
    """Prefix for queries, overriding the registry's (e5: ``"query: "``). Part of the fingerprint."""

    document_prompt: Optional[str] = None
    """Prefix for documents, overriding the registry's (e5: ``"passage: "``). Part of the fingerprint."""

    config: Optional[str] = None
    """A modelcache YAML config file for everything else. None: MODELCACHE_CONFIG."""

    # service, active_tier, active_model, fingerprint, degraded and status() come from ServiceHandle
    _service: Optional[EmbeddingService] = PrivateAttr(default=None)
    _service_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "ModelCacheManagedEmbedding"

    def _embed(self, texts: List[str], kind: str) -> List[Embedding]:
        return self.service.embed(texts, kind).tolist()

    async def _aembed(self, texts: List[str], kind: str) -> List[Embedding]:
        return (await self.service.aembed(texts, kind)).tolist()

    # -- LlamaIndex API -----------------------------------------------------------------
    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query], "query")[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._aembed([query], "query"))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text], "document")[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aembed([text], "document"))[0]

    def _get_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        return self._embed(texts, "document")

    async def _aget_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        return await self._aembed(texts, "document")


__all__ = ["ManagedEmbedding"]
