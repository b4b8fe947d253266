"""What the memory engine and its adapters exchange: query modes, hits with their scores, sync
reports, and the :class:`InnerStore` protocol an adapter implements over its framework's store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from modelcache.memory.db import Memory

Mode = Literal["auto", "vector", "keyword", "hybrid"]
How = Literal["vector", "keyword", "hybrid"]
MODES = ("auto", "vector", "keyword", "hybrid")
#: metadata key holding the memory id in the inner store (for stores whose documents carry no id)
ID_KEY = "memory_id"


class InnerStore(Protocol):
    """What the engine needs from the adapter's vector store (the adapter wraps its framework's)."""

    def write(self, memories: list[Memory]) -> str | None:
        """Put these memories into the store (replacing any with the same ids), embedded by the
        adapter's managed embeddings; return the fingerprint of the vectors written (None: unknown).
        Raise (e.g. :class:`ModelUnavailableError`) to leave them pending."""
        ...

    def delete(self, ids: list[str]) -> None:
        """Remove these ids from the store; ids it does not hold are ignored."""
        ...

    def search(self, vector: list[float], k: int) -> list[tuple[str, float]]:
        """The store's ``k`` nearest memories to ``vector``: ``(id, relevance in [0, 1])``, best first."""
        ...


@dataclass
class Hit:
    """One memory found for a query: its row from the database, how it was found, its score."""

    memory: Memory
    score: float
    how: How

    @property
    def id(self) -> str:
        return self.memory.id


@dataclass
class SyncReport:
    """What one :meth:`MemoryEngine.sync` did."""

    fingerprint: str | None
    written: int = 0
    replaced: int = 0
    pending: int = 0
    seconds: float = 0.0
    skipped: str | None = None
    errors: list[str] = field(default_factory=list)


def keyword_score(bm25: float) -> float:
    """FTS5 BM25 (> 0, unbounded) -> (0, 1): ``s / (1 + s)``."""
    return bm25 / (1.0 + bm25) if bm25 > 0 else 0.0


__all__ = ["ID_KEY", "MODES", "Hit", "How", "InnerStore", "Mode", "SyncReport", "keyword_score"]
