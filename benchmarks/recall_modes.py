"""Recall@5 of the retriever's modes on text found on this machine (no network).

Retrieval set: the installed Python distributions (``importlib.metadata``). Query = a
package's one-line ``Summary``; its relevant document = the package's long description
(README), whitespace-collapsed, with the summary sentence itself removed (many READMEs open
with it verbatim, which would make the task trivial for keyword search), cut to the first
``--chars`` characters. One relevant document per query.

Modes, all through ``langchain_modelcache.FallbackRetriever`` over an ``InMemoryVectorStore``:
``vector`` (all-MiniLM-L6-v2, obtained offline through the chain: the bundled copy),
``bm25`` (the MemoryIndex), ``hybrid`` (reciprocal rank fusion of both), and, for reference,
``vector`` on keyword-mode hashed vectors (what the store holds when no model is available).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/recall_modes.py [--chars 2000] [--k 5]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from langchain_modelcache import FallbackRetriever, ManagedEmbeddings  # noqa: E402


def build_set(chars: int, min_summary: int = 15, min_body: int = 300) -> list[tuple[str, str, str]]:
    """``(package, query, document)`` for every installed distribution with usable metadata."""
    seen, rows = set(), []
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if not name or name.lower() in seen:
            continue
        seen.add(name.lower())
        summary = " ".join((dist.metadata.get("Summary") or "").split())
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        body = " ".join(body.split())
        if summary:
            body = re.sub(re.escape(summary.rstrip(".")) + r"\.?", " ", body, flags=re.IGNORECASE)
            body = " ".join(body.split())
        if len(summary) >= min_summary and len(body) >= min_body:
            rows.append((name, summary, body[:chars]))
    return sorted(rows)


def recall(retriever: FallbackRetriever, rows, k: int, mode: str) -> tuple[float, float, float]:
    """(recall@k, MRR@k, seconds per query)."""
    hits, rr, t0 = 0, 0.0, time.perf_counter()
    for name, query, _ in rows:
        ids = [d.id for d in retriever.invoke(query, k=k, mode=mode)]
        if name in ids:
            hits += 1
            rr += 1.0 / (ids.index(name) + 1)
    return hits / len(rows), rr / len(rows), (time.perf_counter() - t0) / len(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=2000, help="document length cut (characters)")
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    rows = build_set(args.chars)
    print(f"retrieval set: {len(rows)} installed packages (query = Summary, document = description, "
          f"first {args.chars} chars, summary removed)")
    results = []
    with tempfile.TemporaryDirectory(prefix="modelcache-bench-") as tmp:
        model = ManagedEmbeddings(cache_dir=str(Path(tmp) / "cache"))
        t0 = time.perf_counter()
        memory = FallbackRetriever(vectorstore=InMemoryVectorStore(model))
        memory.add_texts([r[2] for r in rows], ids=[r[0] for r in rows])
        print(f"indexed with {model.active_model} (tier {model.active_tier}, degraded={model.degraded}) "
              f"in {time.perf_counter() - t0:.1f}s")
        used = model.active_model
        for mode, emb in (("vector", used), ("bm25", "(none: BM25 index)"), ("hybrid", used)):
            results.append((mode, emb, *recall(memory, rows, args.k, mode)))

        config = Path(tmp) / "keyword.yaml"
        config.write_text("fallback:\n  bundled: false\n")
        keyword = ManagedEmbeddings(cache_dir=str(Path(tmp) / "empty"), config=str(config))
        kw_memory = FallbackRetriever(vectorstore=InMemoryVectorStore(keyword))
        kw_memory.add_texts([r[2] for r in rows], ids=[r[0] for r in rows])
        results.append(("vector", "keyword mode (hashed)", *recall(kw_memory, rows, args.k, "vector")))

    print("\nms/query is wall time on this machine (query embedding + search), noisy under load.")
    print(f"\n| mode   | embeddings               | recall@{args.k} | MRR@{args.k} | ms/query |")
    print("|--------|--------------------------|----------|-------|----------|")
    for mode, emb, rec, mrr, sec in results:
        print(f"| {mode:<6} | {emb:<24} | {rec:8.3f} | {mrr:5.3f} | {sec * 1000:8.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
