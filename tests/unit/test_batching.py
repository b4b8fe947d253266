"""MicroBatcher: ordering under concurrency, back-pressure, kind separation, async, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from modelcache.errors import BatcherClosedError, OverloadedError
from modelcache.serving.batching import MicroBatcher


def fake_vector(text: str, kind: str) -> np.ndarray:
    """A deterministic vector that names its text: [len, sum of code points, kind flag]."""
    return np.array([len(text), sum(map(ord, text)), 1.0 if kind == "query" else 0.0], dtype=np.float32)


class RecordingEncoder:
    """encode_fn that records every call (texts, kind) and can be held or made to fail."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[tuple[list[str], str]] = []
        self.delay = delay
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.fail_on: str | None = None
        self.lock = threading.Lock()

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        with self.lock:
            self.calls.append((list(texts), kind))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"cannot embed {self.fail_on!r}")
        return np.stack([fake_vector(t, kind) for t in texts])


def expected(texts: list[str], kind: str) -> np.ndarray:
    return np.stack([fake_vector(t, kind) for t in texts])


def test_single_call_round_trip():
    enc = RecordingEncoder()
    with MicroBatcher(enc, batch_size=4, max_wait_ms=1) as b:
        out = b.encode(["b", "aaa", "cc"], "document")
    np.testing.assert_array_equal(out, expected(["b", "aaa", "cc"], "document"))
    assert out.dtype == np.float32


def test_ordering_under_concurrency():
    enc = RecordingEncoder(delay=0.002)
    batcher = MicroBatcher(enc, batch_size=8, max_wait_ms=5, queue_size=1000)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(15):
                texts = [f"t{i}-{j}-{k}" + "x" * ((i * 7 + j * 3 + k) % 11) for k in range(1 + (i + j) % 4)]
                kind = "query" if (i + j) % 2 else "document"
                np.testing.assert_array_equal(batcher.encode(texts, kind), expected(texts, kind))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    batcher.close()
    assert not errors, errors[0]
    stats = batcher.stats()
    assert stats["requests"] == 16 * 15
    assert stats["batches"] < stats["requests"]  # requests were actually gathered
    assert max(len(texts) for texts, _ in enc.calls) <= 8


def test_kinds_are_never_mixed_and_batches_sorted_by_length():
    enc = RecordingEncoder()
    enc.gate = threading.Event()
    b = MicroBatcher(enc, batch_size=16, max_wait_ms=50)
    first = b.submit(["hold"], "document")  # occupies the worker
    assert enc.entered.wait(5)
    futures = [b.submit([("q" * (5 - i)) + str(i)], "query") for i in range(4)]
    futures += [b.submit([("d" * (i + 1))], "document") for i in range(3)]
    enc.gate.set()
    first.result(5)
    results = [f.result(5) for f in futures]
    b.close()
    for texts, kind in enc.calls:
        prefix = {"query": "q", "document": "d"}
        assert all(t == "hold" or t.startswith(prefix[kind]) for t in texts), (texts, kind)
        assert [len(t) for t in texts] == sorted(len(t) for t in texts)
    assert [r[0, 2] for r in results] == [1.0] * 4 + [0.0] * 3
    kinds = [kind for _, kind in enc.calls[1:]]
    assert kinds == ["query", "document"]  # oldest first, then the other kind


def test_long_request_is_chunked_and_reassembled():
    enc = RecordingEncoder()
    texts = [("w" * ((i * 37) % 23)) + str(i) for i in range(50)]
    with MicroBatcher(enc, batch_size=8, max_wait_ms=0) as b:
        out = b.encode(texts, "document")
    np.testing.assert_array_equal(out, expected(texts, "document"))
    assert all(len(t) <= 8 for t, _ in enc.calls)
    assert sum(len(t) for t, _ in enc.calls) == 50


def test_back_pressure_raises_immediately():
    enc = RecordingEncoder()
    enc.gate = threading.Event()
    b = MicroBatcher(enc, batch_size=1, max_wait_ms=0, queue_size=3)
    running = b.submit(["running"])
    assert enc.entered.wait(5)  # taken by the worker: no longer queued
    queued = [b.submit([f"q{i}"]) for i in range(3)]
    t0 = time.monotonic()
    with pytest.raises(OverloadedError) as info:
        b.submit(["one too many"])
    assert time.monotonic() - t0 < 1.0
    assert info.value.queue_size == 3
    assert isinstance(info.value, RuntimeError)
    enc.gate.set()
    running.result(5)
    for f in queued:
        f.result(5)
    b.encode(["fine again"])  # the queue drained: accepted again
    assert b.stats()["overloaded"] == 1
    b.close()


def test_exception_reaches_only_that_batch():
    enc = RecordingEncoder()
    enc.fail_on = "boom"
    enc.gate = threading.Event()
    b = MicroBatcher(enc, batch_size=4, max_wait_ms=50)
    blocker = b.submit(["first"], "query")
    assert enc.entered.wait(5)
    bad = [b.submit(["boom"], "document"), b.submit(["ok-with-boom"], "document")]
    other_kind = b.submit(["fine"], "query")
    enc.gate.set()
    blocker.result(5)
    for f in bad:
        with pytest.raises(RuntimeError, match="boom"):
            f.result(5)
    np.testing.assert_array_equal(other_kind.result(5), expected(["fine"], "query"))
    np.testing.assert_array_equal(b.encode(["after"], "document"), expected(["after"], "document"))
    assert b.stats()["errors"] == 1
    b.close()


def test_wrong_shape_from_encoder_is_an_error():
    b = MicroBatcher(lambda texts, kind: np.zeros((1, 3)), batch_size=4, max_wait_ms=0)
    with pytest.raises(ValueError, match="shape"):
        b.encode(["a", "b"])
    b.close()


