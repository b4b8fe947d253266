"""``MicroBatcher``: many concurrent callers, one encoder call per batch.

Agents call ``embed_query`` one text at a time from many threads or asyncio tasks; an encoder
is far faster on a batch of 16 than on 16 batches of 1. The batcher queues every request and
one worker thread gathers them:

- a batch closes at ``batch_size`` texts, or ``max_wait_ms`` after its oldest request arrived
  (or after the previous batch ended), or as soon as arrivals pause for a fifth of that;
- one batch holds one ``kind`` only ("query" / "document" prompts are never mixed), oldest
  request first;
- texts are sorted by length inside a batch (less padding); a request longer than
  ``batch_size`` is cut into length-sorted chunks and reassembled in its own order;
- the queue is bounded: past ``queue_size`` pending requests a caller gets
  :class:`~modelcache.errors.OverloadedError` at once (back-pressure), never a hang;
- an exception from the encoder reaches every caller of that batch, and only them;
- ``aencode`` never blocks the event loop: results come back through
  ``loop.call_soon_threadsafe`` (``asyncio.wrap_future``).

The worker thread starts on the first request, so constructing a batcher costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

from modelcache.errors import BatcherClosedError, OverloadedError

log = logging.getLogger("modelcache")

__all__ = ["MicroBatcher", "BatcherClosedError"]

EncodeFn = Callable[[list[str], str], np.ndarray]


class _Request:
    """One caller's texts; filled chunk by chunk, resolved when every row is in."""

    __slots__ = ("texts", "kind", "future", "t0", "order", "taken", "filled", "out", "failed", "started")

    def __init__(self, texts: list[str], kind: str, batch_size: int):
        self.texts = texts
        self.kind = kind
        self.future: Future = Future()
        self.t0 = time.monotonic()
        # long requests are cut into chunks of similar length (less padding per chunk)
        self.order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if len(texts) > batch_size else None
        self.taken = 0
        self.filled = 0
        self.out: np.ndarray | None = None
        self.failed = False
        self.started = False

    @property
    def remaining(self) -> int:
        return len(self.texts) - self.taken

    def take(self, n: int) -> list[int]:
        idx = range(self.taken, self.taken + n)
        self.taken += n
        return [self.order[i] for i in idx] if self.order is not None else list(idx)


