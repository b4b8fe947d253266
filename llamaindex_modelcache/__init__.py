"""LlamaIndex integration of modelcache: a managed embedding model, and a vector store whose truth
is the memory database (it keeps answering, by keyword, when the embedding model is missing).

    from llamaindex_modelcache import ManagedEmbedding, ManagedVectorStore

    store = ManagedVectorStore(inner_vector_store, memory_dir="memory/")
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)

``ManagedVectorStore`` and ``FallbackRetriever`` are imported on first use (importing this
package loads no vector store, no retriever and no model).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .embeddings import ManagedEmbedding

if TYPE_CHECKING:
    from .retrievers import FallbackRetriever
    from .vector_stores import ManagedVectorStore

_LAZY = {"ManagedVectorStore": ".vector_stores", "FallbackRetriever": ".retrievers"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["ManagedEmbedding", "ManagedVectorStore", "FallbackRetriever"]