async def test_async_callers_share_batches_and_do_not_block_the_loop():
    enc = RecordingEncoder(delay=0.05)
    b = MicroBatcher(enc, batch_size=32, max_wait_ms=20)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    tick_task = asyncio.create_task(ticker())
    texts = [f"query number {i}" for i in range(20)]
    results = await asyncio.gather(*(b.aencode([t], "query") for t in texts))
    stop.set()
    await tick_task
    for t, r in zip(texts, results):
        np.testing.assert_array_equal(r, expected([t], "query"))
    assert len(enc.calls) < 20  # gathered into batches
    assert ticks >= 5  # the loop kept running while the worker encoded
    b.close()


async def test_async_and_thread_callers_mixed():
    enc = RecordingEncoder(delay=0.001)
    b = MicroBatcher(enc, batch_size=16, max_wait_ms=5)
    thread_out: dict[int, np.ndarray] = {}

    def thread_caller(i: int) -> None:
        thread_out[i] = b.encode([f"thread {i}"], "query")

    threads = [threading.Thread(target=thread_caller, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    async_out = await asyncio.gather(*(b.aencode([f"task {i}"], "query") for i in range(8)))
    await asyncio.get_running_loop().run_in_executor(None, lambda: [t.join(10) for t in threads])
    for i in range(8):
        np.testing.assert_array_equal(thread_out[i], expected([f"thread {i}"], "query"))
        np.testing.assert_array_equal(async_out[i], expected([f"task {i}"], "query"))
    b.close()


async def test_async_overload_and_exception():
    enc = RecordingEncoder()
    enc.fail_on = "bad"
    b = MicroBatcher(enc, batch_size=2, max_wait_ms=0, queue_size=1)
    with pytest.raises(RuntimeError, match="bad"):
        await b.aencode(["bad"])
    enc.gate = threading.Event()
    enc.entered.clear()
    hold = asyncio.ensure_future(b.aencode(["hold"]))
    await asyncio.get_running_loop().run_in_executor(None, enc.entered.wait, 5)
    queued = asyncio.ensure_future(b.aencode(["queued"]))
    await asyncio.sleep(0)  # let it enqueue
    with pytest.raises(OverloadedError):
        await b.aencode(["overflow"])
    enc.gate.set()
    await hold
    await queued
    b.close()


async def test_cancelled_async_caller_is_skipped():
    enc = RecordingEncoder()
    enc.gate = threading.Event()
    b = MicroBatcher(enc, batch_size=4, max_wait_ms=0)
    hold = asyncio.ensure_future(b.aencode(["hold"]))
    await asyncio.get_running_loop().run_in_executor(None, enc.entered.wait, 5)
    doomed = asyncio.ensure_future(b.aencode(["doomed"]))
    await asyncio.sleep(0)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed  # the cancellation reaches the queued request through the loop
    await asyncio.sleep(0.01)
    enc.gate.set()
    await hold
    assert (await b.aencode(["later"])).shape == (1, 3)
    assert all("doomed" not in texts for texts, _ in enc.calls)
    b.close()


def test_close_drains_then_refuses():
    enc = RecordingEncoder(delay=0.01)
    b = MicroBatcher(enc, batch_size=2, max_wait_ms=0)
    futures = [b.submit([f"t{i}"]) for i in range(6)]
    b.close()  # drain=True: every queued request still completes
    assert all(f.result(5).shape == (1, 3) for f in futures)
    with pytest.raises(BatcherClosedError):
        b.encode(["late"])
    assert b.closed


def test_close_without_drain_fails_pending():
    enc = RecordingEncoder()
    enc.gate = threading.Event()
    b = MicroBatcher(enc, batch_size=1, max_wait_ms=0)
    running = b.submit(["running"])
    assert enc.entered.wait(5)
    pending = b.submit(["pending"])
    closer = threading.Thread(target=b.close, kwargs={"drain": False})
    closer.start()
    with pytest.raises(BatcherClosedError):
        pending.result(5)
    enc.gate.set()
    closer.join(5)
    assert running.result(5).shape == (1, 3)


def test_no_thread_until_first_request_and_empty_input():
    before = {t.name for t in threading.enumerate()}
    b = MicroBatcher(RecordingEncoder(), name="mc-test-lazy")
    assert "mc-test-lazy" not in {t.name for t in threading.enumerate()} - before
    assert b.encode([]).shape[0] == 0
    assert "mc-test-lazy" not in {t.name for t in threading.enumerate()}
    b.encode(["x"])
    assert "mc-test-lazy" in {t.name for t in threading.enumerate()}
    b.close()
    assert "mc-test-lazy" not in {t.name for t in threading.enumerate()}


def test_parallel_batches_run_at_once_and_a_long_request_split_across_workers_comes_back_whole():
    import threading

    both = threading.Barrier(2, timeout=5)
    running, peak, lock = [0], [0], threading.Lock()

    def encode(texts, kind):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            both.wait()  # passes only when two batches are being encoded at the same time
        except threading.BrokenBarrierError:
            pass
        with lock:
            running[0] -= 1
        return np.array([[float(t), 1.0] for t in texts], dtype=np.float32)

    batcher = MicroBatcher(encode, batch_size=4, max_wait_ms=0, workers=2)
    texts = [str(i) for i in range(8)]  # two chunks of 4: one per worker
    out = batcher.encode(texts)
    batcher.close()
    assert peak[0] == 2
    np.testing.assert_array_equal(out[:, 0], np.arange(8, dtype=np.float32))
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(encode, workers=0)
