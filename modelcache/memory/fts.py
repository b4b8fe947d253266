"""Keyword queries for SQLite FTS5: a user's text as a safe FTS5 query, and the stems FTS5 makes."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence

_TOKEN = re.compile(r"\w+", re.UNICODE)


def query_tokens(text: str) -> list[str]:
    """The word tokens of a query, lowercased, each once, in order."""
    return list(dict.fromkeys(t.lower() for t in _TOKEN.findall(text)))


def fts_query(text: str | Sequence[str]) -> str | None:
    """A query as FTS5 syntax: every word token quoted and OR-ed (no FTS syntax gets through)."""
    tokens = query_tokens(text) if isinstance(text, str) else list(text)
    return " OR ".join(f'"{t}"' for t in tokens) if tokens else None


class Stemmer:
    """The stems FTS5's ``porter unicode61`` tokenizer makes of some words, asked of FTS5 itself
    (a private in-memory table), so our document frequencies and SQLite's match exactly."""

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:", check_same_thread=False)
        self._conn.execute("CREATE VIRTUAL TABLE q USING fts5(t, tokenize='porter unicode61')")
        self._conn.execute("CREATE VIRTUAL TABLE qv USING fts5vocab(q, 'instance')")
        self._lock = threading.Lock()

    def stems(self, tokens: Sequence[str]) -> dict[str, str]:
        with self._lock:
            self._conn.executemany("INSERT INTO q(rowid, t) VALUES (?, ?)", list(enumerate(tokens, start=1)))
            rows = self._conn.execute("SELECT doc, term FROM qv").fetchall()
            self._conn.execute("DELETE FROM q")
        return {tokens[doc - 1]: term for doc, term in rows}


__all__ = ["Stemmer", "fts_query", "query_tokens"]
