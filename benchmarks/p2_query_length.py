"""Why P2 depends on query length: 16 threads x one query each, direct vs through the
MicroBatcher, for short synthetic queries and for real package summaries (this machine's text).

Usage: .venv/bin/python benchmarks/p2_query_length.py   (prints a markdown table, ~40 s)
"""

from __future__ import annotations

import importlib.metadata as md
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MODELCACHE_CACHE_DIR"] = tempfile.mkdtemp(prefix="mc-p2-")


def closed_loop(call, queries: list[str], threads: int = 16, seconds: float = 3.0) -> tuple[float, float]:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        j = i
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            call(queries[j % len(queries)])
            latencies.append(time.perf_counter() - t0)
            j += threads

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return len(latencies) / seconds, sorted(latencies)[int(len(latencies) * 0.99)] * 1000


def main() -> None:
    from modelcache.manager import ModelManager
    from modelcache.serving.batching import MicroBatcher
    from modelcache.settings import load_settings

    enc = ModelManager(load_settings()).load("bundled-mini")
    sets = {
        "synthetic, near-uniform length": [f"where did I leave the thing number {i} yesterday evening?"
                                           for i in range(64)],
        "package summaries": [d.metadata["Summary"] for d in md.distributions() if d.metadata.get("Summary")][:160],
    }
    print("| queries | mean chars | direct q/s | batched q/s | ratio | batched p99 ms |\n|---|---|---|---|---|---|")
    for name, queries in sets.items():
        direct, _ = closed_loop(lambda q: enc.encode([q], "query"), queries)
        with MicroBatcher(enc.encode, 32, 5, 1024) as batcher:
            batched, p99 = closed_loop(lambda q: batcher.encode([q], "query"), queries)
        print(f"| {name} | {statistics.mean(map(len, queries)):.0f} | {direct:.0f} | {batched:.0f} | "
              f"{batched / direct:.1f}x | {p99:.0f} |")


if __name__ == "__main__":
    main()
