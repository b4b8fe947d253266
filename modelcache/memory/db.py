"""The memory database: the source of truth for an agent's memories (SQLite, WAL, FTS5).

Each memory is a row (id, text, metadata, ref_doc_id, timestamps) committed before ``add``
returns; its keyword index (FTS5, ``porter unicode61``) is kept by triggers in the same
transaction, so a memory that is acknowledged is also findable. A second table records, per
vector store (``store`` key), the embedding space (fingerprint) each memory was written into
that store with: no row, or another fingerprint, means *pending* for that store.

Many processes and threads may open the same ``memory_dir`` at once: WAL mode, one connection
per thread, writes in ``BEGIN IMMEDIATE`` transactions with a busy timeout. ``kill -9`` at any
moment loses nothing that was acknowledged and leaves nothing that blocks the next open
(SQLite's own journal recovery). ``synchronous=NORMAL`` is durable across process crashes; pass
``durability="full"`` to survive power loss too (an fsync per commit).

:class:`MemoryDB` is the interface a server database implements too (see ``memory_url``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from modelcache.errors import ConfigError, MemoryDatabaseError
from modelcache.memory.fts import Stemmer, fts_query, query_tokens

#: the schema this code writes; older databases are migrated on open, newer ones refused
SCHEMA_VERSION = 2
#: a query word found in more than this share of the memories is left out of the keyword query
#: (BM25 gives it almost no weight, and matching it made FTS5 score most of the table: 15 ms at 10k)
COMMON_TERM_SHARE = 0.25
DB_FILE = "memories.sqlite3"


@dataclass
class Memory:
    """One stored memory. ``metadata`` is the caller's (a JSON object)."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    ref_doc_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


