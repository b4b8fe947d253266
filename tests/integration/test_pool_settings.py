"""embedding.eviction_policy / min_available_memory_mb reach the real ModelManager's pool (issue 15)."""

from __future__ import annotations

import pytest

from modelcache.errors import PoolFullError
from tests.reliability import manager, tiny
from tests.support.hub import PICKLE_REPO, LocalHub


def test_manual_policy_refuses_a_second_model_and_names_unload(hub: LocalHub) -> None:
    mgr = manager([hub.endpoint], {"embedding": {"eviction_policy": "manual", "max_loaded_models": 1}})
    first = mgr.load(tiny())
    other = tiny(repo_id=PICKLE_REPO, name="other")
    with pytest.raises(PoolFullError) as err:
        mgr.load(other)
    assert "unload" in str(err.value) and "eviction_policy is 'manual'" in str(err.value)
    assert mgr.load(tiny()) is first and len(mgr.pool) == 1
    mgr.pool.unload(mgr.pool.keys()[0])
    assert mgr.load(other).dims == 32


def test_fifo_and_memory_pressure_from_settings(hub: LocalHub) -> None:
    mgr = manager([hub.endpoint], {"embedding": {"eviction_policy": "fifo", "max_loaded_models": 1}})
    assert mgr.pool.policy == "fifo"
    mgr.load(tiny())
    mgr.load(tiny(repo_id=PICKLE_REPO, name="other"))
    assert len(mgr.pool) == 1 and mgr.pool.stats()["evictions"] == 1
    # a threshold no machine meets: every load leaves only itself loaded
    pressed = manager([hub.endpoint], {"embedding": {"max_loaded_models": 4, "min_available_memory_mb": 1e8}})
    pressed.load(tiny())
    pressed.load(tiny(repo_id=PICKLE_REPO, name="other"))
    assert len(pressed.pool) == 1 and pressed.pool.stats()["min_available_bytes"] == int(1e14)


def test_preload_models_are_loaded_when_the_service_starts(hub: LocalHub) -> None:
    from modelcache.serving.service import EmbeddingService
    from tests.reliability import settings
    from tests.support.hub import TINY_REPO

    config = settings([hub.endpoint], {"model": TINY_REPO,
                                       "embedding": {"preload_models": [PICKLE_REPO, "not-org/not-there"]}})
    service = EmbeddingService(config, background_recovery=False)
    assert service.manager.preloading is None and len(service.manager.pool) == 0  # nothing before the start
    vectors, _ = service.encode(["hello"])
    assert vectors.shape == (1, 32)
    thread = service.manager.preloading
    assert thread is not None
    thread.join(120)
    assert not thread.is_alive()
    loaded = {key[0] for key in service.manager.pool.keys()}
    assert loaded == {TINY_REPO, PICKLE_REPO}  # the one that does not exist is logged and skipped
    before = service.manager.pool.stats()["loads"]
    service.manager.load(PICKLE_REPO)  # its first use: already loaded
    assert service.manager.pool.stats()["loads"] == before
