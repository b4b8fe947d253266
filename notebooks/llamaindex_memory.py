# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   # ruff: noqa: E402 (a notebook imports a module in the cell that first needs it)
# ---

# %% [markdown]
# # Persistent memory with LlamaIndex: `VectorStoreIndex` over a managed Chroma store
#
# A `VectorStoreIndex` over `llamaindex_modelcache.ManagedVectorStore`, which wraps a
# `ChromaVectorStore` on a `chromadb.PersistentClient`. The idiom is the usual one:
#
# ```python
# store = ManagedVectorStore(ChromaVectorStore(chroma_collection=collection), memory_dir="memory",
#                            embed_model=ManagedEmbedding(...))
# index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
# index.insert(document); index.as_retriever().retrieve("...")
# ```
#
# Every node is committed to a memory database first (SQLite with an FTS5 keyword index, in
# `memory/`), the source of truth; Chroma only ever receives vectors of the model's space. The
# timeline, one restart at a time:
#
# 1. first start, offline with an empty cache: the chain installs the bundled copy of
#    all-MiniLM-L6-v2 (`bundled` tier); the notes go to the database and to Chroma;
# 2. no model at all: keyword mode; `index.as_retriever()` answers from FTS5, new notes are
#    accepted and *pending*, and Chroma receives nothing;
# 3. the model is installed again: a new store over the same database and the same Chroma
#    collection writes the pending notes by itself; vector search again;
# 4. a restart: every note is there, once.
#
# Offline, in a temp dir the notebook creates and works in; about 20 s on 2 CPU cores. CI executes
# it (`tests/integration/test_notebooks.py`).

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
# `open_memory(embed_model)` opens the agent's memory like a process starting: the Chroma
# collection `agent-memory` persisted in `chroma/`, the memory database in `memory/`, and the
# index over them. `ask()` prints each question's best note with how it was found
# (`node.metadata["retrieved_by"]`: `vector`, `keyword` or `hybrid`, hidden from the LLM and the
# embedding) and its score (in [0, 1]); `record()` notes the state of each step for the timeline.

# %%
import chromadb
from llama_index.core import Document, VectorStoreIndex
from llama_index.vector_stores.chroma import ChromaVectorStore

from llamaindex_modelcache import ManagedEmbedding, ManagedVectorStore

CHROMA_DIR = "chroma"  # relative to the working directory, $WORK
MEMORY_DIR = "memory"

NOTES = {
    "standup": "The daily standup moved to 9:30 in the small meeting room.",
    "oncall": "Priya is on call this week; her backup is Tom.",
    "deploy": "Production deploys are frozen until the audit finishes on the 20th.",
    "vpn": "The VPN certificate expires at the end of the month; renew it in the IT portal.",
    "lunch": "The team lunch is on Friday at the Thai place on Baker Street.",
    "laptop": "Return the old laptop to the front desk before leaving.",
}
QUESTIONS = {  # some share words with the note, some are pure paraphrases
    "When is the daily standup now?": "standup",
    "Who should I page if the site goes down?": "oncall",
    "Can I ship a release to prod today?": "deploy",
    "Where is the team lunch?": "lunch",
    "What do I have to do about the VPN?": "vpn",
}
TIMELINE = []  # one row per step, for the table and the picture


def open_memory(embed_model: ManagedEmbedding):
    """(store, index, collection) over the persisted Chroma collection and the memory database."""
    client = chromadb.PersistentClient(path=CHROMA_DIR, settings=chromadb.config.Settings(anonymized_telemetry=False))
    collection = client.get_or_create_collection("agent-memory")
    store = ManagedVectorStore(ChromaVectorStore(chroma_collection=collection), memory_dir=MEMORY_DIR,
                               embed_model=embed_model)
    return store, VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model), collection


def pending(store: ManagedVectorStore, collection) -> int:
    """Notes not yet in Chroma in the model's space: the database records each one it wrote there.
    (``status()["pending"]`` counts what a vector query cannot reach now: every note while degraded.)"""
    status = store.status()
    return status["memories"] - status["store_fingerprints"].get(SPACE, 0)


def record(store: ManagedVectorStore, collection, step: str, answered: str, tier: str | None = None) -> None:
    TIMELINE.append({"step": step, "tier": tier or store.embed_model.active_tier, "answered": answered,
                     "memories": store.count(), "chroma": collection.count(), "pending": pending(store, collection)})


def state(store: ManagedVectorStore, collection) -> None:
    emb, status = store.embed_model, store.status()
    print(f"active tier: {emb.active_tier} | model: {emb.active_model} | degraded: {emb.degraded} | "
          f"query mode: {status['query_mode']} | notes: {store.count()} | in Chroma: {collection.count()} | "
          f"pending: {pending(store, collection)}")