class MemoryDB(Protocol):
    """What the managed vector stores need from a memory database (SQLite here; PostgreSQL later)."""

    def add(self, memories: Sequence[Memory]) -> list[str]: ...
    def delete(self, ids: Iterable[str]) -> list[str]: ...
    def delete_ref_doc(self, ref_doc_id: str) -> list[str]: ...
    def get(self, ids: Iterable[str]) -> list[Memory]: ...
    def ids(self) -> list[str]: ...
    def count(self) -> int: ...
    def search(self, query: str, k: int) -> list[tuple[str, float]]: ...
    def pending(self, store: str, fingerprint: str, limit: int) -> list[Memory]: ...
    def pending_count(self, store: str, fingerprint: str) -> int: ...
    def mark_embedded(self, store: str, ids: Iterable[str], fingerprint: str) -> None: ...
    def embedded_fingerprints(self, store: str) -> dict[str, int]: ...
    def embedded_ids(self, store: str, fingerprint: str) -> set[str]: ...
    def embedded_among(self, store: str, fingerprint: str, ids: Iterable[str]) -> set[str]: ...
    def foreign_ids(self, store: str, fingerprint: str) -> list[str]: ...
    def forget_store(self, store: str) -> None: ...
    def stores(self) -> list[str]: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memories (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    ref_doc_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_ref_doc ON memories(ref_doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, content='memories', content_rowid='rowid', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;
CREATE TRIGGER IF NOT EXISTS memories_au AFTER UPDATE OF text ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    INSERT INTO memories_fts(rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TABLE IF NOT EXISTS embedded (
    store TEXT NOT NULL,
    id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    embedded_at REAL NOT NULL,
    PRIMARY KEY (store, id)
);
"""

#: schema version -> the statements that bring a database of the version before it up to it
MIGRATIONS: dict[int, str] = {
    1: _SCHEMA,
    # 2: the FTS5 vocabulary (document frequency per stemmed term), to leave very common words out of queries
    2: "CREATE VIRTUAL TABLE IF NOT EXISTS memories_vocab USING fts5vocab(memories_fts, 'row');",
}


class SQLiteMemoryDB:
    """The embedded memory database in ``memory_dir`` (see the module docstring). Thread-safe."""

    def __init__(self, memory_dir: str | Path, *, durability: Literal["normal", "full"] = "normal",
                 busy_timeout_s: float = 30.0) -> None:
        if durability not in ("normal", "full"):
            raise ConfigError("memory.durability", f"must be 'normal' or 'full', got {durability!r}")
        self.dir = Path(memory_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemoryDatabaseError(str(self.dir), f"cannot create the memory directory ({exc})") from None
        self.path = self.dir / DB_FILE
        self.durability = durability
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._stemmer = Stemmer()
        self._migrate()

    # -- connections ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.durability.upper()}")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise MemoryDatabaseError(str(self.path), f"cannot open it ({exc})") from None
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; committed on exit (the point a memory is acknowledged)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise MemoryDatabaseError(str(self.path), f"the database stayed locked ({exc}); another "
                                      "process holds a long write — retry, or raise busy_timeout_s") from None
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_info (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM schema_info WHERE key = 'version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise MemoryDatabaseError(str(self.path), f"schema version {version} is newer than this "
                                          f"modelcache understands ({SCHEMA_VERSION}); upgrade modelcache")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _statements(MIGRATIONS[target]):
                    conn.execute(statement)
                conn.execute("INSERT OR REPLACE INTO schema_info(key, value) VALUES ('version', ?)", (str(target),))

    def schema_version(self) -> int:
        row = self._connect().execute("SELECT value FROM schema_info WHERE key = 'version'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close every connection this object opened (any thread)."""
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    # -- writing ---------------------------------------------------------------------------
    def add(self, memories: Sequence[Memory]) -> list[str]:
        """Insert or replace ``memories`` in one transaction; returns their ids once committed.

        A replaced memory keeps its ``created_at``; if its text changed it is pending again in
        every store (its old vectors no longer describe it).
        """
        now = time.time()
        rows = []
        for m in memories:
            meta = metadata_json(m)
            rows.append((m.id, m.text, meta, m.ref_doc_id, m.created_at or now, now))
        with self._write() as conn:
            for id_, text, meta, ref, created, updated in rows:
                old = conn.execute("SELECT text FROM memories WHERE id = ?", (id_,)).fetchone()
                if old is None:
                    conn.execute("INSERT INTO memories(id, text, metadata, ref_doc_id, created_at, updated_at) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", (id_, text, meta, ref, created, updated))
                    continue
                conn.execute("UPDATE memories SET text = ?, metadata = ?, ref_doc_id = ?, updated_at = ? "
                             "WHERE id = ?", (text, meta, ref, updated, id_))
                if old[0] != text:
                    conn.execute("DELETE FROM embedded WHERE id = ?", (id_,))
        return [r[0] for r in rows]

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Delete memories (and their embedded records); returns the ids that existed."""
        ids = list(dict.fromkeys(ids))
        gone: list[str] = []
        with self._write() as conn:
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                gone += [r[0] for r in conn.execute(f"SELECT id FROM memories WHERE id IN ({marks})", chunk)]
                conn.execute(f"DELETE FROM memories WHERE id IN ({marks})", chunk)
        return gone

    def delete_ref_doc(self, ref_doc_id: str) -> list[str]:
        """Delete every memory made from source document ``ref_doc_id``; returns their ids."""
        with self._write() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM memories WHERE ref_doc_id = ?", (ref_doc_id,))]
            conn.execute("DELETE FROM memories WHERE ref_doc_id = ?", (ref_doc_id,))
        return ids

    def mark_embedded(self, store: str, ids: Iterable[str], fingerprint: str) -> None:
        """Record that ``ids`` are in ``store`` as vectors of ``fingerprint`` (ids deleted meanwhile are skipped)."""
        now = time.time()
        with self._write() as conn:
            for id_ in ids:
                conn.execute("INSERT OR REPLACE INTO embedded(store, id, fingerprint, embedded_at) "
                             "SELECT ?, id, ?, ? FROM memories WHERE id = ?", (store, fingerprint, now, id_))

    def forget_store(self, store: str) -> None:
        """Drop every embedded record of ``store`` (its vectors are gone: everything is pending again)."""
        with self._write() as conn:
            conn.execute("DELETE FROM embedded WHERE store = ?", (store,))

    # -- reading ---------------------------------------------------------------------------
    def get(self, ids: Iterable[str]) -> list[Memory]:
        """The memories with these ids, in the order asked (unknown ids are skipped)."""
        ids = list(ids)
        found: dict[str, Memory] = {}
        conn = self._connect()
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            marks = ",".join("?" * len(chunk))
            for row in conn.execute("SELECT id, text, metadata, ref_doc_id, created_at, updated_at "
                                    f"FROM memories WHERE id IN ({marks})", chunk):
                found[row[0]] = _memory(row)
        return [found[i] for i in ids if i in found]

    def ids(self) -> list[str]:
        return [r[0] for r in self._connect().execute("SELECT id FROM memories ORDER BY rowid")]

    def count(self) -> int:
        return int(self._connect().execute("SELECT count(*) FROM memories").fetchone()[0])

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` best memories for ``query`` by BM25 (FTS5): ``(id, score)``, best first.

        ``score`` is FTS5's BM25 with the sign flipped: > 0, higher is better, unbounded.
        Memories that share no word (after stemming) with the query are never returned.
        """
        tokens = query_tokens(query)
        if not tokens or k <= 0:
            return []
        conn = self._connect()
        match = fts_query(self._informative(conn, tokens))
        # rank first on the FTS table alone (FTS5's own ORDER BY rank), then the ids of the k winners
        ranked = conn.execute("SELECT rowid, rank FROM memories_fts WHERE memories_fts MATCH ? ORDER BY rank LIMIT ?",
                              (match, int(k))).fetchall()
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        ids = dict(conn.execute(f"SELECT rowid, id FROM memories WHERE rowid IN ({marks})", [r[0] for r in ranked]))
        return [(ids[rowid], -float(rank)) for rowid, rank in ranked if rowid in ids]

    def _informative(self, conn: sqlite3.Connection, tokens: list[str]) -> list[str]:
        """``tokens`` without those in more than COMMON_TERM_SHARE of the memories (at least the rarest
        two are kept); a small database keeps every word."""
        total = int(conn.execute("SELECT max(rowid) FROM memories").fetchone()[0] or 0)  # O(1), >= count
        if total < 200 or len(tokens) <= 2:
            return tokens
        stems = self._stemmer.stems(tokens)
        wanted = sorted(set(stems.values()))
        marks = ",".join("?" * len(wanted))
        df = dict(conn.execute(f"SELECT term, doc FROM memories_vocab WHERE term IN ({marks})", wanted).fetchall())
        freq = {t: df.get(stems.get(t, ""), 0) for t in tokens}
        kept = [t for t in tokens if freq[t] <= COMMON_TERM_SHARE * total]
        if len(kept) < 2:
            kept = sorted(tokens, key=lambda t: freq[t])[:2]
        return kept

    def pending(self, store: str, fingerprint: str, limit: int = 256) -> list[Memory]:
        """Memories not yet in ``store`` as vectors of ``fingerprint``, oldest first."""
        rows = self._connect().execute(
            "SELECT m.id, m.text, m.metadata, m.ref_doc_id, m.created_at, m.updated_at FROM memories m "
            "LEFT JOIN embedded e ON e.id = m.id AND e.store = ? "
            "WHERE e.fingerprint IS NULL OR e.fingerprint != ? ORDER BY m.rowid LIMIT ?",
            (store, fingerprint, int(limit))).fetchall()
        return [_memory(r) for r in rows]

    def pending_count(self, store: str, fingerprint: str) -> int:
        row = self._connect().execute(
            "SELECT count(*) FROM memories m LEFT JOIN embedded e ON e.id = m.id AND e.store = ? "
            "WHERE e.fingerprint IS NULL OR e.fingerprint != ?", (store, fingerprint)).fetchone()
        return int(row[0])

    def embedded_fingerprints(self, store: str) -> dict[str, int]:
        """How many memories ``store`` holds per fingerprint (what is in it, by space)."""
        rows = self._connect().execute("SELECT fingerprint, count(*) FROM embedded WHERE store = ? "
                                       "GROUP BY fingerprint", (store,)).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def stores(self) -> list[str]:
        """Every store key with embedded records."""
        return [r[0] for r in self._connect().execute("SELECT DISTINCT store FROM embedded")]

    def embedded_among(self, store: str, fingerprint: str, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are in ``store`` as vectors of ``fingerprint`` (a query's hits, not the table)."""
        found: set[str] = set()
        conn = self._connect()
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in conn.execute(
                f"SELECT id FROM embedded WHERE store = ? AND fingerprint = ? AND id IN ({marks})",
                [store, fingerprint, *chunk]))
        return found

    def embedded_ids(self, store: str, fingerprint: str) -> set[str]:
        rows = self._connect().execute("SELECT id FROM embedded WHERE store = ? AND fingerprint = ?",
                                       (store, fingerprint)).fetchall()
        return {r[0] for r in rows}

    def foreign_ids(self, store: str, fingerprint: str) -> list[str]:
        """Ids whose vectors in ``store`` are of another space than ``fingerprint`` (to replace)."""
        rows = self._connect().execute("SELECT id FROM embedded WHERE store = ? AND fingerprint != ?",
                                       (store, fingerprint)).fetchall()
        return [r[0] for r in rows]

    def __repr__(self) -> str:
        return f"SQLiteMemoryDB({str(self.dir)!r})"


def metadata_json(m: Memory) -> str:
    """A memory's metadata as stored (JSON; a value JSON cannot hold is refused, naming the memory)."""
    try:
        return json.dumps(m.metadata or {}, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"memory {m.id!r}: metadata must be JSON-serialisable ({exc})") from None


def _memory(row: Sequence[Any]) -> Memory:
    return Memory(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _statements(script: str) -> list[str]:
    """Split a schema script into statements (``CREATE TRIGGER ... END;`` kept whole)."""
    out, buf = [], ""
    for line in script.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


__all__ = ["DB_FILE", "MIGRATIONS", "SCHEMA_VERSION", "Memory", "MemoryDB", "SQLiteMemoryDB", "fts_query"]
