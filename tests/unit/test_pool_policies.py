"""ModelPool eviction policies (issue 15): lru, fifo, manual (never evicts: a clear error naming unload),
and memory pressure (system available memory below a threshold)."""

from __future__ import annotations

import threading

import pytest

from modelcache.backends.pool import ModelPool, available_memory_bytes
from modelcache.errors import PoolFullError
from tests.unit.test_pool import FakeEncoder, make_pool


def test_fifo_evicts_the_first_loaded_even_if_used_since():
    pool, loads = make_pool(max_loaded_models=2, policy="fifo")
    pool.get("a")
    pool.get("b")
    pool.get("a")  # used again: under lru b would go, under fifo a goes (loaded first)
    pool.get("c")
    assert set(pool.keys()) == {"b", "c"} and pool.stats()["evictions"] == 1
    lru, _ = make_pool(max_loaded_models=2, policy="lru")
    for key in ("a", "b", "a", "c"):
        lru.get(key)
    assert set(lru.keys()) == {"a", "c"}


def test_fifo_by_memory_limit():
    pool, _ = make_pool({"a": 400, "b": 400, "c": 400}, max_loaded_models=10, max_memory_bytes=1000, policy="fifo")
    for key in ("a", "b", "a", "c"):
        pool.get(key)
    assert set(pool.keys()) == {"b", "c"}


def test_manual_never_evicts_and_says_to_unload():
    pool, loads = make_pool(max_loaded_models=2, policy="manual")
    a = pool.get("a")
    pool.get("b")
    with pytest.raises(PoolFullError) as err:
        pool.get("c")
    assert "unload" in str(err.value) and "max_loaded_models is 2" in str(err.value)
    assert loads == ["a", "b"] and set(pool.keys()) == {"a", "b"}  # refused before loading anything
    assert pool.get("a") is a
    assert pool.unload("a")
    pool.get("c")
    assert set(pool.keys()) == {"b", "c"} and pool.stats()["evictions"] == 0


def test_manual_memory_limit_refuses_after_the_load_and_waiters_see_it():
    release = threading.Event()
    loads: list[str] = []

    def loader(key: str) -> FakeEncoder:
        loads.append(key)
        if key == "big":
            release.wait(5)
        return FakeEncoder(key, 700)

    pool = ModelPool(loader, max_loaded_models=10, max_memory_bytes=1000, policy="manual")
    pool.get("small")
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            pool.get("big")
        except PoolFullError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert len(errors) == 3 and "max_memory_mb" in str(errors[0]) and "unload" in str(errors[0])
    assert pool.keys() == ["small"] and loads.count("big") == 1  # one load, refused, nothing evicted
    pool.unload("small")
    assert pool.get("big").name == "big"


def test_memory_pressure_evicts_in_policy_order_until_enough_is_available():
    for policy, survivor in (("lru", "a"), ("fifo", "b")):
        pool: ModelPool
        pool, _ = make_pool(max_loaded_models=10, policy=policy, min_available_bytes=350,
                            available_memory=lambda: 1000 - 300 * len(pool))
        pool.get("a")
        pool.get("b")
        pool.get("a")  # most recently used
        assert pool.stats()["evictions"] == 0  # 400 available: above the threshold
        pool.get("c")  # 100 available: one model goes, then 400
        assert set(pool.keys()) == {survivor, "c"}, policy
        assert pool.stats()["evictions"] == 1


def test_memory_pressure_under_manual_unloads_nothing():
    pool, _ = make_pool(max_loaded_models=10, policy="manual", min_available_bytes=10**6, available_memory=lambda: 1)
    pool.get("a")
    pool.get("b")
    assert set(pool.keys()) == {"a", "b"} and pool.relieve_pressure() == []


def test_memory_pressure_reads_the_real_system_memory():
    available = available_memory_bytes()
    assert isinstance(available, int) and available > 0
    pool, _ = make_pool(max_loaded_models=10, min_available_bytes=available * 1000)  # never reachable
    pool.get("a")
    pool.get("b")  # the machine is "under pressure": a goes, b (just loaded) stays
    assert pool.keys() == ["b"]
    roomy, _ = make_pool(max_loaded_models=10, min_available_bytes=1)
    roomy.get("a")
    roomy.get("b")
    assert set(roomy.keys()) == {"a", "b"}


def test_invalid_policy_and_threshold():
    with pytest.raises(ValueError, match="policy"):
        ModelPool(policy="random")
    with pytest.raises(ValueError, match="min_available_bytes"):
        ModelPool(min_available_bytes=0)
