"""LangChain integration of modelcache: managed embeddings and a memory retriever that
keeps answering (BM25) when the embedding model is missing or changed.

    from langchain_modelcache import ManagedEmbeddings, FallbackRetriever
"""

from __future__ import annotations

from .embeddings import ManagedEmbeddings
from .retrievers import FallbackRetriever

__all__ = ["ManagedEmbeddings", "FallbackRetriever"]