def ask(store, index, collection, step: str, questions: dict[str, str] | None = None) -> None:
    questions = questions or QUESTIONS
    retriever = index.as_retriever(similarity_top_k=2)
    hits, hows = 0, set()
    for question, expected in questions.items():
        found = retriever.retrieve(question)
        top = found[0] if found else None
        ok = top is not None and top.node.ref_doc_id == expected
        hits += ok
        if top is not None:
            hows.add(top.node.metadata["retrieved_by"])
        answer = (f"{top.node.get_content()}  [{top.node.metadata['retrieved_by']} {top.score:.2f}]"
                  if top else "(nothing)")
        print(f"{'✓' if ok else '✗'} {question:<42} -> {answer}")
    answered = "+".join(sorted(hows)) or "-"
    print(f"\nanswered {hits}/{len(questions)} correctly (top-1), by {answered}")
    state(store, collection)
    record(store, collection, step, answered)


# %% [markdown]
# ## 1. First start: offline, empty cache
#
# `ManagedEmbedding` is a LlamaIndex `BaseEmbedding`; constructing it loads nothing. On the first
# embed the chain tries the preferred model (not cached, offline: fails, logged once), then the
# bundled package, which it installs into the cache (hashed and locked) and loads.
# `allow_degraded=True` lets the index's own embedding calls return keyword vectors instead of
# raising when no model is left (LlamaIndex embeds nodes before the store sees them, so
# `index.insert` never fails); the store never passes such vectors on to Chroma.

# %% tags=["first-start"]
CACHE = WORK / "cache"
embed_model = ManagedEmbedding(model_name="all-MiniLM-L6-v2", cache_dir=str(CACHE), offline=True, allow_degraded=True)
store, index, collection = open_memory(embed_model)
for key, text in NOTES.items():
    index.insert(Document(text=text, id_=key))
SPACE = store.embed_model.fingerprint
print(f"inserted {store.count()} notes; Chroma holds {collection.count()}, fingerprint {SPACE}\n")
ask(store, index, collection, "1. model: 6 inserted")

# %% [markdown]
# ## 2. A machine with no model: keyword mode
#
# An empty cache, no network, and no bundled package (`fallback.bundled: false` stands in for
# uninstalling it): only the keyword tier is left and the embeddings are degraded (a Python
# warning says so, once). A bare `ManagedEmbedding` refuses to embed rather than change space
# silently; the managed store answers `index.as_retriever()` from FTS5.

# %% tags=["keyword-mode"]
from modelcache.errors import ModelUnavailableError

store.close()
NO_MODEL = WORK / "no-model.yaml"
NO_MODEL.write_text("fallback:\n  bundled: false  # as if modelcache[bundled] were not installed\n")
EMPTY = WORK / "empty-cache"
try:
    ManagedEmbedding(model_name="all-MiniLM-L6-v2", cache_dir=str(EMPTY), offline=True,
                     config=str(NO_MODEL)).get_text_embedding("hello")
except ModelUnavailableError as exc:
    print(f"a bare ManagedEmbedding: ModelUnavailableError: {str(exc)[:120]}...\n")
lost = ManagedEmbedding(model_name="all-MiniLM-L6-v2", cache_dir=str(EMPTY), offline=True, config=str(NO_MODEL),
                        allow_degraded=True)
store, index, collection = open_memory(lost)
ask(store, index, collection, "2. no model: reopened")

# %% [markdown]
# A new note is accepted: `index.insert` returns once it is committed to the database, and it is
# found by keyword at once. It is *pending*: Chroma receives nothing (the keyword vectors the
# index computed are not passed on). Hybrid search asked for (`vector_store_query_mode="hybrid"`)
# answers by keyword too: there is no query vector to fuse.

# %% tags=["degraded-insert"]
CHROMA_BEFORE = collection.count()
index.insert(Document(text="The printer on the third floor needs a new toner cartridge.", id_="printer"))
print(f"notes: {store.count()} | Chroma: {CHROMA_BEFORE} before, {collection.count()} after "
      f"(received nothing while degraded: {collection.count() == CHROMA_BEFORE}) | "
      f"pending: {pending(store, collection)}\n")
ask(store, index, collection, "2. no model: +1 inserted", {"Which printer needs toner?": "printer"})
QUESTIONS["Which device is out of ink?"] = "printer"  # a paraphrase: needs the model
hit = index.as_retriever(similarity_top_k=1, vector_store_query_mode="hybrid").retrieve("printer toner")[0]
print(f"\nhybrid asked for: {hit.node.get_content()}  [{hit.node.metadata['retrieved_by']} {hit.score:.2f}]")

# %% [markdown]
# ## 3. The model is installed again: the pending note reaches Chroma by itself
#
# `modelcache install all-MiniLM-L6-v2 --from DIR` (here through the Python API) puts the model in
# the empty cache. The agent restarts with the same config: the preferred tier loads from the
# cache, in the space of step 1. A new store over the same memory database and the same Chroma
# collection finds the pending note; its background sync embeds it and writes it to Chroma,
# nobody calls `sync()`. Then the paraphrase about the printer is found by vector search.

