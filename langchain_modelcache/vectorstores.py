"""``ManagedVectorStore``: a LangChain ``VectorStore`` whose memories survive any embedding model outage.

The memory database (SQLite + FTS5 in ``memory_dir``, :mod:`modelcache.memory.engine`) is the
source of truth; the user's store (InMemory, FAISS, Chroma, Qdrant, ...) is a derived index that
only ever holds vectors of the embeddings' space:

- ``add_texts`` / ``add_documents`` commit to the database first (that is the acknowledgement),
  then write to the inner store if a model of its space is available; otherwise the memories are
  *pending* and a background sync writes them when the model is back.
- Searches use vectors while the store is complete in the active space, FTS5 keyword search
  otherwise (``mode="auto"``), or both fused (``"hybrid"``). Every returned Document carries the
  memory's ``id``, text and metadata plus ``metadata["memory_search"]`` (``"vector"``,
  ``"keyword"`` or ``"hybrid"``) and ``metadata["memory_score"]`` (in [0, 1], higher is better; the
  scale of each kind is documented in :mod:`modelcache.memory.engine`).
- ``get_by_ids`` and :meth:`ManagedVectorStore.count` answer from the database.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore

from modelcache.memory.db import Memory, MemoryDB
from modelcache.memory.engine import MemoryEngine
from modelcache.memory.open import is_memory_db, open_memory_db, resolve_memory_target
from modelcache.memory.records import ID_KEY, MODES, Hit, Mode, SyncReport

from .embeddings import ManagedEmbeddings

log = logging.getLogger("modelcache")

#: metadata keys ManagedVectorStore adds to the Documents it returns (never stored)
SEARCH_KEY = "memory_search"
SCORE_KEY = "memory_score"
_RESERVED = (ID_KEY, SEARCH_KEY, SCORE_KEY)
_NO_DIR: Any = object()  # memory_dir not given: memory_url must be
_QDRANT_NAMESPACE = uuid.UUID("6f0e5a8e-3b7c-5d2a-9c41-0b8d7e6f5a43")
_SEARCH_OPTIONS = ("mode", "filter", "fetch_k", "score_threshold")


def _kind(store: VectorStore) -> str:
    """Which store this is, for the few things that differ (ids, upserts, scores, persistence)."""
    names = {c.__name__ for c in type(store).__mro__}
    if "InMemoryVectorStore" in names:
        return "inmemory"
    if "FAISS" in names:
        return "faiss"
    if "Chroma" in names:
        return "chroma"
    if names & {"QdrantVectorStore", "Qdrant"}:
        return "qdrant"
    return "other"


def default_store_key(store: VectorStore) -> str | None:
    """The key naming ``store`` in the memory database: stable for a store that persists, None for
    one that lives in this process only (InMemory, FAISS, an in-memory Chroma or Qdrant)."""
    kind = _kind(store)
    if kind in ("inmemory", "faiss"):
        return None
    if kind == "chroma":
        client = getattr(store, "_client", None)
        try:
            settings = client.get_settings()  # type: ignore[union-attr]
            impl = str(settings.chroma_api_impl).lower()
            local = "rust" in impl or "segment" in impl
            if local and not settings.is_persistent:
                return None
        except Exception:  # noqa: BLE001 - unknown client: treat it as persistent
            pass
        return f"chroma:{store._collection.id}"  # type: ignore[attr-defined]
    if kind == "qdrant":
        client = getattr(store, "client", None)
        options = dict(getattr(client, "init_options", None) or {})
        if options.get("location") == ":memory:":
            return None
        if options.get("path"):
            where = os.path.realpath(str(options["path"]))
        elif options.get("url") or options.get("location"):
            where = str(options.get("url") or options.get("location"))
        else:
            where = f"{options.get('host') or 'localhost'}:{options.get('port') or 6333}"
        return f"qdrant:{store.collection_name}:{where}"  # type: ignore[attr-defined]
    log.info("ManagedVectorStore: %s is treated as a store that lives in this process only (it is filled "
             "from the memory database at start); pass store_key=... if it persists, so that its contents "
             "are known across restarts", type(store).__name__)
    return None


def _clamp(score: float) -> float:
    score = float(score)
    if math.isnan(score):
        return 0.0
    return min(1.0, max(0.0, score))


class _LangChainInner:
    """The :class:`~modelcache.memory.records.InnerStore` over a LangChain store (calls serialised:
    FAISS, InMemory and Qdrant local mode are not safe to write from the background sync while a
    query reads)."""

    def __init__(self, store: VectorStore, embeddings: ManagedEmbeddings,
                 persist: Callable[[], None] | None = None) -> None:
        self.store = store
        self.embeddings = embeddings
        self.persist = persist
        self.kind = _kind(store)
        self.lock = threading.RLock()

    # -- ids and metadata ---------------------------------------------------------------------
    def native_ids(self, ids: Sequence[str]) -> list[str]:
        """Qdrant takes only UUIDs (and integers) as point ids: other ids map to a stable uuid5."""
        if self.kind != "qdrant":
            return list(ids)
        out = []
        for id_ in ids:
            try:
                out.append(str(uuid.UUID(id_)))
            except ValueError:
                out.append(str(uuid.uuid5(_QDRANT_NAMESPACE, id_)))
        return out

    def metadata(self, memory: Memory) -> dict:
        meta = {k: v for k, v in memory.metadata.items() if k not in _RESERVED}
        if self.kind == "chroma":  # Chroma takes scalar values only; the database keeps the rest
            meta = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}
        meta[ID_KEY] = memory.id
        return meta

    @staticmethod
    def doc_id(doc: Document) -> str | None:
        meta = doc.metadata or {}
        found = meta.get(ID_KEY) or doc.id
        return str(found) if found is not None else None

    # -- InnerStore -----------------------------------------------------------------------------
    def write(self, memories: list[Memory]) -> str | None:
        texts = [m.text for m in memories]
        ids = [m.id for m in memories]
        metadatas = [self.metadata(m) for m in memories]
        if self.kind == "faiss":  # embed first: nothing is removed unless the new vectors exist
            self.embeddings.reset_last_fingerprint()
            vectors = self.embeddings.embed_documents(texts)
            fingerprint = self.embeddings.last_fingerprint
            with self.lock:
                self._delete_present(ids)
                self.store.add_embeddings(list(zip(texts, vectors)), metadatas=metadatas, ids=ids)  # type: ignore[attr-defined]
                self._persist()
            return fingerprint
        with self.lock:
            if self.kind == "other":  # InMemory, Chroma and Qdrant upsert; others may duplicate
                self._delete_present(ids)
            self.embeddings.reset_last_fingerprint()
            self.store.add_texts(texts, metadatas=metadatas, ids=self.native_ids(ids))
            fingerprint = self.embeddings.last_fingerprint
            self._persist()
        return fingerprint

    def delete(self, ids: list[str]) -> None:
        if not ids:
            return
        with self.lock:
            self._delete_present(ids)
            self._persist()

    def _delete_present(self, ids: list[str]) -> None:
        if self.kind == "faiss":
            held = set(self.store.index_to_docstore_id.values())  # type: ignore[attr-defined]
            present = [i for i in ids if i in held]
            if present:
                self.store.delete(present)
            return
        native = self.native_ids(ids)
        if self.kind == "other":
            try:
                native = [d.id for d in self.store.get_by_ids(native) if d.id]
            except NotImplementedError:
                pass
            if not native:
                return
        try:
            self.store.delete(native)
        except (ValueError, KeyError):  # a store that refuses unknown ids: one by one
            for id_ in native:
                try:
                    self.store.delete([id_])
                except (ValueError, KeyError):
                    pass

    def _persist(self) -> None:
        if self.persist is not None:
            self.persist()

    def search(self, vector: list[float], k: int) -> list[tuple[str, float]]:
        with self.lock:
            pairs = self._scored(vector, k)
        return [(i, s) for i, s in ((self.doc_id(d), s) for d, s in pairs) if i is not None]

    def _relevance_fn(self) -> Callable[[float], float] | None:
        """The store's distance -> relevance function (None: the store has none)."""
        if self.kind == "inmemory":
            return lambda s: s  # InMemoryVectorStore scores are cosine similarities already
        try:
            return self.store._select_relevance_score_fn()
        except (NotImplementedError, ValueError):
            return None

    def _scored(self, vector: list[float], k: int) -> list[tuple[Document, float]]:
        """``(doc, relevance in [0, 1])`` from the store's best API for it, best first."""
        store = self.store
        raw: list[tuple[Document, float]] | None = None
        if hasattr(store, "similarity_search_with_score_by_vector"):
            raw = store.similarity_search_with_score_by_vector(vector, k=k)
        elif hasattr(store, "similarity_search_by_vector_with_relevance_scores"):
            raw = store.similarity_search_by_vector_with_relevance_scores(vector, k=k)
            if self.kind != "chroma":  # Chroma's returns distances despite the name; others relevance
                return [(d, _clamp(s)) for d, s in raw]
        if raw is not None:
            fn = self._relevance_fn()
            if fn is not None:
                return [(d, _clamp(fn(s))) for d, s in raw]
            return [(d, 1.0 / (1 + r)) for r, (d, _) in enumerate(raw)]
        docs = store.similarity_search_by_vector(vector, k=k)
        return [(d, 1.0 / (1 + r)) for r, d in enumerate(docs)]

    def mmr(self, vector: list[float], k: int, fetch_k: int, lambda_mult: float) -> list[tuple[str, float]]:
        """Maximal marginal relevance by the store: ``(id, relevance)`` in MMR order."""
        store = self.store
        with self.lock:
            with_scores = getattr(store, "max_marginal_relevance_search_with_score_by_vector", None)
            if self.kind in ("faiss", "qdrant") and with_scores is not None:
                raw = with_scores(vector, k=k, fetch_k=fetch_k, lambda_mult=lambda_mult)
                fn = self._relevance_fn() or (lambda s: s)
                pairs: list[tuple[str | None, float]] = [(self.doc_id(d), _clamp(fn(s))) for d, s in raw]
            else:
                docs = store.max_marginal_relevance_search_by_vector(vector, k=k, fetch_k=fetch_k,
                                                                     lambda_mult=lambda_mult)
                scores = dict(self.search(vector, max(fetch_k, k)))
                pairs = [(i, scores.get(i, 0.0) if i is not None else 0.0) for i in (self.doc_id(d) for d in docs)]
        return [(i, s) for i, s in pairs if i is not None]

    def count(self) -> int | None:
        """How many documents the inner store holds (None: it cannot say). For tests and status."""
        store = self.store
        with self.lock:
            if self.kind == "inmemory":
                return len(store.store)  # type: ignore[attr-defined]
            if self.kind == "faiss":
                return int(store.index.ntotal)  # type: ignore[attr-defined]
            if self.kind == "chroma":
                return int(store._collection.count())  # type: ignore[attr-defined]
            if self.kind == "qdrant":
                return int(store.client.count(store.collection_name, exact=True).count)  # type: ignore[attr-defined]
        return None


