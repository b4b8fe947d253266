"""One agent service of the fleet (docs/fleet/compose.yaml): its memory over HTTP.

The memories live in PostgreSQL (``MEMORY_URL``), their vectors in the Chroma server (``CHROMA_HOST``,
``CHROMA_PORT``), embedded by the chain of ``MODELCACHE_CONFIG``: the fleet's embedding server first,
then the local copy of the same model in the shared cache (read-only, offline). Run it with
``uvicorn agent:app --host 0.0.0.0 --port 8080``.

- ``POST /memories`` ``{"texts": [...], "ids": [...]}``: add (idempotent by id), answers the ids;
- ``GET /search?q=...&k=3&mode=auto``: the memories found, how (vector / keyword / hybrid), and the
  embedding tier and fingerprint (space) of the query's vector;
- ``GET /health``: the embedding chain's and the memory's status (503 until the first embed works).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import chromadb
from chromadb.config import Settings as ChromaSettings
from fastapi import FastAPI, HTTPException
from langchain_chroma import Chroma
from pydantic import BaseModel

from langchain_modelcache import ManagedEmbeddings, ManagedVectorStore

state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    embeddings = ManagedEmbeddings()  # everything from MODELCACHE_CONFIG and the environment
    client = chromadb.HttpClient(host=os.environ.get("CHROMA_HOST", "chroma"),
                                 port=int(os.environ.get("CHROMA_PORT", "8000")),
                                 settings=ChromaSettings(anonymized_telemetry=False))
    inner = Chroma(os.environ.get("COLLECTION", "memories"), embeddings, client=client)
    store = ManagedVectorStore(inner, memory_url=os.environ["MEMORY_URL"])
    state.update(embeddings=embeddings, store=store)
    try:
        yield
    finally:
        store.close()


app = FastAPI(title="agent", lifespan=lifespan)


class Memories(BaseModel):
    texts: list[str]
    ids: list[str] | None = None


def _space() -> dict[str, Any]:
    service = state["embeddings"].service
    return {"tier": service.active_tier, "fingerprint": service.fingerprint, "degraded": service.degraded}


@app.post("/memories")
def add(body: Memories) -> dict[str, Any]:
    ids = state["store"].add_texts(body.texts, ids=body.ids)
    return {"ids": ids, **_space()}


@app.get("/search")
def search(q: str, k: int = 3, mode: str = "auto") -> dict[str, Any]:
    docs = state["store"].similarity_search(q, k=k, mode=mode)
    hits = [{"id": d.id, "text": d.page_content, "how": d.metadata.get("memory_search"),
             "score": d.metadata.get("memory_score")} for d in docs]
    return {"hits": hits, **_space()}


@app.get("/health")
def health() -> dict[str, Any]:
    try:
        state["embeddings"].embed_query("health check")
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the orchestrator reads the status
        raise HTTPException(503, f"no embedding tier serves: {exc}") from None
    store = state["store"].status()
    return {**_space(), "memory": {k: store.get(k) for k in ("query_mode", "pending", "store_fingerprints")}}
