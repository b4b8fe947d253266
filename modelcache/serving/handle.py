"""The part of both adapters' embeddings classes that is not framework API: the lazily created
:class:`~modelcache.serving.service.EmbeddingService` and what the chain is doing.
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import PrivateAttr

from modelcache.serving.options import OPTION_FIELDS, EmbeddingOptions
from modelcache.serving.service import EmbeddingService


class ServiceHandle(EmbeddingOptions):
    """Base of both adapters' embeddings classes: their shared options, the service they delegate
    to, and its state. The class that inherits it provides ``model_name``."""

    model_name: str
    """Registry name or alias, Hub repo id (``org/name``) or local model directory (each adapter sets its default)."""

    _service: EmbeddingService | None = PrivateAttr(default=None)
    _service_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def service(self) -> EmbeddingService:
        """The fallback chain this object delegates to (created on first use)."""
        if self._service is None:
            with self._service_lock:
                if self._service is None:
                    options = {name: getattr(self, name) for name in OPTION_FIELDS}
                    self._service = EmbeddingService.from_options(model=self.model_name, **options)
        return self._service

    @property
    def active_tier(self) -> str | None:
        """"preferred", "fallback:<model>", "bundled" or "keyword"; None before the first embed."""
        return self._service.active_tier if self._service else None

    @property
    def active_model(self) -> str | None:
        """The model giving vectors now; None before the first embed."""
        return self._service.active_model if self._service else None

    @property
    def fingerprint(self) -> str | None:
        """The embedding space of the vectors given now; None before the first embed."""
        return self._service.fingerprint if self._service else None

    @property
    def degraded(self) -> bool:
        """True in keyword mode or on a model outside the preferred model's space."""
        return self._service.degraded if self._service else False

    def status(self) -> dict[str, Any]:
        """Every tier with ok / reason / last failure, the active one, and counters."""
        return self.service.status()