def _predicate(filter: Any) -> Callable[[dict], bool]:  # noqa: A002 - LangChain's name for it
    if callable(filter):
        return filter
    if not isinstance(filter, dict):
        raise TypeError("filter must be a dict of metadata values (a list value means 'any of these') "
                        f"or a callable on the metadata dict, got {type(filter).__name__}")

    def matches(meta: dict) -> bool:
        for key, want in filter.items():
            if key not in meta:
                return False
            if isinstance(want, list) and not isinstance(meta[key], list):
                if meta[key] not in want:
                    return False
            elif meta[key] != want:
                return False
        return True

    return matches


class ManagedVectorStore(VectorStore):
    """A LangChain vector store that keeps every memory and answers in every state of the model.

    Example:
        ```python
        from langchain_chroma import Chroma
        from langchain_modelcache import ManagedEmbeddings, ManagedVectorStore

        inner = Chroma("memories", ManagedEmbeddings(), persist_directory="./chroma")
        memory = ManagedVectorStore(inner, memory_dir="./memory")
        memory.add_texts(["The spare keys are in the blue kitchen drawer."])
        memory.as_retriever(search_kwargs={"k": 3}).invoke("Where are the keys?")
        ```

    Args:
        inner_store: any LangChain store whose embeddings are a :class:`ManagedEmbeddings`.
        memory_dir: where the memory database lives (a directory, or a ``MemoryDB``). ``None`` (and
            no ``memory_url``): a temporary directory removed at :meth:`close` / exit (memories do
            not survive the process).
        memory_url: the memory database on a PostgreSQL server instead (``postgresql://...``, needs
            ``pip install "modelcache[postgres]"``), shared by any number of processes and hosts.
        mode: ``"auto"`` (vectors while the store is complete in the active space, else keyword),
            ``"vector"``, ``"keyword"`` or ``"hybrid"``; each search may pass ``mode=`` too.
        store_key: names the inner store in the database. None: derived (``chroma:<collection id>``,
            ``qdrant:<collection>:<path or url>``; InMemory, FAISS and in-memory clients are
            process-local and filled from the database at start). Pass one for a FAISS index you
            save and load (with ``persist=``), or for another store that persists.
        sync_interval_s: how often the background sync retries while pending memories wait.
        embeddings: the inner store's ManagedEmbeddings, when its ``.embeddings`` does not say.
        persist: called after every change to the inner store (e.g. ``lambda: faiss.save_local(d)``).
        annotate: add ``memory_search`` / ``memory_score`` to returned metadata (False: exactly the
            stored metadata, as LangChain's standard tests expect).
        background: False: only :meth:`sync` writes pending memories (tests).

    Searches take ``mode``, ``filter`` (a dict of metadata values, a list value meaning "any of
    these", or a callable on the metadata; applied to the database's metadata), ``fetch_k`` and
    ``score_threshold`` (on ``memory_score``); other keyword arguments raise ``TypeError``.

    Building the inner store while no model is available: ``QdrantVectorStore`` embeds a dummy text
    when constructed with ``validate_collection_config=True`` (the default) or through
    ``from_texts`` / ``construct_instance``, and ``FAISS.from_texts`` embeds its texts; create the
    collection with the client (or ``FAISS(embeddings, faiss.IndexFlatL2(dims), InMemoryDocstore(), {})``)
    and pass ``validate_collection_config=False``. InMemory and Chroma embed nothing when built.
    """

    def __init__(self, inner_store: VectorStore, memory_dir: str | Path | MemoryDB | None = _NO_DIR, *,
                 mode: Mode = "auto", store_key: str | None = None, sync_interval_s: float = 5.0,
                 embeddings: ManagedEmbeddings | None = None, persist: Callable[[], None] | None = None,
                 annotate: bool = True, background: bool = True, batch_size: int = 64,
                 memory_url: str | None = None) -> None:
        if not isinstance(inner_store, VectorStore):
            raise TypeError(f"inner_store must be a LangChain VectorStore, got {type(inner_store).__name__}")
        if isinstance(inner_store, ManagedVectorStore):
            raise TypeError("inner_store is already a ManagedVectorStore: wrap the store inside it instead")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        found = embeddings if embeddings is not None else _store_embeddings(inner_store)
        if not isinstance(found, ManagedEmbeddings):
            raise TypeError(
                f"ManagedVectorStore needs the inner store to embed with langchain_modelcache.ManagedEmbeddings, "
                f"but {type(inner_store).__name__} embeds with {type(found).__name__}: build the store with "
                "ManagedEmbeddings(...) (e.g. Chroma(embedding_function=ManagedEmbeddings()), "
                "InMemoryVectorStore(ManagedEmbeddings())), or pass embeddings= if the store does not expose it")
        self.inner_store = inner_store
        self._embeddings = found
        self.annotate = annotate
        self._tmpdir: str | None = None
        self._finalizer = None
        if memory_dir is _NO_DIR:
            if memory_url is None:
                raise TypeError("ManagedVectorStore needs memory_dir (a directory, a MemoryDB, or None for a temporary "
                                "one) or memory_url (a postgresql:// URL)")
            memory_dir = None
        target = resolve_memory_target(memory_dir, memory_url)
        if target is None:
            self._tmpdir = tempfile.mkdtemp(prefix="modelcache-memory-")
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
            log.info("ManagedVectorStore: no memory_dir, memories live in %s until the process ends", self._tmpdir)
            target = self._tmpdir
        self._owns_db = not is_memory_db(target)
        db: MemoryDB = open_memory_db(target)
        self._inner = _LangChainInner(inner_store, found, persist)
        key = store_key if store_key is not None else default_store_key(inner_store)
        self.engine = MemoryEngine(db, self._inner, lambda: found.service, store_key=key, mode=mode,
                                   sync_interval_s=sync_interval_s, batch_size=batch_size, background=background)

    # -- properties -------------------------------------------------------------------------------
    @property
    def embeddings(self) -> ManagedEmbeddings:
        return self._embeddings

    @property
    def mode(self) -> Mode:
        return self.engine.mode

    @property
    def store_key(self) -> str:
        return self.engine.store_key

    @property
    def memory_dir(self) -> Path | None:
        found = getattr(self.engine.db, "dir", None)
        return Path(found) if found is not None else None

    # -- writing ----------------------------------------------------------------------------------
    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *, ids: list[str] | None = None,
                  **kwargs: Any) -> list[str]:
        """Commit memories to the database (acknowledged), then embed them into the inner store if a
        model of its space is available (else they are pending). ``ids`` upsert; a None id gets a new one."""
        if kwargs:
            raise TypeError(f"add_texts got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        if isinstance(texts, str):
            raise TypeError("texts must be a list of str, not a single str")
        texts = list(texts)
        if metadatas is not None:
            metadatas = [{k: v for k, v in (m or {}).items() if k not in _RESERVED} for m in metadatas]
            if len(metadatas) != len(texts):
                raise ValueError(f"got {len(texts)} texts and {len(metadatas)} metadatas")
        if ids is not None:
            ids = [str(i) if i is not None else uuid.uuid4().hex for i in ids]
        return self.engine.add(texts, metadatas, ids)

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """:meth:`add_texts` for Documents; each one's ``id`` is used unless ``ids=`` is given."""
        ids = kwargs.pop("ids", None)
        if ids is None and any(d.id for d in documents):
            ids = [d.id for d in documents]
        return self.add_texts([d.page_content for d in documents], [dict(d.metadata) for d in documents],
                              ids=ids, **kwargs)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Forget these memories (the database first, then the inner store); unknown ids are ignored."""
        if ids is None:
            raise ValueError("delete() needs ids: ManagedVectorStore does not forget every memory at once "
                             "(pass the ids, e.g. delete(ids=[...]))")
        self.engine.delete([str(i) for i in ids])
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The memories with these ids, from the database (the source of truth), in the order asked."""
        return [self._document(m) for m in self.engine.get([str(i) for i in ids])]

    # -- searching --------------------------------------------------------------------------------
    def _document(self, memory: Memory, hit: Hit | None = None) -> Document:
        meta = {k: v for k, v in memory.metadata.items() if k != ID_KEY}
        if hit is not None and self.annotate:
            meta[SEARCH_KEY] = hit.how
            meta[SCORE_KEY] = hit.score
        return Document(id=memory.id, page_content=memory.text, metadata=meta)

    @staticmethod
    def _options(method: str, kwargs: dict) -> dict:
        unknown = sorted(set(kwargs) - set(_SEARCH_OPTIONS))
        if unknown:
            raise TypeError(f"ManagedVectorStore.{method} got unexpected keyword arguments: {', '.join(unknown)} "
                            f"(it takes {', '.join(_SEARCH_OPTIONS)})")
        return kwargs

    def _filtered(self, fetch: Callable[[int], list[Hit]], k: int, filter: Any, score_threshold: float | None,  # noqa: A002
                  ) -> list[Hit]:
        """``fetch(n)``'s hits, filtered on the database metadata (fetching more until ``k`` match)."""
        if filter is None:
            hits = fetch(k)
        else:
            matches = _predicate(filter)
            total = self.engine.count()
            n = max(4 * k, 20)
            while True:
                found = fetch(n)
                hits = [h for h in found if matches(h.memory.metadata)]
                if len(hits) >= k or n >= total or len(found) < n:
                    break
                n *= 4
            hits = hits[:k]
        if score_threshold is not None:
            hits = [h for h in hits if h.score >= score_threshold]
        return hits

    def search_hits(self, query: str, k: int = 4, **kwargs: Any) -> list[Hit]:
        """The ``k`` best memories for ``query`` as :class:`~modelcache.memory.records.Hit`s."""
        opts = self._options("similarity_search", kwargs)
        mode, fetch_k = opts.get("mode"), opts.get("fetch_k")
        return self._filtered(lambda n: self.engine.search(query, n, mode, fetch_k), k, opts.get("filter"),
                              opts.get("score_threshold"))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` best memories for ``query`` (vector, keyword or hybrid: see ``memory_search``)."""
        return [self._document(h.memory, h) for h in self.search_hits(query, k, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search`, with each memory's score (in [0, 1], higher is better)."""
        return [(self._document(h.memory, h), h.score) for h in self.search_hits(query, k, **kwargs)]

    def _similarity_search_with_relevance_scores(self, query: str, k: int = 4,
                                                 **kwargs: Any) -> list[tuple[Document, float]]:
        return self.similarity_search_with_score(query, k, **kwargs)

    async def _asimilarity_search_with_relevance_scores(self, query: str, k: int = 4,
                                                        **kwargs: Any) -> list[tuple[Document, float]]:
        return await run_in_executor(None, self._similarity_search_with_relevance_scores, query, k, **kwargs)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda score: score  # scores are relevances in [0, 1] already

    def _vector_fingerprint(self) -> str | None:
        """The space the inner store's vectors are in: the active one, or (no model now) the one
        space it holds."""
        fp = self.engine.target()
        if fp is not None:
            return fp
        spaces = self.engine.db.embedded_fingerprints(self.engine.store_key)
        return next(iter(spaces)) if len(spaces) == 1 else None

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        """The inner store's nearest memories to ``embedding``, which must be a vector of the store's
        space (e.g. from :meth:`ManagedEmbeddings.embed_query`). Only memories already in the store
        can be found this way; with no model the store still answers for its own space."""
        opts = self._options("similarity_search_by_vector", kwargs)
        if opts.get("mode") == "keyword":
            raise ValueError("similarity_search_by_vector cannot search by keyword: use similarity_search(query)")
        fp = self._vector_fingerprint()
        if fp is None:
            log.warning("similarity_search_by_vector: the vector store holds no vectors of one known space yet; "
                        "nothing to compare the vector with (similarity_search(query) answers by keyword)")
            return []
        hits = self._filtered(lambda n: self.engine.search_by_vector(list(embedding), n, fp), k, opts.get("filter"),
                              opts.get("score_threshold"))
        return [self._document(h.memory, h) for h in hits]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      **kwargs: Any) -> list[Document]:
        """The inner store's MMR selection while its vectors are valid; else the keyword top ``k``
        (hybrid mode runs MMR over the vectors)."""
        opts = self._options("max_marginal_relevance_search", kwargs)
        how, fp = self.engine.resolve_mode(opts.get("mode"))
        hits: list[Hit] | None = None
        if how != "keyword" and fp is not None:
            vectors, got = self.engine.service.encode([query], "query")
            if got == fp:
                hits = self._mmr_hits(vectors[0].tolist(), k, fetch_k, lambda_mult, fp, opts.get("filter"))
        if hits is None:
            hits = self._filtered(lambda n: self.engine.search(query, n, "keyword"), k, opts.get("filter"), None)
        threshold = opts.get("score_threshold")
        if threshold is not None:
            hits = [h for h in hits if h.score >= threshold]
        return [self._document(h.memory, h) for h in hits]

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, **kwargs: Any) -> list[Document]:
        """The inner store's MMR selection for a vector of the store's space."""
        opts = self._options("max_marginal_relevance_search_by_vector", kwargs)
        fp = self._vector_fingerprint()
        if fp is None:
            return []
        hits = self._mmr_hits(list(embedding), k, fetch_k, lambda_mult, fp, opts.get("filter"))
        threshold = opts.get("score_threshold")
        return [self._document(h.memory, h) for h in hits if threshold is None or h.score >= threshold]

    def _mmr_hits(self, vector: list[float], k: int, fetch_k: int, lambda_mult: float, fp: str,
                  filter: Any) -> list[Hit]:  # noqa: A002
        want = k if filter is None else max(fetch_k, k)
        found = self._inner.mmr(vector, want, max(fetch_k, want), lambda_mult)
        embedded = self.engine.db.embedded_among(self.engine.store_key, fp, [i for i, _ in found])
        pairs = [(i, s) for i, s in found if i in embedded]
        rows = {m.id: m for m in self.engine.get([i for i, _ in pairs])}
        hits = [Hit(rows[i], s, "vector") for i, s in pairs if i in rows]
        if filter is not None:
            matches = _predicate(filter)
            hits = [h for h in hits if matches(h.memory.metadata)]
        return hits[:k]

    # -- the rest ---------------------------------------------------------------------------------
    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> ManagedVectorStore:
        """A ManagedVectorStore over a new ``InMemoryVectorStore(embedding)``; needs ``memory_dir=``.
        For another store, construct ``ManagedVectorStore(store, memory_dir=...)`` over it."""
        if "memory_dir" not in kwargs:
            raise TypeError("ManagedVectorStore.from_texts(texts, embedding, memory_dir=...) needs memory_dir (where "
                            "the memory database lives; None for a temporary one). It builds over an "
                            "InMemoryVectorStore; for Chroma, Qdrant, FAISS... construct the store and wrap it: "
                            "ManagedVectorStore(store, memory_dir=...)")
        from langchain_core.vectorstores import InMemoryVectorStore

        store = cls(InMemoryVectorStore(embedding), **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def count(self) -> int:
        """How many memories the database holds (the source of truth)."""
        return self.engine.count()

    def inner_count(self) -> int | None:
        """How many documents the inner store holds (None: the store cannot say)."""
        return self._inner.count()

    def sync(self, progress: bool = True) -> SyncReport:
        """Write every pending memory to the inner store now (replacing vectors of another space),
        with a progress bar; resumable. Skipped (see the report) while no model of the space is available."""
        return self.engine.sync(progress=progress)

    def wait_synced(self, timeout: float = 60.0) -> bool:
        """Block until nothing is pending; True if that happened in time."""
        return self.engine.wait_synced(timeout)

    def status(self) -> dict[str, Any]:
        """The embeddings' chain, the memories, what the inner store holds, what a query runs now."""
        return self.engine.status() | {"inner_store": type(self.inner_store).__name__}

    def close(self) -> None:
        """Stop the background sync (and remove a temporary memory_dir)."""
        self.engine.close()
        if self._owns_db:
            self.engine.db.close()
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> ManagedVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f"memory_dir={str(self.memory_dir)!r}" if self.memory_dir is not None else f"memory={self.engine.db!r}"
        return (f"ManagedVectorStore({type(self.inner_store).__name__}, {where}, "
                f"mode={self.mode!r}, store_key={self.store_key!r})")


def _store_embeddings(store: VectorStore) -> Any:
    found = store.embeddings
    if found is None:
        for name in ("embedding", "embedding_function", "_embedding_function", "_embeddings"):
            found = getattr(store, name, None)
            if isinstance(found, Embeddings):
                break
    return found


__all__ = ["SCORE_KEY", "SEARCH_KEY", "ManagedVectorStore", "default_store_key"]
