"""The :class:`Encoder` protocol every backend implements."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np

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
