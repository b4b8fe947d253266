# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   # ruff: noqa: E402 (a notebook imports a module in the cell that first needs it)
# ---

# %% [markdown]
# # Persistent memory with LlamaIndex: `VectorStoreIndex` + `ManagedEmbedding`
#
# A `VectorStoreIndex` embedded by `ManagedEmbedding`, wrapped in `llamaindex_modelcache.FallbackRetriever`
# (a LlamaIndex `BaseRetriever` with a BM25 index of the same nodes), persisted to a directory and
# reloaded:
#
# 1. first start, offline with an empty cache: the chain installs the bundled copy of
#    all-MiniLM-L6-v2 (`bundled` tier) and the notes are indexed;
# 2. restart: the index is reloaded from disk; the model is now in the cache (`preferred` tier), in
#    the same embedding space, so the stored vectors are used as they are;
# 3. a machine with no model: keyword mode; the retriever answers from BM25 while a plain vector
#    retriever over the same index returns noise;
# 4. the model is installed again: `reindex()` recovers and re-embeds what was added meanwhile.
#
# Offline, in a temp dir the notebook creates; about 20 s on 2 CPU cores. CI executes it
# (`tests/integration/test_notebooks.py`).

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

# %%
from llama_index.core import VectorStoreIndex

from llamaindex_modelcache import FallbackRetriever, ManagedEmbedding

CACHE = WORK / "cache"
PERSIST = WORK / "memory"  # vector index (LlamaIndex storage) + BM25 index + reindex checkpoint

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


def ask(retriever, step: str) -> None:
    for question, expected in QUESTIONS.items():
        hits = retriever.retrieve(question)
        top = hits[0] if hits else None
        ok = top is not None and top.node.node_id == expected
        how = top.node.metadata.get("retrieved_by", "plain index retriever") if top else ""
        print(f"{'✓' if ok else '✗'} {question:<42} -> {top.node.get_content() if top else '(nothing)'}  [{how}]")


def state(embed_model: ManagedEmbedding, memory: FallbackRetriever | None = None) -> None:
    mode = memory.status()["query_mode"] if memory is not None else "-"
    print(f"active tier: {embed_model.active_tier} | model: {embed_model.active_model} | "
          f"degraded: {embed_model.degraded} | query mode: {mode} | fingerprint: {embed_model.fingerprint}")


# %% [markdown]
# ## 1. First start: offline, empty cache
#
# `ManagedEmbedding` is a LlamaIndex `BaseEmbedding`; constructing it loads nothing. On the first
# embed the chain tries the preferred model (not cached, offline: fails, logged once), then the
# bundled package, which it installs into the cache (hashed and locked) and loads.

# %% tags=["first-start"]
embed_model = ManagedEmbedding(model="all-MiniLM-L6-v2", cache_dir=str(CACHE), offline=True)
index = VectorStoreIndex([], embed_model=embed_model)
memory = FallbackRetriever(index, similarity_top_k=2, persist_dir=PERSIST)
memory.add_texts(list(NOTES.values()), ids=list(NOTES))
FIRST = embed_model.fingerprint
state(embed_model, memory)
ask(memory, "first start")
print("\npersisted:", ", ".join(sorted(p.relative_to(PERSIST).as_posix() for p in PERSIST.rglob("*") if p.is_file())))

# %% [markdown]
# ## 2. Restart: reload the index from disk
#
# `FallbackRetriever.load(dir, embed_model)` reopens the LlamaIndex storage
# (`load_index_from_storage`) and the BM25 index. The bundled install put the model's files in the
# cache under `sentence-transformers/all-MiniLM-L6-v2`, so this time the preferred tier loads from
# the cache, still with no network; same fingerprint, so vector search goes on. The reloaded index
# is an ordinary `VectorStoreIndex`: `index.as_retriever()` works on it too.

# %% tags=["reloaded"]
del memory, index
embed_model = ManagedEmbedding(model="all-MiniLM-L6-v2", cache_dir=str(CACHE), offline=True)
memory = FallbackRetriever.load(PERSIST, embed_model=embed_model, similarity_top_k=2)
ask(memory, "reloaded")
state(embed_model, memory)
print(f"same space as the stored vectors: {embed_model.fingerprint == FIRST}\n")
print("the plain LlamaIndex retriever on the reloaded index:")
ask(memory.index.as_retriever(similarity_top_k=1), "plain")

# %% [markdown]
# ## 3. A machine with no model: fallback to BM25
#
# An empty cache, no network, and no bundled package (`fallback.bundled: false` stands in for
# uninstalling it): the embeddings degrade to keyword mode (hashed token vectors of the same size).
# Those vectors are not comparable with the MiniLM vectors in the index, so the plain vector
# retriever returns noise, while `FallbackRetriever` sees the changed space and answers from BM25
# (which needs shared words).

# %% tags=["keyword-mode"]
NO_MODEL = WORK / "no-model.yaml"
NO_MODEL.write_text("fallback:\n  bundled: false\n  retry_preferred_after_s: 0\n")
EMPTY = WORK / "empty-cache"
lost = ManagedEmbedding(model="all-MiniLM-L6-v2", cache_dir=str(EMPTY), offline=True, config=str(NO_MODEL))
memory = FallbackRetriever.load(PERSIST, embed_model=lost, similarity_top_k=2)
print("FallbackRetriever:")
ask(memory, "keyword")
state(lost, memory)
print("\nthe plain vector retriever, hashed query vectors against MiniLM vectors:")
ask(memory.index.as_retriever(similarity_top_k=1), "plain")

# %%
memory.add_texts(["The printer on the third floor needs a new toner cartridge."], ids=["printer"])
QUESTIONS["Which device is out of ink?"] = "printer"
print("memories by embedding space:", memory.status()["fingerprints"])

# %% [markdown]
# ## 4. The model is installed again: `reindex()`
#
# `modelcache install all-MiniLM-L6-v2 --from DIR` (here through the Python API) puts the model
# in the empty cache. `reindex()` recovers to the preferred tier without a restart and re-embeds
# the one note added in keyword mode; then the paraphrase about the printer is found by vector search.

# %% tags=["recovered"]
from modelcache import ModelManager, get_registry, load_settings

model_files = get_registry().get("bundled-mini").local_dir
ModelManager(load_settings(model_cache={"directory": str(EMPTY)})).install("all-MiniLM-L6-v2", model_files)
report = memory.reindex(progress=False)
print(f"reindex: {report.reembedded} re-embedded, {report.skipped} already in the space")
print("memories by embedding space:", memory.status()["fingerprints"])
state(lost, memory)
ask(memory, "recovered")

# %% tags=["cleanup"]
shutil.rmtree(WORK, ignore_errors=True)
print(f"done in {time.perf_counter() - T0:.0f}s; workspace removed")
