"""The :class:`Encoder` protocol every backend implements, and :class:`ModelDir`, what a backend loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from modelcache.registry import ModelSpec

Kind = Literal["query", "document"]


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into vectors. ``kind`` selects the registry's query/document prompt."""

    dims: int
    fingerprint: str
    name: str

    def encode(self, texts: list[str], kind: Kind = "document") -> np.ndarray:
        """Return a float32 array of shape (len(texts), dims)."""
        ...


@dataclass
class ModelDir:
    """A model's files on disk as a backend sees them: its spec, the snapshot's commit, the directory."""

    spec: ModelSpec
    commit: str
    path: Path