class MicroBatcher:
    """Gather concurrent ``encode`` / ``aencode`` calls into batches for ``encode_fn(texts, kind)``."""

    def __init__(self, encode_fn: EncodeFn, batch_size: int = 32, max_wait_ms: float = 5.0,
                 queue_size: int = 1024, name: str = "modelcache-batcher", workers: int = 1):
        if batch_size < 1 or queue_size < 1 or max_wait_ms < 0 or workers < 1:
            raise ValueError("batch_size, queue_size and workers must be >= 1 and max_wait_ms >= 0")
        #: batches run at once (``embedding.parallel_batches``): each worker gathers and runs its own
        self.workers = workers
        self._threads: list[threading.Thread] = []
        self._fill = threading.Lock()  # chunks of one long request may finish in two workers at once
        self.encode_fn = encode_fn
        self.batch_size = batch_size
        self.max_wait = max_wait_ms / 1000.0
        #: a batch closes early when no request arrived for this long (a fifth of max_wait)
        self.gap = self.max_wait / 5
        self.queue_size = queue_size
        self.name = name
        self._pending: deque[_Request] = deque()
        self._pending_texts: dict[str, int] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._dims: int | None = None
        self._last_arrival = 0.0
        self._last_end = 0.0
        self._stats = {"requests": 0, "texts": 0, "batches": 0, "batched_texts": 0, "max_batch": 0,
                       "overloaded": 0, "errors": 0, "encode_seconds": 0.0}

    # -- callers --------------------------------------------------------------------------
    def submit(self, texts: Sequence[str], kind: str = "document") -> Future:
        """Queue ``texts``; a ``concurrent.futures.Future`` of their (n, dims) float32 array.

        Raises :class:`OverloadedError` at once if ``queue_size`` requests are already waiting.
        """
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        req = _Request(texts, kind, self.batch_size)
        if not texts:
            req.future.set_result(np.zeros((0, self._dims or 0), dtype=np.float32))
            return req.future
        with self._cond:
            if self._closed:
                raise BatcherClosedError(f"{self.name} is closed")
            if len(self._pending) >= self.queue_size:
                self._stats["overloaded"] += 1
                raise OverloadedError(self.queue_size)
            self._pending.append(req)
            self._last_arrival = req.t0
            self._pending_texts[kind] = self._pending_texts.get(kind, 0) + len(texts)
            self._stats["requests"] += 1
            self._stats["texts"] += len(texts)
            if self._thread is None:
                names = [self.name] if self.workers == 1 else [f"{self.name}-{i}" for i in range(self.workers)]
                self._threads = [threading.Thread(target=self._run, name=n, daemon=True) for n in names]
                self._thread = self._threads[0]
                for thread in self._threads:
                    thread.start()
            self._cond.notify()
        return req.future

    def encode(self, texts: Sequence[str], kind: str = "document", timeout: float | None = None) -> np.ndarray:
        """Blocking: the vectors of ``texts``, in order."""
        return self.submit(texts, kind).result(timeout)

    async def aencode(self, texts: Sequence[str], kind: str = "document") -> np.ndarray:
        """Awaitable: the vectors of ``texts``; the event loop is never blocked."""
        return await asyncio.wrap_future(self.submit(texts, kind))

    # -- worker ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._gather()
            if batch is None:
                return
            if batch:
                try:
                    self._execute(*batch)
                finally:
                    self._last_end = time.monotonic()

    def _gather(self) -> tuple[str, list[tuple[_Request, list[int]]]] | None:
        """Wait for a batch (called with the lock held). None: closed and drained."""
        while not self._pending:
            if self._closed:
                return None
            self._cond.wait()
        head = self._pending[0]
        kind = head.kind
        # Requests that queued during the previous batch already waited; the callers that batch
        # just answered usually come straight back, so the window opens at the later of the two.
        # It closes at max_wait, or earlier once arrivals pause for ``gap`` (a lone caller is
        # not held for the whole max_wait).
        deadline = max(head.t0, self._last_end) + self.max_wait
        while self._pending_texts.get(kind, 0) < self.batch_size and not self._closed:
            now = time.monotonic()
            until = min(deadline, self._last_arrival + self.gap)
            if now >= until:
                break
            self._cond.wait(until - now)
        parts: list[tuple[_Request, list[int]]] = []
        room = self.batch_size
        kept: deque[_Request] = deque()
        while self._pending and room > 0:
            req = self._pending.popleft()
            if req.kind != kind:
                kept.append(req)
                continue
            if not req.started:
                req.started = True
                if not req.future.set_running_or_notify_cancel():  # cancelled while queued
                    self._pending_texts[kind] -= req.remaining
                    continue
            n = min(room, req.remaining)
            parts.append((req, req.take(n)))
            self._pending_texts[kind] -= n
            room -= n
            if req.remaining:
                kept.append(req)  # a long request stays at the front for its next chunk
        kept.extend(self._pending)
        self._pending = kept
        return kind, parts

    def _execute(self, kind: str, parts: list[tuple[_Request, list[int]]]) -> None:
        live = [(req, idx) for req, idx in parts if not req.failed]
        texts = [req.texts[i] for req, idx in live for i in idx]
        if not texts:
            return
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        t0 = time.perf_counter()
        try:
            vectors = np.asarray(self.encode_fn([texts[i] for i in order], kind), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(texts):
                raise ValueError(f"encoder returned shape {vectors.shape} for {len(texts)} texts")
        except BaseException as exc:  # delivered to this batch's callers, the worker goes on
            self._stats["errors"] += 1
            for req, _ in live:
                self._fail(req, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._record(len(texts), time.perf_counter() - t0)
        rows = np.empty_like(vectors)
        rows[order] = vectors
        self._dims = rows.shape[1]
        pos = 0
        for req, idx in live:
            with self._fill:
                if req.out is None:
                    req.out = np.empty((len(req.texts), rows.shape[1]), dtype=np.float32)
                req.out[idx] = rows[pos:pos + len(idx)]
                req.filled += len(idx)
                done = req.filled == len(req.texts)
            pos += len(idx)
            if done:
                req.future.set_result(req.out)

    def _fail(self, req: _Request, exc: BaseException) -> None:
        if req.failed:
            return
        req.failed = True
        with self._cond:  # drop its chunks still queued
            if req.remaining and req in self._pending:
                self._pending.remove(req)
                self._pending_texts[req.kind] -= req.remaining
        req.future.set_exception(exc)

    def _record(self, n: int, seconds: float) -> None:
        s = self._stats
        s["batches"] += 1
        s["batched_texts"] += n
        s["max_batch"] = max(s["max_batch"], n)
        s["encode_seconds"] += seconds

    # -- lifecycle ------------------------------------------------------------------------
    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting requests; ``drain`` finishes the queued ones, else they fail."""
        with self._cond:
            self._closed = True
            if not drain:
                err = BatcherClosedError(f"{self.name} closed before this request ran")
                while self._pending:
                    req = self._pending.popleft()
                    if not req.started and not req.future.set_running_or_notify_cancel():
                        continue
                    req.started = req.failed = True
                    req.future.set_exception(err)
                self._pending_texts.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict:
        """Counters: requests, batches, mean / max batch size, queue depth, overloads."""
        with self._cond:
            s = dict(self._stats)
            s["queued"] = len(self._pending)
        s["mean_batch"] = round(s["batched_texts"] / s["batches"], 2) if s["batches"] else 0.0
        s["encode_seconds"] = round(s["encode_seconds"], 4)
        return s

    def __enter__(self) -> MicroBatcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
