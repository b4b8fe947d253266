"""Health for readiness and liveness probes: ``ok`` / ``degraded`` / ``failed`` with reasons.

Cheap by design (no network, no model load; files are trusted by their stat stamps inside
``validation_interval``), so a probe can call it every few seconds:

- liveness: the cache directory can be read.
- readiness: that, disk space, the budget, and the fallback chain as
  :class:`~modelcache.serving.service.EmbeddingService` plans it — which tier would serve right now
  and why. Serving from a model in the same embedding space as the preferred one (the bundled
  MiniLM for all-MiniLM-L6-v2) is ``ok``; another space or keyword mode is ``degraded``; no
  tier at all (under ``strict`` only same-space tiers count) is ``failed``.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from modelcache import metrics

if TYPE_CHECKING:
    from modelcache.manager import ModelManager

log = logging.getLogger("modelcache")

OK, DEGRADED, FAILED = "ok", "degraded", "failed"
_RANK = {OK: 0, DEGRADED: 1, FAILED: 2}
KEYWORD_TIER = "keyword"


def worst(statuses: list[str]) -> str:
    return max(statuses, key=_RANK.__getitem__, default=OK)


@dataclass
class Check:
    name: str
    status: str
    detail: str = ""
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(checks: list[Check]) -> dict:
    """The probe answer: overall status, every check, and the reasons for anything not ok."""
    status = worst([c.status for c in checks])
    return {"status": status, "checks": [c.to_dict() for c in checks],
            "reasons": [f"{c.name}: {c.detail}" for c in checks if c.status != OK]}


# -- single checks ------------------------------------------------------------------------
def check_cache(mgr: ModelManager) -> Check:
    root = mgr.store.root
    mode = "read-only" if mgr.store.read_only else "writable"
    if not root.exists():
        if mgr.store.read_only:
            return Check("cache", FAILED, f"{root} does not exist and cannot be created (read-only)")
        return Check("cache", OK, f"{root} is empty (created on first pull)", {"path": str(root), "mode": mode})
    if not os.access(root, os.R_OK | os.X_OK):
        return Check("cache", FAILED, f"{root} cannot be read")
    repos = mgr.store.repos()
    return Check("cache", OK, f"{root} ({mode}), {sum(1 for r in repos if r.commits)} models, "
                 f"{sum(r.size for r in repos) / 1e6:.1f} MB",
                 {"path": str(root), "mode": mode, "models": sum(1 for r in repos if r.commits),
                  "size": sum(r.size for r in repos)})


def check_disk(mgr: ModelManager, low_bytes: int = 1024**3) -> Check:
    """Free space where the cache lives: failed below the download margin, degraded below 1 GiB."""
    if mgr.store.read_only:
        return Check("disk", OK, "read-only cache: nothing is written")
    probe = mgr.store.root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    margin = mgr.settings.download.disk_margin_mb * 1024 * 1024
    data = {"free": free, "path": str(probe)}
    if free < margin:
        return Check("disk", FAILED, f"{free / 1e6:.0f} MB free, below download.disk_margin_mb", data)
    if free < low_bytes:
        return Check("disk", DEGRADED, f"only {free / 1e6:.0f} MB free", data)
    return Check("disk", OK, f"{free / 1e9:.1f} GB free", data)


def check_budget(mgr: ModelManager) -> Check:
    from modelcache.cache.budget import plan

    mc = mgr.settings.model_cache
    if mc.max_size_gb is None and mc.max_models is None and mc.max_idle_days is None:
        return Check("budget", OK, "no budget set")
    p = plan(mgr, housekeeping=False)
    data = {"size": p.size_before, "max_bytes": p.max_bytes, "models": p.models_before, "max_models": p.max_models}
    idle = [e["repo_id"] for e in p.evict if str(e.get("reason", "")).startswith("unused")]
    if p.over_budget or len(idle) < len(p.evict):
        return Check("budget", DEGRADED, "over budget; run `modelcache prune --yes`"
                     + (f" ({p.reason})" if p.reason else ""), data)
    note = f"; {len(idle)} unused past max_idle_days (`modelcache prune --yes` removes them)" if idle else ""
    return Check("budget", OK, f"{p.size_before / 1e6:.1f} MB, {p.models_before} models within budget{note}", data)


# -- the fallback chain -------------------------------------------------------------------
def planned_tiers(mgr: ModelManager) -> list[dict]:
    """The chain as the runtime plans it: :class:`modelcache.serving.service.EmbeddingService`'s
    tiers (strategy, same-space and dims rules applied), best first."""
    from modelcache.serving.service import EmbeddingService

    service = EmbeddingService(mgr.settings, manager=mgr, background_recovery=False)
    return [{"tier": t.name, "kind": t.kind, "model": t.model, "enabled": t.enabled and t.ok is not False,
             "same_space": t.same_space, "reason": t.reason} for t in service.tiers]


def tier_state(mgr: ModelManager, name: str, verify: bool = True) -> dict:
    """Whether one model could serve now, with the reason; no network, no load."""
    if name == KEYWORD_TIER:
        return {"available": True, "reason": "BM25 keyword mode is always available"}
    try:
        spec = mgr.spec(name)
    except (KeyError, ValueError) as exc:
        return {"available": False, "reason": str(exc)}
    state: dict[str, Any] = {"repo_id": spec.repo_id, "dims": spec.dims}
    if spec.source != "hub":
        local = spec.local_dir
        ok = local is not None and local.is_dir()
        return state | {"available": ok, "reason": f"files at {local}" if ok else f"{spec.source} is not installed"}
    hit = mgr.puller.cached(spec)
    if hit is None:
        why = "not in the cache"
        if not (mgr.settings.offline or mgr.store.read_only):
            why += "; it would be pulled on first use"
        return state | {"available": False, "reason": why}
    state["commit"] = hit.commit
    if verify:
        report = mgr.verify(spec)
        if not report.ok:
            path, why = next(iter(report.failures.items()))
            return state | {"available": False, "reason": f"verification failed: {path}: {why}"}
    return state | {"available": True, "reason": f"cached at {hit.commit[:12]}" + (", verified" if verify else "")}


def check_models(mgr: ModelManager, verify: bool = True) -> tuple[Check, list[dict]]:
    """Which tier would serve right now, and whether that is ok, degraded or failed."""
    tiers = []
    for t in planned_tiers(mgr):
        state = tier_state(mgr, t["model"], verify) if t["enabled"] else {
            "available": False, "reason": t["reason"] or "disabled"}
        tiers.append(t | state)
    preferred = tiers[0]["model"] if tiers else mgr.settings.model
    active = next((t for t in tiers if t["available"]), None)
    skipped = "; ".join(f"{t['model']}: {t['reason']}" for t in tiers if not t["available"])
    data = {"active": active["model"] if active else None, "active_tier": active["tier"] if active else None,
            "tiers": tiers}
    if active is None:
        strict = " (strategy strict)" if mgr.settings.fallback.strategy == "strict" else ""
        return Check("models", FAILED, f"no tier can serve{strict} ({skipped})", data), tiers
    if active is tiers[0]:
        return Check("models", OK, f"{preferred}: {active['reason']}", data), tiers
    if active["same_space"]:
        return Check("models", OK, f"{active['model']} serves (same embedding space as {preferred}; {skipped})",
                     data), tiers
    return Check("models", DEGRADED, f"{active['model']} serves instead of {preferred} ({skipped})", data), tiers


def health(mgr: ModelManager, probe: str = "readiness", verify: bool = True) -> dict:
    """``{"status": ok|degraded|failed, "checks": [...], "reasons": [...]}`` for a probe.

    ``probe="liveness"`` only checks that the cache can be read; ``"readiness"`` adds disk,
    budget and the model chain. Also sets the ``modelcache_degraded`` gauge when metrics are on.
    """
    checks = [check_cache(mgr)]
    if probe != "liveness":
        checks += [check_disk(mgr), check_budget(mgr), check_models(mgr, verify)[0]]
    out = summarize(checks) | {"probe": probe}
    metrics.set_degraded(out["status"] != OK)
    return out


def liveness(mgr: ModelManager) -> dict:
    return health(mgr, "liveness")


def readiness(mgr: ModelManager) -> dict:
    return health(mgr, "readiness")


__all__ = ["health", "liveness", "readiness", "planned_tiers", "tier_state", "check_models", "check_cache",
           "check_disk",
           "check_budget", "summarize", "worst", "Check", "OK", "DEGRADED", "FAILED"]
