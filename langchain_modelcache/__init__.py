"""LangChain integration of modelcache: managed embeddings, and a vector store whose memories
survive any model outage (the memory database is the truth; keyword search answers meanwhile).

    from langchain_modelcache import ManagedEmbeddings, ManagedVectorStore, FallbackRetriever

Importing this package loads only ``ManagedEmbeddings`` (and ``langchain_core.embeddings``);
``ManagedVectorStore`` and ``FallbackRetriever`` are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .embeddings import ManagedEmbeddings

if TYPE_CHECKING:
    from .retrievers import FallbackRetriever
    from .vectorstores import ManagedVectorStore

_LAZY = {"ManagedVectorStore": ".vectorstores", "FallbackRetriever": ".retrievers"}

__all__ = ["FallbackRetriever", "ManagedEmbeddings", "ManagedVectorStore"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
