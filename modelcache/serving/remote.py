"""Remote embedding servers as the head of the fallback chain (``remote:`` entries, tier kind ``remote``).

The chain becomes: each remote server, in order -> the local copy of the model -> its same-space
fallbacks -> bundled -> keyword (see :mod:`modelcache.serving.tiers`). The client is
:class:`~modelcache.backends.remote.RemoteEncoder`; a failing server is a failing tier like any
other: the chain moves on, and after the cool-down (``fallback.retry_preferred_after_s``, or the
server's Retry-After when longer) recovery tries the server again and switches back.

Same space or not, decided by :func:`load_remote` at every activation (so also when a server comes
back, possibly serving another model): :data:`PROBES` are embedded remotely and with the local copy
of the chain's model when it is on disk without the network (the preferred model from the cache,
else the first enabled tier the registry declares in its space, such as the bundled copy of
all-MiniLM-L6-v2). A cosine of at least :data:`SAME_SPACE_MIN_COSINE` on every probe gives the
remote tier that local model's fingerprint: its vectors are interchangeable, and memories keep
working when the server goes away. Otherwise (another model, another pooling or prompt, or no
local copy to compare with) it has its own fingerprint, ``remote:<host[:port]>/<model>``, and its
vectors are never mixed with the local model's; in ``strict`` it is then not used at all.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcache.backends import precision
from modelcache.backends.remote import RemoteEncoder
from modelcache.errors import RemoteEmbeddingError

if TYPE_CHECKING:
    from modelcache.serving.tiers import Tier

log = logging.getLogger("modelcache")

#: the probe set is the one the int8 quality gate uses (short, long, code, non-English, numbers)
PROBES = precision.PROBES
#: the lowest cosine, on every probe, for a remote server to share the local model's fingerprint
SAME_SPACE_MIN_COSINE = 0.999


def _local_reference(service: Any, tier: Tier) -> tuple[str, str, np.ndarray] | None:
    """``(tier name, fingerprint, probe vectors)`` of the local copy, computed once per service;
    None when no same-space model is on disk (nothing is downloaded for the probe)."""
    cached = getattr(service, "_remote_reference", None)
    if cached is not None:
        return cached
    manager = service.manager
    for local in service._tiers or ():  # planned already; not `.tiers`: the caller may hold the lock in another thread
        if local.kind == "remote" or local.spec is None or not local.enabled:
            continue
        if local.kind != "preferred" and not local.same_space:
            continue
        spec = local.spec
        revision = service.revision if local.kind == "preferred" else None
        on_disk = (spec.source != "hub" and spec.local_dir is not None) or manager.puller.cached(spec, revision)
        if not on_disk:
            continue
        try:
            encoder = manager.load(spec, revision)
            vectors = np.asarray(encoder.encode(list(PROBES), kind="document"), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - a local copy that cannot load is no reference
            log.info("remote probe: %s cannot serve as the local reference (%s)", spec.name, exc)
            continue
        service._remote_reference = (local.name, encoder.fingerprint, vectors)
        return service._remote_reference
    return None


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest row-wise cosine of two (n, d) arrays (-1 when their shapes differ)."""
    if a.shape != b.shape or a.size == 0:
        return -1.0
    return float(precision.cosines(a, b).min())


def load_remote(service: Any, tier: Tier) -> RemoteEncoder:
    """Activate a remote tier: check the server with the probe set and decide its fingerprint.

    Raises :class:`RemoteEmbeddingError` (the chain moves on) when the server fails or answers
    badly, when its dims differ from the chain's (unless ``fallback.allow_dimension_mismatch``),
    or, in ``strict``, when it is not in the local model's space.
    """
    cfg = tier.remote
    assert cfg is not None  # a remote tier is planned with its server
    pref = next((t.spec for t in service._tiers or () if t.kind == "preferred" and t.spec is not None), None)
    encoder = RemoteEncoder(cfg, normalize=pref.normalize if pref is not None else True,
                            query_prompt=pref.query_prompt if pref is not None else None,
                            document_prompt=pref.document_prompt if pref is not None else None)
    try:
        remote = encoder.encode(list(PROBES), kind="document")
        want = service._dims
        if want and encoder.dims != want and not service.settings.fallback.allow_dimension_mismatch:
            raise RemoteEmbeddingError(encoder.shown_url, f"{encoder.dims} dims, the chain's model has {want} "
                                       "(fallback.allow_dimension_mismatch=false)")
        reference = _local_reference(service, tier)
        cosine = min_cosine(remote, reference[2]) if reference is not None else None
        same = cosine is not None and cosine >= SAME_SPACE_MIN_COSINE
        tier.probe = {"against": reference[0] if reference else None,
                      "min_cosine": None if cosine is None else round(cosine, 6), "same_space": same}
        if not same and service.strategy == "strict":
            why = "no local copy to compare with" if reference is None else f"min cosine {cosine:.4f}"
            raise RemoteEmbeddingError(encoder.shown_url, f"not in the model's embedding space ({why}; strict)")
    except BaseException:
        encoder.close()
        raise
    tier.same_space = same
    if same and reference is not None:
        encoder.fingerprint = reference[1]
    log.info("remote tier %s: %s (probe min cosine %s against %s)", tier.name,
             "same space as the local model" if same else f"its own space, fingerprint {encoder.fingerprint}",
             tier.probe["min_cosine"], tier.probe["against"])
    return encoder
