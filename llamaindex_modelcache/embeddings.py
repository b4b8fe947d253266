"""``ManagedEmbedding``: a LlamaIndex ``BaseEmbedding`` over modelcache's fallback chain.

A thin adapter: every call goes to one :class:`modelcache.serving.service.EmbeddingService`, created
on the first embed (constructing this class loads nothing and imports no torch). Batches
arrive through ``_get_text_embeddings`` / ``_aget_text_embeddings`` (``embed_batch_size``
texts at a time) and go to the model as one batch.
"""

from __future__ import annotations

from typing import Any, List

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import ConfigDict, Field, model_validator

from modelcache.serving.handle import ServiceHandle, SpaceVector
from modelcache.serving.peer_args import translate_llamaindex

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

    @model_validator(mode="before")
    @classmethod
    def _peer_arguments(cls, data: Any) -> Any:
        """``HuggingFaceEmbedding``'s arguments work here, with its meaning (see the README's table)."""
        if not isinstance(data, dict):
            return data
        return translate_llamaindex(data, set(cls.model_fields))

    # revision, fallback_models, ..., config: the shared options (modelcache.serving.options.EmbeddingOptions);
    # service, active_tier, active_model, fingerprint, degraded and status() come from ServiceHandle

    @classmethod
    def class_name(cls) -> str:
        return "ModelCacheManagedEmbedding"

    def _embed(self, texts: List[str], kind: str) -> List[Embedding]:
        vectors = self._vectors(texts, kind)
        return [SpaceVector(v, self.last_fingerprint) for v in vectors.tolist()]

    async def _aembed(self, texts: List[str], kind: str) -> List[Embedding]:
        vectors = await self._avectors(texts, kind)
        return [SpaceVector(v, self.last_fingerprint) for v in vectors.tolist()]

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