# %% tags=["recovered"]
from modelcache import ModelManager, get_registry, load_settings

store.close()
model_files = get_registry().get("bundled-mini").local_dir
local = ModelManager(load_settings(model_cache={"directory": str(EMPTY)})).install("all-MiniLM-L6-v2", model_files)
print(f"installed {local.spec.repo_id}: {len(local.files)} files verified and locked at {local.commit[:12]}\n")
back = ManagedEmbedding(model_name="all-MiniLM-L6-v2", cache_dir=str(EMPTY), offline=True, config=str(NO_MODEL),
                        allow_degraded=True)
store, index, collection = open_memory(back)  # the background sync starts here
samples, started = [], time.perf_counter()
while True:
    samples.append((time.perf_counter() - started, pending(store, collection), collection.count()))
    if samples[-1][1] == 0 or samples[-1][0] > 120:
        break
    time.sleep(0.05)
record(store, collection, "3. model back: opened", "(syncing)", tier=store.embed_model.active_tier)
TIMELINE[-1].update(chroma=samples[0][2], pending=samples[0][1])
shown = samples if len(samples) <= 6 else samples[:3] + samples[-3:]
for t, waiting, in_chroma in shown:
    print(f"  t={t:5.2f}s  pending: {waiting}  in Chroma: {in_chroma}")
print(f"pending went to {samples[-1][1]} by itself in {samples[-1][0]:.1f}s (from {samples[0][1]}); "
      f"Chroma holds {collection.count()}")
print(f"fingerprint {store.embed_model.fingerprint}: the space of step 1: {store.embed_model.fingerprint == SPACE}; "
      f"Chroma's vectors by space: {store.status()['store_fingerprints']}\n")
ask(store, index, collection, "3. model back: synced")
hit = index.as_retriever(similarity_top_k=1, vector_store_query_mode="hybrid").retrieve("printer toner")[0]
print(f"\nhybrid asked for: {hit.node.get_content()}  [{hit.node.metadata['retrieved_by']} {hit.score:.2f}]")

# %% [markdown]
# ## 4. A restart: every note is there, once
#
# `store.get_nodes()` reads the memory database; Chroma's own ids show that each node is in the
# collection exactly once.

# %% tags=["reopened"]
store.close()
store, index, collection = open_memory(ManagedEmbedding(model_name="all-MiniLM-L6-v2", cache_dir=str(EMPTY),
                                                        offline=True, config=str(NO_MODEL), allow_degraded=True))
nodes = store.get_nodes()
chroma_ids = collection.get()["ids"]
ALL = sorted([*NOTES, "printer"])
print(f"notes in the database: {store.count()}, in Chroma: {len(chroma_ids)}, pending: {store.status()['pending']}")
print(f"every note there once: database {sorted(n.ref_doc_id for n in nodes) == ALL}, "
      f"Chroma {sorted(chroma_ids) == sorted(n.node_id for n in nodes)}\n")
ask(store, index, collection, "4. reopened")

# %% [markdown]
# ## The timeline
#
# The active tier at each step, how the retriever answered, and where the notes were: the notes
# in the database (the source of truth) never drop, Chroma's count stays flat while no model is
# available, and the pending note goes back to 0 by itself once the model is back.

# %% tags=["timeline"]
print(f"{'step':<26} {'tier':<10} {'answered by':<12} {'notes':>6} {'in Chroma':>10} {'pending':>8}")
for row in TIMELINE:
    print(f"{row['step']:<26} {row['tier']!s:<10} {row['answered']:<12} {row['memories']:>6} "
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
          label="notes (database)")
ax.stairs([r["chroma"] for r in TIMELINE], edges, baseline=None, lw=2, ls="--", color="tab:purple",
          label="nodes in Chroma")
ax.bar(x, [r["pending"] for r in TIMELINE], width=0.35, color="tab:orange", label="pending (not in Chroma yet)")
top = max(r["memories"] for r in TIMELINE)
for i, row in enumerate(TIMELINE):
    ax.text(i, top + 0.8, f"tier: {row['tier']}\nanswered: {row['answered']}", ha="center", va="bottom",
            fontsize=8, color=TIER_COLORS.get(row["tier"], "grey"))
    if row["pending"]:
        ax.text(i, row["pending"] + 0.15, str(row["pending"]), ha="center", fontsize=8, color="tab:orange")
ax.set_xticks(x, [row["step"] for row in TIMELINE], rotation=12, fontsize=8)
ax.set(ylim=(0, top + 3), xlim=(-0.5, len(TIMELINE) - 0.5), ylabel="count",
       title="The index's memory through losing its model and getting it back")
ax.legend(loc="lower left", fontsize=8)
ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
plt.show()

# %% tags=["cleanup"]
store.close()
os.chdir(START_DIR)
shutil.rmtree(WORK, ignore_errors=True)
print(f"done in {time.perf_counter() - T0:.0f}s; workspace removed")
