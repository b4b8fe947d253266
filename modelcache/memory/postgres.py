"""The memory database on PostgreSQL: one agent memory shared by many processes on many hosts.

The same semantics as :class:`~modelcache.memory.db.SQLiteMemoryDB`, in three tables (prefixed
``modelcache_``, in the first schema of the connection's ``search_path``):

- ``modelcache_memories``: one row per memory (id, text, metadata as JSON text, ref_doc_id,
  timestamps, an ordering ``seq``) with a generated ``tsvector`` column (``'english'``: English
  stemming and stop words) under a GIN index, so an acknowledged memory is findable by keyword
  in the same transaction;
- ``modelcache_embedded``: per vector store (``store`` key), the embedding space (fingerprint)
  each memory was written into it with; no row, or another fingerprint, means *pending*. A
  trigger drops a memory's rows when its text changes; a foreign key drops them when it goes;
- ``modelcache_schema``: the schema version (older ones migrated on open, newer ones refused).

Every write is one transaction (``INSERT ... ON CONFLICT``: an add is idempotent by id, any
number of concurrent writers are safe); a deadlock or serialization failure is retried, and a
connection the server dropped (a restart) is replaced and the call retried once. Connections come
from a small thread-safe pool (psycopg_pool). Keyword search ORs the query's words (those in
more than ``COMMON_TERM_SHARE`` of the memories left out, as in SQLite) and ranks by ``ts_rank``
(length-normalised; ``ts_rank_cd`` was 4x slower at 10k). The URL's password is never shown.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from filelock import Timeout

from modelcache.errors import BackendUnavailableError, MemoryDatabaseError
from modelcache.memory.db import COMMON_TERM_SHARE, Memory, metadata_json
from modelcache.memory.fts import query_tokens
from modelcache.origins import redact_text, redact_url

#: the schema this code writes (PostgreSQL's own numbering)
SCHEMA_VERSION = 1
URL_SCHEMES = ("postgresql://", "postgres://")
_MIGRATION_LOCK = 0x6D656D6F7279  # pg_advisory_xact_lock key: one migrating process at a time
T = TypeVar("T")

_V1 = [
    """CREATE TABLE IF NOT EXISTS modelcache_memories (
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        text TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        ref_doc_id TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED)""",
    "CREATE INDEX IF NOT EXISTS modelcache_memories_tsv ON modelcache_memories USING GIN (tsv)",
    "CREATE INDEX IF NOT EXISTS modelcache_memories_ref_doc ON modelcache_memories (ref_doc_id)",
    """CREATE TABLE IF NOT EXISTS modelcache_embedded (
        store TEXT NOT NULL,
        id TEXT NOT NULL REFERENCES modelcache_memories(id) ON DELETE CASCADE,
        fingerprint TEXT NOT NULL,
        embedded_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (store, id))""",
    "CREATE INDEX IF NOT EXISTS modelcache_embedded_id ON modelcache_embedded (id)",
    # a new text: its old vectors no longer describe it, pending again in every store (same transaction)
    """CREATE OR REPLACE FUNCTION modelcache_text_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        EXECUTE format('DELETE FROM %I.modelcache_embedded WHERE id = $1', TG_TABLE_SCHEMA) USING NEW.id;
        RETURN NEW;
    END $$""",
    "DROP TRIGGER IF EXISTS modelcache_memories_text ON modelcache_memories",
    """CREATE TRIGGER modelcache_memories_text AFTER UPDATE OF text ON modelcache_memories
        FOR EACH ROW WHEN (OLD.text IS DISTINCT FROM NEW.text) EXECUTE FUNCTION modelcache_text_changed()""",
]
#: schema version -> the statements that bring a database of the version before it up to it
MIGRATIONS: dict[int, list[str]] = {1: _V1}

_COLUMNS = "id, text, metadata, ref_doc_id, created_at, updated_at"
_UPSERT = (f"INSERT INTO modelcache_memories ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
           "ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, metadata = EXCLUDED.metadata, "
           "ref_doc_id = EXCLUDED.ref_doc_id, updated_at = EXCLUDED.updated_at")
_PENDING = ("FROM modelcache_memories m LEFT JOIN modelcache_embedded e ON e.id = m.id AND e.store = %s "
            "WHERE e.fingerprint IS NULL OR e.fingerprint <> %s")


def _driver() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise BackendUnavailableError("PostgreSQL memory database", "postgres", str(exc)) from None
    return psycopg, psycopg_pool


class PostgresMemoryDB:
    """The memory database in the PostgreSQL database at ``url`` (``postgresql://user:pw@host/db``;
    ``?options=-csearch_path%3Dmyschema`` keeps it in a schema of its own). Thread-safe.

    ``max_connections``: the pool's size (threads beyond it wait up to ``connect_timeout_s``).
    """

    def __init__(self, url: str, *, max_connections: int = 8, connect_timeout_s: float = 10.0,
                 retries: int = 5) -> None:
        self._url = str(url)
        self.display = redact_url(self._url)
        if not self._url.startswith(URL_SCHEMES):
            raise MemoryDatabaseError(self.display, "not a PostgreSQL URL (postgresql://user:password@host:port/db)")
        self.max_connections = max(1, int(max_connections))
        self.connect_timeout_s = connect_timeout_s
        self.retries = retries
        self._psycopg, self._pool_mod = _driver()
        self._pool: Any = None
        self._lock = threading.Lock()
        with self._connect() as conn:  # a real connection first: its error says what is wrong
            with conn.transaction(), conn.cursor() as cur:
                self._migrate(cur)

    # -- connections ------------------------------------------------------------------------
    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._url, autocommit=True,
                                         connect_timeout=max(1, int(self.connect_timeout_s)))
        except self._psycopg.Error as exc:
            raise self._error("cannot connect", exc) from None

    def _error(self, what: str, exc: BaseException) -> MemoryDatabaseError:
        return MemoryDatabaseError(self.display, f"{what} ({redact_text(str(exc)).strip() or type(exc).__name__})")

    def _get_pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                self._pool = self._pool_mod.ConnectionPool(
                    self._url, min_size=1, max_size=self.max_connections, open=True, name="modelcache-memory",
                    kwargs={"autocommit": True, "connect_timeout": max(1, int(self.connect_timeout_s))},
                    timeout=self.connect_timeout_s)
            return self._pool

    def _run(self, work: Callable[[Any], T], write: bool = False) -> T:
        """``work(cursor)``, in one transaction when ``write``; retried on a deadlock, a serialization
        failure, a row deleted under it, and once on a dropped connection (every write is idempotent)."""
        errors = self._psycopg.errors
        transient = (errors.DeadlockDetected, errors.SerializationFailure, errors.ForeignKeyViolation)
        reconnected = False
        for attempt in range(self.retries + 1):
            pool = self._get_pool()
            try:
                with pool.connection() as conn:
                    if write:
                        with conn.transaction(), conn.cursor() as cur:
                            return work(cur)
                    with conn.cursor() as cur:
                        return work(cur)
            except transient as exc:
                if attempt == self.retries:
                    raise self._error("the write kept conflicting with other writers", exc) from None
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
            except self._pool_mod.PoolTimeout as exc:
                raise self._error(f"no connection within {self.connect_timeout_s:g} s (is the server up?)",
                                  exc) from None
            except self._psycopg.OperationalError as exc:
                if reconnected:
                    raise self._error("the server dropped the connection", exc) from None
                reconnected = True
                pool.check()  # the server restarted: replace every dead idle connection, then retry once
            except self._psycopg.Error as exc:
                raise self._error("the query failed", exc) from None
        raise AssertionError("unreachable")

    def _migrate(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        cur.execute("CREATE TABLE IF NOT EXISTS modelcache_schema (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        cur.execute("SELECT value FROM modelcache_schema WHERE key = 'version'")
        row = cur.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise MemoryDatabaseError(self.display, f"schema version {version} is newer than this modelcache "
                                      f"understands ({SCHEMA_VERSION}); upgrade modelcache")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                cur.execute(statement)
            cur.execute("INSERT INTO modelcache_schema (key, value) VALUES ('version', %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (str(target),))

    def schema_version(self) -> int:
        rows = self._rows("SELECT value FROM modelcache_schema WHERE key = 'version'")
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        """Close the pool (a later call opens a new one)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def sync_lock(self, store: str) -> AdvisoryLock:
        """A lock on ``store``'s sync across every process and host (a PostgreSQL advisory lock)."""
        return AdvisoryLock(self, store)

    # -- writing ---------------------------------------------------------------------------
    def add(self, memories: Sequence[Memory]) -> list[str]:
        """Insert or replace ``memories`` in one transaction; returns their ids once committed.

        A replaced memory keeps its ``created_at``; if its text changed it is pending again in
        every store. PostgreSQL text cannot hold NUL (``\\x00``): such a memory is refused.
        """
        now = time.time()
        rows = []
        for m in memories:
            meta = metadata_json(m)
            for name, value in (("id", m.id), ("text", m.text), ("ref_doc_id", m.ref_doc_id)):
                if value is not None and "\x00" in value:
                    raise ValueError(f"memory {m.id!r}: PostgreSQL cannot store the NUL character (\\x00) in its "
                                     f"{name}; remove it first (e.g. value.replace('\\x00', ''))")
            rows.append((m.id, m.text, meta, m.ref_doc_id, m.created_at or now, now))
        # an id given twice: its first place, its last values (as if added one by one); a deadlock
        # with a writer taking the same rows in another order is retried
        unique = list({r[0]: r for r in rows}.values())
        if unique:
            self._run(lambda cur: cur.executemany(_UPSERT, unique), write=True)
        return [r[0] for r in rows]

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Delete memories (and their embedded records); returns the ids that existed."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []

        def work(cur: Any) -> set[str]:
            cur.execute("DELETE FROM modelcache_memories WHERE id = ANY(%s) RETURNING id", (sorted(wanted),))
            return {r[0] for r in cur.fetchall()}
        gone = self._run(work, write=True)
        return [i for i in wanted if i in gone]

    def delete_ref_doc(self, ref_doc_id: str) -> list[str]:
        """Delete every memory made from source document ``ref_doc_id``; returns their ids."""
        def work(cur: Any) -> list[str]:
            cur.execute("WITH gone AS (DELETE FROM modelcache_memories WHERE ref_doc_id = %s RETURNING id, seq) "
                        "SELECT id FROM gone ORDER BY seq", (ref_doc_id,))
            return [r[0] for r in cur.fetchall()]
        return self._run(work, write=True)

    def mark_embedded(self, store: str, ids: Iterable[str], fingerprint: str) -> None:
        """Record that ``ids`` are in ``store`` as vectors of ``fingerprint`` (ids deleted meanwhile are skipped)."""
        wanted = sorted(set(ids))
        if wanted:
            self._run(lambda cur: cur.execute(
                "INSERT INTO modelcache_embedded (store, id, fingerprint, embedded_at) "
                "SELECT %s, id, %s, %s FROM modelcache_memories WHERE id = ANY(%s) ORDER BY id "
                "ON CONFLICT (store, id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
                "embedded_at = EXCLUDED.embedded_at", (store, fingerprint, time.time(), wanted)), write=True)

    def forget_store(self, store: str) -> None:
        """Drop every embedded record of ``store`` (its vectors are gone: everything is pending again)."""
        self._run(lambda cur: cur.execute("DELETE FROM modelcache_embedded WHERE store = %s", (store,)), write=True)

    # -- reading ---------------------------------------------------------------------------
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def work(cur: Any) -> list[tuple[Any, ...]]:
            cur.execute(sql, params)
            return list(cur.fetchall())
        return self._run(work)

    def get(self, ids: Iterable[str]) -> list[Memory]:
        """The memories with these ids, in the order asked (unknown ids are skipped)."""
        ids = list(ids)
        if not ids:
            return []
        rows = self._rows(f"SELECT {_COLUMNS} FROM modelcache_memories WHERE id = ANY(%s)", (list(set(ids)),))
        found = {r[0]: _memory(r) for r in rows}
        return [found[i] for i in ids if i in found]

    def ids(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT id FROM modelcache_memories ORDER BY seq")]

    def count(self) -> int:
        return int(self._rows("SELECT count(*) FROM modelcache_memories")[0][0])

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` best memories for ``query``: ``(id, score)``, best first; ``score`` is
        ``ts_rank`` (term frequency, length-normalised): > 0, higher is better. Any word of the
        query (English stems, stop words left out) matches; none in common: never returned."""
        tokens = query_tokens(query)
        if not tokens or k <= 0:
            return []

        def work(cur: Any) -> list[tuple[str, float]]:
            lexemes = self._informative(cur, tokens)
            if not lexemes:
                return []
            cur.execute("SELECT id, ts_rank(tsv, q, 1) AS r FROM modelcache_memories, CAST(%s AS tsquery) q "
                        "WHERE tsv @@ q ORDER BY r DESC, seq LIMIT %s", (" | ".join(map(_quote, lexemes)), int(k)))
            return [(r[0], max(float(r[1]), 1e-6)) for r in cur.fetchall()]
        return self._run(work)

    def _informative(self, cur: Any, tokens: list[str]) -> list[str]:
        """The query's English lexemes without those in more than COMMON_TERM_SHARE of the memories
        (at least the rarest two are kept); a small database keeps every word. The shares are the
        planner's statistics of the tsvector column (kept by autovacuum's ANALYZE): no scan."""
        stats = ("(SELECT {} FROM pg_stats WHERE schemaname = current_schema() "
                 "AND tablename = 'modelcache_memories' AND attname = 'tsv')")
        cur.execute(f"SELECT tsvector_to_array(to_tsvector('english'::regconfig, %s)), "
                    f"(SELECT max(seq) FROM modelcache_memories), {stats.format('most_common_elems::text::text[]')}, "
                    f"{stats.format('most_common_elem_freqs')}", (" ".join(tokens),))
        lexemes, total, elems, shares = cur.fetchone()
        lexemes = list(lexemes or [])
        if int(total or 0) < 200 or len(lexemes) <= 2:  # max(seq): O(1), >= count
            return lexemes
        share = dict(zip(elems or [], shares or []))  # the freqs array ends with 3 summary values: zip drops them
        kept = [x for x in lexemes if share.get(x, 0.0) <= COMMON_TERM_SHARE]
        if len(kept) < 2:
            kept = sorted(lexemes, key=lambda x: share.get(x, 0.0))[:2]
        return kept

    def pending(self, store: str, fingerprint: str, limit: int = 256) -> list[Memory]:
        """Memories not yet in ``store`` as vectors of ``fingerprint``, oldest first."""
        cols = ", ".join(f"m.{c.strip()}" for c in _COLUMNS.split(","))
        rows = self._rows(f"SELECT {cols} {_PENDING} ORDER BY m.seq LIMIT %s", (store, fingerprint, int(limit)))
        return [_memory(r) for r in rows]

    def pending_count(self, store: str, fingerprint: str) -> int:
        return int(self._rows(f"SELECT count(*) {_PENDING}", (store, fingerprint))[0][0])

    def embedded_fingerprints(self, store: str) -> dict[str, int]:
        """How many memories ``store`` holds per fingerprint (what is in it, by space)."""
        rows = self._rows("SELECT fingerprint, count(*) FROM modelcache_embedded WHERE store = %s "
                          "GROUP BY fingerprint", (store,))
        return {r[0]: int(r[1]) for r in rows}

    def stores(self) -> list[str]:
        """Every store key with embedded records."""
        return [r[0] for r in self._rows("SELECT DISTINCT store FROM modelcache_embedded ORDER BY store")]

    def embedded_among(self, store: str, fingerprint: str, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are in ``store`` as vectors of ``fingerprint`` (a query's hits, not the table)."""
        wanted = list(set(ids))
        if not wanted:
            return set()
        return {r[0] for r in self._rows("SELECT id FROM modelcache_embedded WHERE store = %s AND fingerprint = %s "
                                         "AND id = ANY(%s)", (store, fingerprint, wanted))}

    def embedded_ids(self, store: str, fingerprint: str) -> set[str]:
        return {r[0] for r in self._rows("SELECT id FROM modelcache_embedded WHERE store = %s AND fingerprint = %s",
                                         (store, fingerprint))}

    def foreign_ids(self, store: str, fingerprint: str) -> list[str]:
        """Ids whose vectors in ``store`` are of another space than ``fingerprint`` (to replace)."""
        return [r[0] for r in self._rows("SELECT id FROM modelcache_embedded WHERE store = %s AND fingerprint <> %s "
                                         "ORDER BY id", (store, fingerprint))]

    def __repr__(self) -> str:
        return f"PostgresMemoryDB({self.display!r})"


class AdvisoryLock:
    """A session-level advisory lock on one store's sync, on a connection of its own while held;
    the ``acquire(timeout)`` / ``release()`` of :class:`filelock.FileLock` (``timeout`` 0: try
    once, < 0: wait). A process that dies releases it with its connection."""

    def __init__(self, db: PostgresMemoryDB, store: str) -> None:
        self._db = db
        self._key = int.from_bytes(hashlib.sha1(f"modelcache-sync:{store}".encode()).digest()[:8], "big", signed=True)
        self._conn: Any = None

    def acquire(self, timeout: float = -1) -> None:
        conn = self._db._connect()
        deadline = None if timeout < 0 else time.monotonic() + timeout
        try:
            while not conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()[0]:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"sync lock {self._key}")
                time.sleep(0.05)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # ends the session: the lock goes with it


def _quote(lexeme: str) -> str:
    """A lexeme as a tsquery operand (quoted: no tsquery syntax gets through)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _memory(row: Sequence[Any]) -> Memory:
    return Memory(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "URL_SCHEMES", "AdvisoryLock", "PostgresMemoryDB"]
