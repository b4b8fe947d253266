"""LlamaIndex integration of modelcache: a managed embedding model and a memory retriever
that keeps answering (BM25) when the embedding model is missing or changed.

    from llamaindex_modelcache import ManagedEmbedding, FallbackRetriever
"""

from __future__ import annotations

from .embeddings import ManagedEmbedding
from .retrievers import FallbackRetriever

__all__ = ["ManagedEmbedding", "FallbackRetriever"]
