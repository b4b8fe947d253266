"""``ManagedEmbeddings``: a LangChain ``Embeddings`` over modelcache's fallback chain.

A thin adapter: every call goes to one :class:`modelcache.serving.service.EmbeddingService`, created
on the first embed (constructing this class loads nothing and imports no torch).
"""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, Field, model_validator

from modelcache.serving.handle import ServiceHandle
from modelcache.serving.peer_args import LANGCHAIN_PEER_ARGS, translate_langchain, unknown

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class ManagedEmbeddings(ServiceHandle, Embeddings):
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

    @model_validator(mode="before")
    @classmethod
    def _peer_arguments(cls, data: Any) -> Any:
        """``HuggingFaceEmbeddings``' arguments work here, with its meaning (see the README's table)."""
        if not isinstance(data, dict):
            return data
        data = translate_langchain(data)
        known = set(cls.model_fields) | {"model"}
        for key in data:
            if key not in known:
                raise unknown(key, known | LANGCHAIN_PEER_ARGS)
        return data

    # revision, fallback_models, ..., config: the shared options (modelcache.serving.options.EmbeddingOptions);
    # service, active_tier, active_model, fingerprint, degraded and status() come from ServiceHandle

    def _embed(self, texts: list[str], kind: str) -> list[list[float]]:
        return self._vectors(texts, kind).tolist()

    # -- LangChain API ------------------------------------------------------------------
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (the registry's document prompt applied)."""
        return self._embed(texts, "document")

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (the registry's query prompt applied)."""
        return self._embed([_one(text)], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Like :meth:`embed_documents`, computed in a worker thread."""
        return (await self._avectors(texts, "document")).tolist()

    async def aembed_query(self, text: str) -> list[float]:
        """Like :meth:`embed_query`, computed in a worker thread."""
        return (await self._avectors([_one(text)], "query")).tolist()[0]


def _one(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return text


__all__ = ["ManagedEmbeddings"]
