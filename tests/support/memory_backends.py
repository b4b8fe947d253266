"""The memory databases the memory tests run against: SQLite in a directory, PostgreSQL in a fresh schema.

``backend(request, tmp_path)`` in a fixture parametrised over :data:`BACKENDS`; the PostgreSQL
server (the ``postgres`` session fixture) starts only when a postgres case runs.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from modelcache.memory.db import DB_FILE, MemoryDB
from modelcache.memory.open import open_memory_db

BACKENDS = ["sqlite", "postgres"]


class Backend:
    """One empty memory database: ``target`` (a directory or a URL) to open it, in this process or another."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.target = str(tmp_path / "mem")
        else:
            self.server = request.getfixturevalue("postgres")
            self.target = self.server.url()

    def open(self) -> MemoryDB:
        return open_memory_db(self.target)

    def execute(self, sql: str) -> None:
        """Run raw SQL on the database's own storage (to tamper with it)."""
        if self.kind == "sqlite":
            Path(self.target).mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(Path(self.target) / DB_FILE)
            conn.execute(sql)
            conn.commit()
            conn.close()
            return
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as conn:
            conn.execute(sql)

    @property
    def schema_table(self) -> str:
        return "schema_info" if self.kind == "sqlite" else "modelcache_schema"


def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path, request)
