"""The memory database on PostgreSQL beside SQLite: keyword recall@5, keyword query latency and
one-memory adds, at 1k and 10k memories, printed side by side.

Corpus and queries: ``benchmarks/memory_corpus.py`` (held-out docstring pairs; one relevant memory
per query), as in ``benchmarks/memory.py``. Each database is filled in batches of 1000, then
``ANALYZE``-d (PostgreSQL: what autovacuum does by itself; its common-word filter reads the
planner's statistics). PostgreSQL is a real server on 127.0.0.1 (``tests/support/postgres.py``:
Debian's binaries, ``fsync=off``), reached over TCP; SQLite is a file in a temp dir.

Benchmarks print; tests never assert times.

    .venv/bin/python benchmarks/memory_postgres.py [--sizes 1000,10000] [--queries 1000] [--reps 200]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import memory_corpus  # noqa: E402
import numpy as np  # noqa: E402

from modelcache.memory.db import Memory, MemoryDB  # noqa: E402
from modelcache.memory.open import open_memory_db  # noqa: E402
from tests.support.postgres import PostgresServer, find_bindir  # noqa: E402

K = 5


def p50_p99(samples_s: list[float]) -> str:
    ms = np.array(samples_s) * 1000.0
    return f"{np.percentile(ms, 50):.2f} / {np.percentile(ms, 99):.2f}"


def analyze(db: MemoryDB, target: str) -> None:
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("ANALYZE modelcache_memories")


def measure(target: str, pairs: list[memory_corpus.Pair], n: int, extra: list[memory_corpus.Pair],
            n_queries: int, reps: int) -> dict[str, str]:
    db = open_memory_db(target)
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        db.add([Memory(p.id, p.document) for p in pairs[start:min(n, start + 1000)]])
    fill_s = time.perf_counter() - t0
    analyze(db, target)
    docs = pairs[:n]
    sample = random.Random(memory_corpus.SEED + n).sample(range(n), min(n, n_queries))
    hits, times = 0, []
    for i in sample:
        t0 = time.perf_counter()
        found = db.search(docs[i].query, K)
        times.append(time.perf_counter() - t0)
        hits += docs[i].id in [m for m, _ in found]
    fetch_times = []
    for i in sample[:reps]:
        t0 = time.perf_counter()
        db.search(docs[i].query, max(4 * K, 20))
        fetch_times.append(time.perf_counter() - t0)
    adds = []
    for p in extra[:reps]:
        t0 = time.perf_counter()
        db.add([Memory(f"extra:{p.id}", p.document)])
        adds.append(time.perf_counter() - t0)
    db.close()
    return {"recall": f"{hits / len(sample):.3f}", "k5": p50_p99(times), "k20": p50_p99(fetch_times),
            "add": p50_p99(adds), "fill": f"{fill_s:.1f}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--queries", type=int, default=1000, help="queries sampled per size (recall, k=5 latency)")
    parser.add_argument("--reps", type=int, default=200, help="single adds and k=20 queries timed per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL's server binaries are missing: apt-get install -y postgresql")
    pairs, stats = memory_corpus.load()
    if max(sizes) + args.reps > len(pairs):
        raise SystemExit(f"the corpus has {len(pairs)} pairs; {max(sizes)} memories + {args.reps} adds need more")
    extra = pairs[max(sizes):]
    server = PostgresServer(bindir)
    results: dict[tuple[str, int], dict[str, str]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="modelcache-bench-pg-") as tmp:
            for n in sizes:
                for name in ("sqlite", "postgres"):
                    target = str(Path(tmp) / f"sqlite-{n}") if name == "sqlite" else server.url(f"bench_{n}")
                    print(f"{name} at {n} ...", file=sys.stderr, flush=True)
                    results[(name, n)] = measure(target, pairs, n, extra, args.queries, args.reps)
        version = subprocess_version(bindir)
    finally:
        server.close()
    print("modelcache memory database: SQLite (FTS5 BM25) beside PostgreSQL (tsvector, ts_rank)")
    print(f"corpus: {stats['pairs']} held-out docstring pairs; PostgreSQL {version}")
    rows = [("keyword recall@5", "recall"), ("search k=5, p50 / p99 ms", "k5"),
            ("search k=20, p50 / p99 ms", "k20"), ("add one memory, p50 / p99 ms", "add"),
            ("fill (batches of 1000), s", "fill")]
    header = ["measure"] + [f"{name} {n // 1000}k" for n in sizes for name in ("sqlite", "postgres")]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for label, key in rows:
        print("| " + " | ".join([label] + [results[(name, n)][key] for n in sizes
                                           for name in ("sqlite", "postgres")]) + " |")
    return 0


def subprocess_version(bindir: Path) -> str:
    import subprocess

    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True).stdout
    parts = out.split()  # "postgres (PostgreSQL) 15.18 (Debian ...)"
    return parts[2] if len(parts) > 2 else out.strip()


if __name__ == "__main__":
    raise SystemExit(main())
