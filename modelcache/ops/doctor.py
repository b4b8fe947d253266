"""``modelcache doctor``: everything :mod:`modelcache.ops.health` checks, and the slow parts too.

Adds to the readiness checks: the integrity of every cached model, whether each endpoint
answers (short timeout), whether a token is configured (never its value), and a real model
load with a test embedding. Exit codes: 0 ok, 1 failed, 2 degraded.
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


def check_integrity(mgr: ModelManager) -> list[Check]:
    """Verify every cached repo (files stat-trusted within ``validation_interval``; re-hash
    everything with ``modelcache verify --full``)."""
    out = []
    for repo in mgr.store.repos():
        if not repo.commits:
            continue
        try:
            spec = mgr.spec(repo.repo_id)
            report = mgr.verify(spec)
        except Exception as exc:  # noqa: BLE001 - one broken repo must not hide the others
            out.append(Check(f"integrity:{repo.repo_id}", FAILED, f"{type(exc).__name__}: {exc}"))
            continue
        if report.ok:
            out.append(Check(f"integrity:{repo.repo_id}", OK, f"{len(report.checked)} files ok, "
                             f"{len(report.hashed)} hashed", {"commit": report.commit}))
        else:
            failures = "; ".join(f"{p}: {why}" for p, why in report.failures.items())
            out.append(Check(f"integrity:{repo.repo_id}", FAILED, failures + (
                f" (quarantined: {', '.join(report.quarantined)}; `modelcache pull` fetches them again)"
                if report.quarantined else ""), report.to_dict()))
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
    """Load the tier's model and embed "Hello world": finite, and of the expected dims."""
    if tier == KEYWORD_TIER:
        return Check("load", DEGRADED, "only keyword mode can serve: no model to load")
    t0 = time.perf_counter()
    try:
        spec = mgr.spec(tier)
        local = mgr.ensure(spec, download=False)
        result = mgr.functional_check(spec, local.commit)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return Check("load", FAILED, f"{tier}: {type(exc).__name__}: {exc}")
    seconds = round(time.perf_counter() - t0, 2)
    return Check("load", OK, f"{tier} loaded and embedded 'Hello world' ({result['dims']} dims) in {seconds}s",
                 result | {"seconds": seconds, "model": tier})


def doctor(mgr: ModelManager, endpoints: bool = True, load: bool = True, timeout: float = 3.0) -> dict:
    """Run every check; the result has the shape of :func:`modelcache.ops.health.health`."""
    checks = [Check("config", OK, f"profile {mgr.settings.profile or '-'}, model {mgr.settings.model}, "
                    f"strategy {mgr.settings.fallback.strategy}" + (", offline" if mgr.settings.offline else ""))]
    checks += [check_cache(mgr), check_disk(mgr), check_budget(mgr)]
    checks += check_integrity(mgr)
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
        checks.append(check_load(mgr, active))
    out = summarize(checks)
    return out | {"exit_code": EXIT_CODES[out["status"]]}


__all__ = ["doctor", "check_integrity", "check_endpoint", "check_token", "check_load", "token_source", "EXIT_CODES"]
