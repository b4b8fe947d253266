"""Agent memory benchmark: recall@5 of vector / keyword / hybrid search, and the memory
database's latency, at 1k and 10k memories, printed side by side.

Corpus: ``benchmarks/memory_corpus.py`` (held-out docstring pairs from the packages installed
in this interpreter: query = a summary line, document = the rest of that docstring). At size N
the memories are the first N documents of the shuffled corpus and the queries are their N
summaries (a fixed random sample of ``--queries`` of them when N is larger); each query has
exactly one relevant memory.

- vector: all-MiniLM-L6-v2 through ``modelcache`` (``EmbeddingService``, offline, a temp cache:
  the bundled copy), documents embedded as ``kind="document"``, queries as ``kind="query"``,
  exact cosine top-k in numpy. Embeddings are cached under ``/tmp/modelcache-bench-cache``
  (keyed on the model's fingerprint), so a rerun embeds nothing.
- keyword: ``SQLiteMemoryDB.search`` (FTS5 BM25, the product's own code).
- hybrid: what ``MemoryEngine.search(mode="hybrid")`` does: ``fetch = max(4k, 20)`` from each
  ranker, fused by ``modelcache.memory.fusion`` with the product's defaults; alternatives beside it.
- latency: one memory added (``SQLiteMemoryDB.add`` of one memory, a committed transaction)
  with N memories already in the database; FTS5 queries; one add through ``MemoryEngine`` with
  no model (keyword only: the memory is committed and left pending).

Benchmarks print; tests never assert times.

    .venv/bin/python benchmarks/memory.py [--sizes 1000,10000] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
_TMP = tempfile.TemporaryDirectory(prefix="modelcache-bench-memory-")
os.environ["MODELCACHE_CACHE_DIR"] = str(Path(_TMP.name) / "model-cache")  # empty: the chain lands on the bundled copy
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import memory_corpus  # noqa: E402
import numpy as np  # noqa: E402

from modelcache.memory import fusion  # noqa: E402
from modelcache.memory.db import Memory, SQLiteMemoryDB  # noqa: E402

K = 5


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- embeddings (cached) ---------------------------------------------------------------------
class Embedder:
    """The real model through modelcache's chain, with a per-text vector cache on disk."""

    def __init__(self, cache_dir: Path) -> None:
        from modelcache.serving.service import EmbeddingService

        self.service = EmbeddingService(background_recovery=False)
        self.fingerprint = self.service.ensure_active()
        if self.service.degraded:
            raise SystemExit(f"no real model available (tier {self.service.active_tier}): install the bundled extra")
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / f"embeddings-{self.fingerprint}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path) as data:
                self.vectors = dict(zip(data["keys"].tolist(), data["vectors"]))
        self.embedded = 0
        self.seconds = 0.0

    @staticmethod
    def _key(kind: str, text: str) -> str:
        return hashlib.sha1(f"{kind}\0{text}".encode()).hexdigest()

    def _save(self) -> None:
        keys = list(self.vectors)
        tmp = self.path.with_name(f"{self.path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))
        os.replace(tmp, self.path)

    def embed(self, texts: Sequence[str], kind: str) -> np.ndarray:
        keys = [self._key(kind, t) for t in texts]
        missing = list(dict.fromkeys(i for i, k in enumerate(keys) if k not in self.vectors))
        if missing:
            log(f"embedding {len(missing)} texts as {kind!r} (cached under {self.path.parent}) ...")
            t0, batch, since_save = time.perf_counter(), 64, 0
            for start in range(0, len(missing), batch):
                idx = missing[start:start + batch]
                vecs = self.service.embed([texts[i] for i in idx], kind)
                for i, v in zip(idx, vecs):
                    self.vectors[keys[i]] = np.asarray(v, dtype=np.float32)
                since_save += len(idx)
                if since_save >= 2048:
                    self._save()
                    since_save = 0
                    done = start + len(idx)
                    log(f"  {done}/{len(missing)} ({done / (time.perf_counter() - t0):.0f}/s)")
            self._save()
            self.embedded += len(missing)
            self.seconds += time.perf_counter() - t0
        out = np.stack([self.vectors[k] for k in keys]).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


# -- fusion alternatives -----------------------------------------------------------------------
def minmax(scores: list[tuple[str, float]]) -> dict[str, float]:
    if not scores:
        return {}
    vals = [s for _, s in scores]
    lo, hi = min(vals), max(vals)
    return {i: (1.0 if hi == lo else (s - lo) / (hi - lo)) for i, s in scores}


def convex(vec: list[tuple[str, float]], kw: list[tuple[str, float]], w_kw: float) -> list[str]:
    """Min-max normalise each ranker's fetched scores to [0, 1] (absent: 0), then mix."""
    nv, nk = minmax(vec), minmax(kw)
    ids = list(dict.fromkeys([i for i, _ in vec] + [i for i, _ in kw]))
    return sorted(ids, key=lambda i: (-(w_kw * nk.get(i, 0.0) + (1 - w_kw) * nv.get(i, 0.0)), i))


def default_hybrid(vec: list[tuple[str, float]], kw: list[tuple[str, float]]) -> list[str]:
    """The product's hybrid, exactly as ``MemoryEngine.search`` calls it."""
    return [i for i, _ in fusion.rrf([[i for i, _ in vec], [i for i, _ in kw]], k=fusion.RRF_K)]


def rrf_k(k: int) -> Callable:
    return lambda vec, kw: [i for i, _ in fusion.rrf([[i for i, _ in vec], [i for i, _ in kw]], k=k)]


def methods() -> list[tuple[str, Callable]]:
    return [
        ("vector (MiniLM, cosine)", lambda vec, kw: [i for i, _ in vec]),
        ("keyword (FTS5 BM25)", lambda vec, kw: [i for i, _ in kw]),
        (f"hybrid: product default (RRF k={fusion.RRF_K})", default_hybrid),
        ("  alt: RRF k=60", rrf_k(60)),
        ("  alt: min-max convex 0.4 kw / 0.6 vec", lambda vec, kw: convex(vec, kw, 0.4)),
        ("  alt: min-max convex 0.3 kw / 0.7 vec", lambda vec, kw: convex(vec, kw, 0.3)),
    ]


# -- measurements ------------------------------------------------------------------------------
def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.array(samples_s) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def fill_db(path: Path, pairs: list[memory_corpus.Pair]) -> tuple[SQLiteMemoryDB, float]:
    db = SQLiteMemoryDB(path)
    t0 = time.perf_counter()
    for start in range(0, len(pairs), 1000):
        db.add([Memory(p.id, p.document) for p in pairs[start:start + 1000]])
    return db, time.perf_counter() - t0


def recall_at(n: int, pairs, embedder: Embedder, db: SQLiteMemoryDB, n_queries: int) -> dict:
    docs = pairs[:n]
    ids = [p.id for p in docs]
    qidx = list(range(n))
    if n > n_queries:
        qidx = sorted(random.Random(memory_corpus.SEED + n).sample(range(n), n_queries))
    dvec = embedder.embed([p.document for p in docs], "document")
    qvec = embedder.embed([docs[i].query for i in qidx], "query")
    fetch = max(4 * K, 20)  # as MemoryEngine.search
    hits = {name: 0 for name, _ in methods()}
    kw_s = vec_s = 0.0
    for row, i in enumerate(qidx):
        t0 = time.perf_counter()
        sims = dvec @ qvec[row]
        top = np.argpartition(-sims, fetch)[:fetch]
        top = top[np.lexsort((top, -sims[top]))]
        vec = [(ids[j], float(sims[j])) for j in top]
        t1 = time.perf_counter()
        kw = db.search(docs[i].query, fetch)
        t2 = time.perf_counter()
        vec_s += t1 - t0
        kw_s += t2 - t1
        for name, fn in methods():
            if docs[i].id in fn(vec, kw)[:K]:
                hits[name] += 1
    return {"recall": {m: h / len(qidx) for m, h in hits.items()}, "queries": len(qidx),
            "vec_ms": 1000 * vec_s / len(qidx), "kw_ms": 1000 * kw_s / len(qidx)}


def add_latency(db_dir: Path, extra: list[memory_corpus.Pair], reps: int, durability: str) -> tuple[float, float]:
    db = SQLiteMemoryDB(db_dir, durability=durability)
    samples = []
    for p in extra[:reps]:
        m = Memory(f"{durability}:{p.id}", p.document)
        t0 = time.perf_counter()
        db.add([m])
        samples.append(time.perf_counter() - t0)
    db.close()
    return percentiles(samples)


def query_latency(db: SQLiteMemoryDB, queries: list[str], k: int) -> tuple[float, float]:
    samples = []
    for q in queries:
        t0 = time.perf_counter()
        db.search(q, k)
        samples.append(time.perf_counter() - t0)
    return percentiles(samples)


def engine_add_latency(db_dir: Path, extra: list[memory_corpus.Pair], reps: int) -> tuple[float, float] | None:
    """One ``MemoryEngine.add`` with no model at all (keyword only): committed, left pending."""
    from modelcache.memory.engine import MemoryEngine
    from modelcache.serving.service import EmbeddingService
    from modelcache.settings import load_settings

    class NoStore:  # the inner store must receive nothing while no same-space model is available
        def write(self, memories):
            raise AssertionError("the inner store received a memory while degraded")

        def delete(self, ids):
            pass

        def search(self, vector, k):
            return []

    empty = Path(_TMP.name) / "no-model-cache"  # the bundled tier may have filled the other one
    settings = load_settings({"offline": True, "fallback": {"bundled": False}}, model_cache={"directory": str(empty)})
    service = EmbeddingService(settings, background_recovery=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = MemoryEngine(db_dir, NoStore(), lambda: service, store_key="bench", background=False)
        engine.add(["warm-up memory"], ids=["warm-up"])
        if engine.target() is not None:
            log(f"MemoryEngine keyword-only setup found a model ({service.active_tier}): skipped")
            return None
        samples = []
        for p in extra[:reps]:
            t0 = time.perf_counter()
            engine.add([p.document], ids=[f"engine:{p.id}"])
            samples.append(time.perf_counter() - t0)
    engine.db.close()
    return percentiles(samples)


# -- output ----------------------------------------------------------------------------------
def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[c])) for r in [header] + rows) for c in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) if c == 0 else str(h).rjust(w) for c, (h, w) in enumerate(zip(header, widths))))
    print(line)
    for r in rows:
        print("  ".join(str(v).ljust(w) if c == 0 else str(v).rjust(w) for c, (v, w) in enumerate(zip(r, widths))))


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def versions(embedder: Embedder | None) -> str:
    from importlib import metadata

    def v(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    parts = [f"python {platform.python_version()}", f"sqlite {sqlite3.sqlite_version}", f"numpy {np.__version__}",
             f"torch {v('torch')}",
             f"sentence-transformers {v('sentence-transformers')}", f"modelcache {v('modelcache')}"]
    if embedder is not None:
        counters = embedder.service.counters
        tiers = sorted(k.split(":", 1)[1] for k in counters if k.startswith("embeds:"))
        parts.append(f"model {embedder.service.model} (fingerprint {embedder.fingerprint}, offline; "
                     f"tiers used this run: {', '.join(tiers) or 'none, all cached'})")
    return ", ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="memories in the database, comma-separated")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1k only, fewer queries and repetitions")
    parser.add_argument("--queries", type=int, default=1000, help="queries sampled per size (recall)")
    parser.add_argument("--reps", type=int, default=200, help="single adds / FTS5 queries timed per size")
    args = parser.parse_args()
    if args.quick:
        sizes = [int(s) for s in args.sizes.split(",")] if "--sizes" in sys.argv else [1000]
        args.queries, args.reps = min(args.queries, 200), min(args.reps, 50)
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    pairs, stats = memory_corpus.load()
    corpus_s = time.perf_counter() - t0
    if max(sizes) + 3 * args.reps > len(pairs):
        raise SystemExit(f"the corpus has {len(pairs)} pairs; {max(sizes)} memories + {3 * args.reps} adds need more")
    extra = pairs[max(sizes):]  # never in any measured database: the memories the latency runs add
    embedder = Embedder(memory_corpus.CACHE_DIR)

    results, latency = {}, {}
    with tempfile.TemporaryDirectory(prefix="modelcache-bench-db-") as tmp:
        for n in sizes:
            db_dir = Path(tmp) / f"db-{n}"
            db, fill_s = fill_db(db_dir, pairs[:n])
            log(f"{n} memories: database filled in {fill_s:.1f} s; measuring recall ...")
            results[n] = recall_at(n, pairs, embedder, db, args.queries)
            queries = [p.query for p in random.Random(memory_corpus.SEED - n).sample(pairs[:n], args.reps)]
            latency[n] = {
                "fts5_k5": query_latency(db, queries, K),
                "fts5_k20": query_latency(db, queries, max(4 * K, 20)),
            }
            db.close()
            latency[n]["add_normal"] = add_latency(db_dir, extra[:args.reps], args.reps, "normal")
            latency[n]["add_full"] = add_latency(db_dir, extra[args.reps:2 * args.reps], args.reps, "full")
            latency[n]["engine_add"] = engine_add_latency(db_dir, extra[2 * args.reps:3 * args.reps], args.reps)
    wall = time.perf_counter() - t_start

    print("modelcache agent-memory benchmark")
    print(f"machine: {machine()}")
    print(f"versions: {versions(embedder)}")
    print(f"corpus: {stats['pairs']} held-out docstring pairs from {stats['packages']} packages "
          f"({stats['files']} files parsed, {stats['candidates']} candidates, {stats['duplicates_dropped']} duplicates "
          f"dropped; seed {stats['seed']}; loaded in {corpus_s:.1f} s)")
    print(f"embedded this run: {embedder.embedded} texts in {embedder.seconds:.0f} s (the rest from the cache)")

    cols = [f"{n // 1000}k" if n % 1000 == 0 else str(n) for n in sizes]
    names = [name for name, _ in methods()]
    rows = [[name] + [f"{results[n]['recall'][name]:.3f}" for n in sizes] for name in names]
    rows.append(["queries"] + [str(results[n]["queries"]) for n in sizes])
    table(f"Recall@{K} (one relevant memory per query; hybrid fetches {max(4 * K, 20)} from each ranker)",
          ["method"] + cols, rows)
    default = names[2]
    verdict = all(results[n]["recall"][default] > max(results[n]["recall"][names[0]], results[n]["recall"][names[1]])
                  for n in sizes)
    print(f"default hybrid beats vector-only and keyword-only at every size: {'yes' if verdict else 'NO'}"
          + (" (--quick: a smoke run on a small sample, not the verdict)" if args.quick else ""))

    def cell(v):
        return "-" if v is None else f"{v[0]:.2f} / {v[1]:.2f}"

    rows = [
        ["add one memory, SQLiteMemoryDB (durability=normal)"] + [cell(latency[n]["add_normal"]) for n in sizes],
        ["add one memory, SQLiteMemoryDB (durability=full)"] + [cell(latency[n]["add_full"]) for n in sizes],
        ["add one memory, MemoryEngine keyword-only (no model)"] + [cell(latency[n]["engine_add"]) for n in sizes],
    ]
    table(f"Add one memory: p50 / p99 ms over {args.reps} single adds (target: database p50 < 5 ms)",
          ["measure"] + cols, rows)
    rows = [
        [f"FTS5 search, k={K}"] + [cell(latency[n]["fts5_k5"]) for n in sizes],
        [f"FTS5 search, k={max(4 * K, 20)} (hybrid fetch)"] + [cell(latency[n]["fts5_k20"]) for n in sizes],
    ]
    table(f"Keyword query: p50 / p99 ms over {args.reps} queries (target at 10k: p50 < 5 ms)", ["measure"] + cols, rows)
    rows = [
        ["keyword ranking (FTS5, fetch 20), mean ms"] + [f"{results[n]['kw_ms']:.2f}" for n in sizes],
        ["vector ranking (numpy exact, fetch 20), mean ms"] + [f"{results[n]['vec_ms']:.2f}" for n in sizes],
    ]
    table("Per-query ranking cost during the recall run (query embedding excluded)", ["measure"] + cols, rows)
    print(f"\nwall time: {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
