"""``modelcache doctor``: everything :mod:`modelcache.ops.health` checks, and the slow parts too.

Adds to the readiness checks: the integrity of every cached model, whether each endpoint
answers (short timeout), whether a token is configured (never its value), and a real model
load with a test embedding. Exit codes: 0 ok, 1 failed, 2 degraded.

Read-only unless ``repair``: the checks run on a read-only view of the cache (no quarantine, no
metadata, no install, no ONNX export into the cache); a bundled model that is not in the cache is
loaded where its package is. ``repair=True`` (``modelcache doctor --repair``) lets them write:
bad files are quarantined, the bundled model is installed, stamps are recorded.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub.utils import build_hf_headers, get_session

from modelcache.ops.health import (
    DEGRADED,
    FAILED,
    KEYWORD_TIER,
    OK,
    Check,
    check_budget,
    check_cache,
    check_disk,
    check_models,
    summarize,
)

if TYPE_CHECKING:
    from modelcache.manager import ModelManager

log = logging.getLogger("modelcache")

EXIT_CODES = {OK: 0, FAILED: 1, DEGRADED: 2}


def read_only_view(mgr: ModelManager) -> ModelManager:
    """The same settings and registry over the same cache, with ``model_cache.read_only`` on."""
    from modelcache.manager import ModelManager

    settings = mgr.settings.model_copy(deep=True)
    settings.model_cache.read_only = True
    return ModelManager(settings, mgr.registry)


def check_integrity(mgr: ModelManager, write: bool = True) -> list[Check]:
    """Verify every cached repo (files stat-trusted within ``validation_interval``; re-hash
    everything with ``modelcache verify --full``)."""
    out = []
    for repo in mgr.store.repos():
        if not repo.commits:
            continue
        try:
            spec = mgr.spec(repo.repo_id)
            report = mgr.verify(spec, write=write)
        except Exception as exc:  # noqa: BLE001 - one broken repo must not hide the others
            out.append(Check(f"integrity:{repo.repo_id}", FAILED, f"{type(exc).__name__}: {exc}"))
            continue
        if report.ok:
            out.append(Check(f"integrity:{repo.repo_id}", OK, f"{len(report.checked)} files ok, "
                             f"{len(report.hashed)} hashed", {"commit": report.commit}))
        else:
            failures = "; ".join(f"{p}: {report.status.get(p, '?')}: {why}" for p, why in report.failures.items())
            out.append(Check(f"integrity:{repo.repo_id}", FAILED, failures + (
                f" (quarantined: {', '.join(report.quarantined)}; `modelcache pull` fetches them again)"
                if report.quarantined else "" if write else " (`modelcache doctor --repair` quarantines them; "
                "`modelcache pull` fetches them again)"), report.to_dict()))
    return out


def check_endpoint(mgr: ModelManager, endpoint: str, timeout: float) -> Check:
    """One endpoint: does it answer for the configured model within ``timeout`` seconds?"""
    spec = mgr.spec(mgr.settings.model)
    repo_id, revision = spec.repo_id, spec.revision
    from modelcache.origins import redact_url, token_for

    url = f"{endpoint.rstrip('/')}/api/models/{repo_id}/revision/{revision}"
    shown, url_shown = redact_url(endpoint), redact_url(url)
    t0 = time.perf_counter()
    try:
        response = get_session().get(url, headers=build_hf_headers(token=token_for(mgr.settings, endpoint)),
                                     timeout=timeout, follow_redirects=True)
    except Exception as exc:  # noqa: BLE001 - any transport failure means unreachable
        return Check(f"endpoint:{shown}", DEGRADED, f"unreachable ({type(exc).__name__}: "
                     f"{str(exc).splitlines()[0][:200] if str(exc) else ''})", {"url": url_shown})
    ms = round((time.perf_counter() - t0) * 1000)
    data = {"url": url_shown, "status_code": response.status_code, "ms": ms}
    if response.status_code < 300:
        return Check(f"endpoint:{shown}", OK, f"answers in {ms} ms", data)
    hint = " (check the token or the model id)" if response.status_code in (401, 403, 404) else ""
    return Check(f"endpoint:{shown}", DEGRADED, f"reachable but {repo_id}@{revision} answered HTTP "
                 f"{response.status_code}{hint}", data)


def token_source(mgr: ModelManager) -> str | None:
    """Where the token comes from (never its value)."""
    if mgr.settings.token is None:
        return None
    for name in ("MODELCACHE_TOKEN", "HF_TOKEN"):
        if os.environ.get(name):
            return f"environment ({name})"
    return "config file"


def check_token(mgr: ModelManager) -> Check:
    source = token_source(mgr)
    if source:
        return Check("token", OK, f"present, from the {source}", {"present": True, "source": source})
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    stored = Path(hf_home).expanduser() / "token"
    if stored.is_file():
        return Check("token", OK, f"none in settings; huggingface_hub's stored token {stored} exists",
                     {"present": False, "stored_token_file": True})
    return Check("token", OK, "absent (fine for public models; set HF_TOKEN for gated/private ones)",
                 {"present": False})


def check_load(mgr: ModelManager, tier: str) -> Check:
    """Load the tier's model and embed "Hello world": finite, and of the expected dims. On a
    read-only view a bundled model that is not in the cache is loaded from its package (not installed)."""
    if tier == KEYWORD_TIER:
        return Check("load", DEGRADED, "only keyword mode can serve: no model to load")
    t0 = time.perf_counter()
    try:
        spec = mgr.spec(tier)
        hit = mgr.puller.cached(spec)
        in_place = mgr.store.read_only and spec.local_dir is not None and hit is None
        note = _no_export(mgr, spec, spec.local_dir if in_place else hit.snapshot if hit else None)
        if in_place:
            result = _load_in_place(mgr, spec)
        else:
            local = mgr.ensure(spec, download=False)
            result = mgr.functional_check(spec, local.commit)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return Check("load", FAILED, f"{tier}: {type(exc).__name__}: {exc}")
    seconds = round(time.perf_counter() - t0, 2)
    return Check("load", OK, f"{tier} loaded and embedded 'Hello world' ({result['dims']} dims) in {seconds}s"
                 + (f" ({note})" if note else ""), result | {"seconds": seconds, "model": tier})


def _no_export(mgr: ModelManager, spec, path: Path | None) -> str | None:
    """On a read-only view with backend ``auto`` and no ONNX file yet: check with torch rather than
    export one (an export writes ~the model's size); the first real load or ``--repair`` makes it."""
    emb = mgr.settings.embedding
    if not mgr.store.read_only or emb.backend != "auto" or path is None:
        return None
    from modelcache.backends.onnx.export import export_roots, has_onnx

    if has_onnx(path, mgr.fingerprint(spec, path), export_roots(mgr.settings), emb.precision):
        return None
    emb.backend = "torch"
    return "backend auto: checked with torch; no ONNX export exists yet and doctor writes none without --repair"


def _load_in_place(mgr: ModelManager, spec) -> dict:
    """Load a model from its own directory (the bundled package) and embed "Hello world"."""
    import numpy as np

    encoder = mgr._encoder(spec, "in-place", spec.local_dir)
    vec = np.asarray(encoder.encode(["Hello world"]))
    if vec.shape != (1, encoder.dims) or not np.all(np.isfinite(vec)):
        raise ValueError(f"'Hello world' gave shape {vec.shape}, finite={bool(np.all(np.isfinite(vec)))}")
    return {"dims": encoder.dims, "fingerprint": encoder.fingerprint, "loaded_from": str(spec.local_dir)}


def check_chain(mgr: ModelManager) -> Check:
    """Fallback tiers the dimension check disables (the config load warns of the same)."""
    from modelcache.settings import dimension_warnings

    warnings = dimension_warnings(mgr.settings)
    if warnings:
        return Check("fallback", DEGRADED, " ".join(warnings))
    return Check("fallback", OK, "no fallback tier is disabled by the dimension check")


def check_validation(mgr: ModelManager) -> Check:
    """When each cached model is next re-hashed (``model_cache.validation_interval``)."""
    from modelcache.cache.validation import next_due

    mc = mgr.settings.model_cache
    due_now, later = [], []
    for repo in mgr.store.repos():
        if not repo.commits:
            continue
        left = next_due(repo.meta, mc.validation_interval)
        if left is None or left <= 0:
            due_now.append(repo.repo_id)
        else:
            later.append((left, repo.repo_id))
    data = {"interval_s": mc.validation_interval, "on_startup": mc.validation_on_startup, "due": due_now,
            "next_due_s": round(min(later)[0]) if later else None}
    text = f"validation_interval {mc.validation_interval}s" + (", validation_on_startup" if mc.validation_on_startup
                                                               else "")
    if due_now:
        return Check("validation", OK, f"{text}; due now (re-hashed at their next load, or `modelcache verify`): "
                     f"{', '.join(due_now)}", data)
    if later:
        return Check("validation", OK, f"{text}; next due in {min(later)[0] / 3600:.1f} h ({min(later)[1]})", data)
    return Check("validation", OK, f"{text}; no cached model", data)


def doctor(mgr: ModelManager, endpoints: bool = True, load: bool = True, timeout: float = 3.0,
           repair: bool = False) -> dict:
    """Run every check; the result has the shape of :func:`modelcache.ops.health.health`.
    Nothing is written unless ``repair`` (see the module docstring)."""
    checks = [Check("config", OK, f"profile {mgr.settings.profile or '-'}, model {mgr.settings.model}, "
                    f"strategy {mgr.settings.fallback.strategy}" + (", offline" if mgr.settings.offline else ""))]
    checks += [check_cache(mgr), check_disk(mgr), check_budget(mgr), check_chain(mgr)]
    view = mgr if repair or mgr.store.read_only else read_only_view(mgr)
    checks += check_integrity(view, write=repair)
    checks.append(check_validation(mgr))
    if not endpoints:
        checks.append(Check("endpoints", OK, "skipped (--no-network)"))
    elif mgr.settings.offline:
        checks.append(Check("endpoints", OK, "offline mode: no endpoint is contacted"))
    else:
        ep_checks = [check_endpoint(mgr, ep, timeout) for ep in mgr.settings.endpoints]
        if all(c.status != OK for c in ep_checks):
            for c in ep_checks:
                c.detail += "; no endpoint answers: only cached models can be used"
        checks += ep_checks
    checks.append(check_token(mgr))
    model_check, _tiers = check_models(mgr, verify=False)
    checks.append(model_check)
    active = model_check.data.get("active")
    if load and active:
        checks.append(check_load(view, active))
    out = summarize(checks)
    return out | {"exit_code": EXIT_CODES[out["status"]]}


__all__ = ["doctor", "read_only_view", "check_chain", "check_validation", "check_integrity", "check_endpoint",
           "check_token", "check_load", "token_source", "EXIT_CODES"]
