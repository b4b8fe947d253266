"""Remote embedding server (a ``remote:`` tier) against the local path, on the same machine, in one run.

    .venv/bin/python benchmarks/remote.py [--queries 25] [--callers 16]

Starts infinity-emb from ``.venv-infinity`` (``make .venv-infinity/.installed``) serving the bundled
all-MiniLM-L6-v2 files on 127.0.0.1, and prints one markdown table:

- throughput (queries/s) and p50 / p99 latency of single-query embeds from 16 concurrent callers,
  through ``EmbeddingService`` with the server at the head of the chain, and through the local model
  (the same service with no ``remote:``; ONNX or torch as ``embedding.backend: auto`` picks);
- failover: a caller embedding in a loop, the server SIGKILLed; the time from the kill to the first
  answer from the local tier, and the slowest single call in that window (no call fails);
- recovery: the server restarted; the time from its ready to the chain's switch back.

The server and the local model share this machine's cores, so the remote column is no GPU box:
it measures the overhead of the tier (HTTP, JSON, the server's own batching), not a speed-up.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelcache.serving.service import EmbeddingService  # noqa: E402
from tests.support.infinity import VENV, InfinityServer  # noqa: E402


def queries(n: int) -> list[str]:
    """Real short texts: the summaries of the installed Python packages."""
    seen: list[str] = []
    for dist in md.distributions():
        summary = " ".join((dist.metadata.get("Summary") or "").split())
        if 10 < len(summary) < 200 and summary not in seen:
            seen.append(summary)
    return (seen * (n // max(1, len(seen)) + 1))[:n]


def concurrent(svc: EmbeddingService, texts: list[str], callers: int) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    per = [texts[i::callers] for i in range(callers)]
    barrier = threading.Barrier(callers + 1)

    def caller(mine: list[str]) -> None:
        barrier.wait()
        for text in mine:
            t0 = time.perf_counter()
            svc.encode([text], "query")
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=caller, args=(mine,)) for mine in per]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = sorted(x * 1000 for x in latencies)
    return {"qps": len(ms) / wall, "p50": statistics.median(ms), "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=25, help="queries per caller")
    parser.add_argument("--callers", type=int, default=16)
    args = parser.parse_args()
    if not (VENV / ".installed").exists():
        sys.exit(f"{VENV.name} is missing: make {VENV.name}/.installed")
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="modelcache-bench-remote-"))
    os.environ["MODELCACHE_CACHE_DIR"] = str(tmp / "cache")
    server = InfinityServer(VENV, tmp)
    server.start()
    try:
        entry = {"url": server.url, "model": server.model, "token": server.token, "timeout_s": 10}
        fallback = {"retry_preferred_after_s": 1.0}
        remote = EmbeddingService({"offline": True, "remote": [entry], "fallback": fallback})
        local = EmbeddingService({"offline": True, "fallback": fallback})
        texts = queries(args.queries * args.callers)
        for svc in (remote, local):  # load, probe, warm up
            svc.encode(texts[:64], "query")
        assert remote.active_tier is not None and remote.active_tier.startswith("remote:"), remote.status()
        assert remote.fingerprint == local.fingerprint, "the server should be in the local model's space"
        rows = [(f"remote ({remote.active_tier})", concurrent(remote, texts, args.callers)),
                (f"local ({local.active_tier}, {getattr(local._active.encoder, 'backend', '?')})",
                 concurrent(local, texts, args.callers))]

        # failover: one caller in a loop; the server is SIGKILLed
        stop, served = threading.Event(), []
        failures: list[BaseException] = []

        def loop() -> None:
            i = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    remote.encode([texts[i % len(texts)]], "query")
                except BaseException as exc:  # noqa: BLE001 - counted: there should be none
                    failures.append(exc)
                served.append((t0, time.perf_counter(), remote.active_tier))
                i += 1

        worker = threading.Thread(target=loop)
        worker.start()
        time.sleep(1.0)
        killed_at = time.perf_counter()
        server.kill()
        while not any(t0 >= killed_at and tier and not tier.startswith("remote:") for t0, _, tier in served):
            time.sleep(0.01)
        first_local = min(end for t0, end, tier in served if t0 >= killed_at and not (tier or "").startswith("remote:"))
        window = [end - t0 for t0, end, _ in served if end >= killed_at and t0 <= first_local]
        server.start()
        ready_at = time.perf_counter()
        while not (remote.active_tier or "").startswith("remote:") and time.perf_counter() - ready_at < 60:
            time.sleep(0.01)
        back = time.perf_counter() - ready_at
        stop.set()
        worker.join()
    finally:
        server.stop()

    print(f"\n{args.callers} concurrent callers x {args.queries} single queries each "
          f"({os.cpu_count()} CPUs, server and local model on the same machine)\n")
    print("| path | queries/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['qps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} |")
    print(f"| remote / local | {rows[0][1]['qps'] / rows[1][1]['qps']:.2f}x | | |")
    print("\n| failover (server SIGKILLed) | value |")
    print("|---|---:|")
    print(f"| kill -> first answer from the local tier | {(first_local - killed_at) * 1000:.0f} ms |")
    print(f"| slowest call in that window | {max(window, default=0) * 1000:.0f} ms |")
    print(f"| calls that failed | {len(failures)} |")
    print(f"| server ready -> chain back on the server (cool-down 1 s) | {back * 1000:.0f} ms |")
    print(f"| infinity start to ready (torch, CPU) | {np.mean(server.startup_seconds):.1f} s |")


if __name__ == "__main__":
    main()
