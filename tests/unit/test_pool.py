"""ModelPool: LRU eviction by count and by memory, idle unload, single-flight loads, stats."""

from __future__ import annotations

import threading
import time

import pytest

from modelcache.backends.pool import ModelPool, estimate_bytes


class FakeEncoder:
    def __init__(self, name: str, memory_bytes: int = 100):
        self.name = name
        self.memory_bytes = memory_bytes


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_pool(sizes: dict[str, int] | None = None, **kwargs) -> tuple[ModelPool, list[str]]:
    loads: list[str] = []

    def loader(name: str) -> FakeEncoder:
        loads.append(name)
        return FakeEncoder(name, (sizes or {}).get(name, 100))

    return ModelPool(loader, **kwargs), loads


def test_lazy_and_cached():
    pool, loads = make_pool()
    assert len(pool) == 0 and loads == []  # constructing loads nothing
    a = pool.get("a")
    assert pool.get("a") is a
    assert loads == ["a"]
    stats = pool.stats()
    assert (stats["loads"], stats["hits"], stats["misses"], stats["count"]) == (1, 1, 1, 1)


def test_evicts_least_recently_used_over_max_loaded_models():
    pool, loads = make_pool(max_loaded_models=2)
    pool.get("a")
    pool.get("b")
    pool.get("a")  # a is now the most recently used
    pool.get("c")  # evicts b
    assert pool.keys() == ["a", "c"]
    assert "b" not in pool
    assert pool.stats()["evictions"] == 1
    pool.get("b")  # loaded again, evicts a (least recently used)
    assert loads == ["a", "b", "c", "b"]
    assert pool.keys() == ["c", "b"]


def test_evicts_by_memory_limit():
    sizes = {"small1": 300, "small2": 300, "big": 700}
    pool, loads = make_pool(sizes, max_loaded_models=10, max_memory_bytes=1000)
    pool.get("small1")
    pool.get("small2")
    assert pool.stats()["bytes"] == 600
    pool.get("big")  # 600 + 700 > 1000: the LRU (small1) goes, 300 + 700 fits
    assert pool.keys() == ["small2", "big"]
    assert pool.stats()["bytes"] == 1000
    pool.get("small1")  # needs 300 more: small2 (LRU) goes
    assert pool.keys() == ["big", "small1"]
    assert pool.stats()["evictions"] == 2


def test_model_bigger_than_memory_limit_is_kept_alone():
    pool, _ = make_pool({"a": 100, "huge": 5000}, max_memory_bytes=1000)
    pool.get("a")
    huge = pool.get("huge")
    assert pool.keys() == ["huge"]
    assert pool.get("huge") is huge  # kept (not reloaded on every call)


def test_estimate_bytes_from_torch_parameters():
    torch = pytest.importorskip("torch")

    class Holder:
        model = torch.nn.Linear(10, 10)  # 110 float32 parameters

    assert estimate_bytes(Holder()) == 110 * 4
    assert estimate_bytes(FakeEncoder("x", 123)) == 123
    assert estimate_bytes(object()) == 0


def test_idle_unload_with_clock():
    clock = FakeClock()
    pool, _ = make_pool(keep_alive_s=60, clock=clock, reaper=False)
    pool.get("a")
    clock.now += 30
    pool.get("b")
    clock.now += 40  # a idle 70 s, b idle 40 s
    assert pool.unload_idle() == ["a"]
    assert pool.keys() == ["b"]
    clock.now += 100
    assert pool.unload_idle() == ["b"]
    assert len(pool) == 0
    assert pool.stats()["idle_unloads"] == 2


def test_idle_reaper_thread_unloads():
    pool, loads = make_pool(keep_alive_s=0.1)
    pool.get("a")
    deadline = time.monotonic() + 5
    while "a" in pool and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "a" not in pool
    pool.get("a")
    assert loads == ["a", "a"]
    pool.close()


def test_single_flight_load_per_key():
    started = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def slow_loader(name: str) -> FakeEncoder:
        calls.append(name)
        started.set()
        release.wait(5)
        return FakeEncoder(name)

    pool = ModelPool(slow_loader, max_loaded_models=4)
    results: list[FakeEncoder] = []
    threads = [threading.Thread(target=lambda: results.append(pool.get("m"))) for _ in range(8)]
    for t in threads:
        t.start()
    assert started.wait(5)
    time.sleep(0.05)  # let every thread reach the pool
    release.set()
    for t in threads:
        t.join(5)
    assert calls == ["m"]
    assert len(results) == 8 and all(r is results[0] for r in results)


def test_different_keys_load_concurrently():
    barrier = threading.Barrier(2, timeout=5)

    def loader(name: str) -> FakeEncoder:
        barrier.wait()  # deadlocks (BrokenBarrierError) if loads were serialised
        return FakeEncoder(name)

    pool = ModelPool(loader, max_loaded_models=4)
    threads = [threading.Thread(target=pool.get, args=(k,)) for k in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(pool.keys()) == ["a", "b"]


def test_failed_load_reaches_waiters_and_is_retried():
    attempts = []

    def loader(name: str) -> FakeEncoder:
        attempts.append(name)
        if len(attempts) == 1:
            raise OSError("disk on fire")
        return FakeEncoder(name)

    pool = ModelPool(loader)
    with pytest.raises(OSError, match="disk on fire"):
        pool.get("a")
    assert "a" not in pool
    assert pool.get("a").name == "a"
    assert pool.stats()["load_errors"] == 1


def test_factory_and_preload():
    pool = ModelPool(max_loaded_models=3)
    enc = pool.get(("repo", "commit"), lambda: FakeEncoder("x"))
    assert pool.get(("repo", "commit")) is enc
    with pytest.raises(KeyError):
        pool.get("missing")  # no loader, no factory

    pool2, loads = make_pool(max_loaded_models=3)
    pool2.preload(["a", "b"])
    assert loads == ["a", "b"] and pool2.keys() == ["a", "b"]

    warmed = []
    pool3 = ModelPool(warm=warmed.append)
    pool3.preload(["x"])
    assert warmed == ["x"]


def test_unload_and_clear():
    pool, _ = make_pool(max_loaded_models=3)
    pool.get("a")
    pool.get("b")
    assert pool.unload("a") and not pool.unload("a")
    pool.clear()
    assert len(pool) == 0
    assert pool.stats()["unloads"] == 2 and pool.stats()["evictions"] == 0


def test_invalid_limits():
    with pytest.raises(ValueError):
        ModelPool(max_loaded_models=0)
    with pytest.raises(ValueError):
        ModelPool(max_memory_bytes=0)
    with pytest.raises(ValueError):
        ModelPool(keep_alive_s=-1)
