"""The memory database, SQLite (FTS5) and PostgreSQL (tsvector) alike: rows, keyword search, pending state,
schema versions. Every test runs against both (``backend``); a few are about one storage only."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modelcache.errors import MemoryDatabaseError
from modelcache.memory.db import DB_FILE, SCHEMA_VERSION, Memory, MemoryDB, SQLiteMemoryDB, fts_query
from modelcache.memory.open import open_memory_db
from modelcache.memory.postgres import SCHEMA_VERSION as PG_SCHEMA_VERSION
from modelcache.memory.postgres import PostgresMemoryDB
from tests.support.memory_backends import BACKENDS, Backend
from tests.support.memory_backends import backend as make_backend
from tests.support.postgres import PASSWORD

FP = "mc1-aaaaaaaaaaaaaaaaaaaa"
OTHER = "mc1-bbbbbbbbbbbbbbbbbbbb"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request, tmp_path)


@pytest.fixture
def db(backend: Backend) -> MemoryDB:
    d = backend.open()
    yield d
    d.close()


def version_of(backend: Backend) -> int:
    return SCHEMA_VERSION if backend.kind == "sqlite" else PG_SCHEMA_VERSION


def test_add_get_count_and_replace(db: MemoryDB) -> None:
    assert db.add([Memory("a", "The spare keys are in the blue kitchen drawer.", {"who": "me"}),
                   Memory("b", "Alice prefers green tea without sugar.")]) == ["a", "b"]
    assert db.count() == 2 and db.ids() == ["a", "b"]
    [a] = db.get(["a"])
    assert a.text.startswith("The spare keys") and a.metadata == {"who": "me"} and a.created_at > 0
    db.add([Memory("a", "The spare keys are under the mat.")])  # same id: replaced, never twice
    assert db.count() == 2
    [a2] = db.get(["a"])
    assert a2.text == "The spare keys are under the mat." and a2.created_at == a.created_at
    assert [m.id for m in db.get(["b", "nope", "a"])] == ["b", "a"]


def test_keyword_search_stems_and_ranks(db: MemoryDB) -> None:
    db.add([Memory("keys", "The spare keys are in the blue kitchen drawer."),
            Memory("tea", "Alice prefers green tea without sugar."),
            Memory("charger", "The laptop charger is in the office.")])
    hits = db.search("Where did I put my key?", 5)
    assert hits[0][0] == "keys" and hits[0][1] > 0  # "key" matches "keys" (porter stemming)
    assert [i for i, _ in db.search("what does Alice drink? tea", 5)][0] == "tea"
    assert db.search("zebra", 5) == []
    assert db.search("", 5) == [] and db.search("   ?!", 5) == []


def test_a_word_in_most_memories_is_left_out_of_a_longer_query(db: MemoryDB, backend: Backend) -> None:
    db.add([Memory(f"m{i}", f"memory number {i} of the diary") for i in range(300)])
    db.add([Memory("zebra", "A memory of the zebra at the zoo.")])
    backend.execute("ANALYZE")  # PostgreSQL reads the shares from the planner's statistics (autovacuum keeps them)
    assert [i for i, _ in db.search("memory zebra giraffe", 500)] == ["zebra"]  # "memory": in every row, dropped
    assert len(db.search("memory zebra", 500)) == 301  # two words: both kept


@pytest.mark.parametrize("query", ['"', "AND OR NOT", "keys*", "col:keys", "(keys", "NEAR(keys tea)", "a\x00b"])
def test_fts_syntax_in_a_query_is_plain_text(db: MemoryDB, query: str) -> None:
    db.add([Memory("keys", "The spare keys are in the drawer. AND OR NOT col")])
    db.search(query, 3)  # never an FTS5 syntax error
    assert fts_query("don't (stop)") == '"don" OR "t" OR "stop"'


def test_delete_and_ref_docs(db: MemoryDB) -> None:
    db.add([Memory("1", "one", ref_doc_id="doc"), Memory("2", "two", ref_doc_id="doc"), Memory("3", "three")])
    assert db.delete(["3", "missing"]) == ["3"]
    assert sorted(db.delete_ref_doc("doc")) == ["1", "2"]
    assert db.count() == 0 and db.search("one two three", 5) == []


def test_pending_until_marked_and_again_after_a_text_change(db: MemoryDB) -> None:
    db.add([Memory(str(i), f"memory number {i}") for i in range(5)])
    assert db.pending_count("s", FP) == 5 and [m.id for m in db.pending("s", FP, 2)] == ["0", "1"]
    db.mark_embedded("s", ["0", "1", "2", "gone"], FP)
    assert db.pending_count("s", FP) == 2 and db.embedded_fingerprints("s") == {FP: 3}
    assert db.pending_count("other-store", FP) == 5  # per store
    assert db.pending_count("s", OTHER) == 5 and db.foreign_ids("s", OTHER) == ["0", "1", "2"]
    db.add([Memory("0", "memory number 0")])  # same text: still embedded
    db.add([Memory("1", "a new text")])  # new text: its vector is stale
    assert db.embedded_ids("s", FP) == {"0", "2"}
    assert db.embedded_among("s", FP, ["0", "1", "2", "nope"]) == {"0", "2"}
    db.delete(["2"])
    assert db.embedded_fingerprints("s") == {FP: 1}
    db.forget_store("s")
    assert db.pending_count("s", FP) == 4


def test_bad_metadata_is_refused_and_nothing_is_written(db: MemoryDB) -> None:
    db.add([Memory("ok", "kept")])
    with pytest.raises(ValueError, match="JSON-serialisable"):
        db.add([Memory("x", "text", {"when": object()})])
    with pytest.raises(ValueError, match="JSON-serialisable"):
        db.add([Memory("y", "text"), Memory("z", "text", {"nan": float("nan")})])
    assert db.ids() == ["ok"]


def test_threads_share_one_database(db: MemoryDB) -> None:
    def worker(n: int) -> None:
        for i in range(50):
            db.add([Memory(f"{n}-{i}", f"thread {n} memory {i}")])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.count() == 400 and len(set(db.ids())) == 400


def test_schema_version_recorded_and_reopen(backend: Backend) -> None:
    d = backend.open()
    d.add([Memory("a", "persisted")])
    d.close()
    again = backend.open()
    assert again.schema_version() == version_of(backend) and again.get(["a"])[0].text == "persisted"
    again.close()


def test_a_database_from_a_newer_modelcache_is_refused_untouched(backend: Backend) -> None:
    d = backend.open()
    d.add([Memory("a", "kept")])
    d.close()
    backend.execute(f"UPDATE {backend.schema_table} SET value = '{version_of(backend) + 1}' WHERE key = 'version'")
    with pytest.raises(MemoryDatabaseError, match="newer than this modelcache"):
        backend.open()
    backend.execute(f"UPDATE {backend.schema_table} SET value = '{version_of(backend)}' WHERE key = 'version'")
    again = backend.open()
    assert again.get(["a"])[0].text == "kept"  # untouched
    again.close()


def test_an_unversioned_database_is_migrated(backend: Backend) -> None:
    backend.execute("CREATE TABLE unrelated (x INTEGER)")  # version 0: a database with no schema of ours yet
    d = backend.open()
    assert d.schema_version() == version_of(backend)
    d.add([Memory("a", "after migration")])
    assert d.search("migration", 1)[0][0] == "a"
    d.close()


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MemoryDatabaseError, match="memories.sqlite3"):
        SQLiteMemoryDB(tmp_path)


# -- PostgreSQL only: the server's own failure modes ----------------------------------------------------


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    request.param = "postgres"
    return make_backend(request, tmp_path)


def test_a_wrong_password_or_no_server_is_a_clear_error_without_the_password(pg: Backend) -> None:
    wrong = pg.target.replace(PASSWORD, "not-the-Pw-42")
    with pytest.raises(MemoryDatabaseError, match="cannot connect.*password authentication failed") as err:
        PostgresMemoryDB(wrong)
    assert "not-the-Pw-42" not in str(err.value) and "***@127.0.0.1" in str(err.value)
    port = pg.server.port
    closed = pg.target.replace(f":{port}/", f":{port + 1 if port < 65535 else port - 1}/")
    with pytest.raises(MemoryDatabaseError, match="cannot connect") as err:
        PostgresMemoryDB(closed, connect_timeout_s=2)
    assert PASSWORD not in str(err.value)
    db = pg.open()
    assert PASSWORD not in repr(db) and "***@" in repr(db)
    db.close()


def test_nul_characters_are_refused_and_nothing_is_written(db: MemoryDB, backend: Backend) -> None:
    if backend.kind == "sqlite":
        db.add([Memory("nul", "a\x00b")])  # SQLite stores NUL; PostgreSQL text cannot
        assert db.get(["nul"])[0].text == "a\x00b"
        return
    with pytest.raises(ValueError, match="NUL"):
        db.add([Memory("ok", "fine"), Memory("bad", "a\x00b")])
    assert db.count() == 0
    db.add([Memory("meta", "fine", {"k": "a\x00b"})])  # in metadata (JSON escapes it): fine
    assert db.get(["meta"])[0].metadata == {"k": "a\x00b"}


def test_english_stemming_and_stop_words(db: MemoryDB, backend: Backend) -> None:
    db.add([Memory("run", "Bob was running along the river every morning."),
            Memory("the", "The the the of and a an."),
            Memory("cats", "Two cats sleep on the sofa.")])
    assert [i for i, _ in db.search("runs", 5)] == ["run"]  # run / running / runs: one stem
    assert [i for i, _ in db.search("cat sleeping", 5)] == ["cats"]
    found = [i for i, _ in db.search("the of and", 5)]
    # SQLite (porter) matches stop words; PostgreSQL's English configuration drops them
    assert found[0] == "the" if backend.kind == "sqlite" else found == []


def test_open_memory_db_picks_the_database_by_target(pg: Backend, tmp_path: Path) -> None:
    sqlite_db = open_memory_db(tmp_path / "dir")
    assert isinstance(sqlite_db, SQLiteMemoryDB) and open_memory_db(sqlite_db) is sqlite_db
    sqlite_db.close()
    for url in (pg.target, pg.target.replace("postgresql://", "postgres://", 1)):
        db = open_memory_db(url)
        assert isinstance(db, PostgresMemoryDB)
        db.close()
    from modelcache.errors import ConfigError

    with pytest.raises(ConfigError, match="postgresql://"):
        open_memory_db("mysql://user:pw@host/db")


def test_the_server_restarts_under_an_open_database(pg: Backend) -> None:
    db = PostgresMemoryDB(pg.target, connect_timeout_s=2)
    db.add([Memory(str(i), f"memory {i} before the restart") for i in range(20)])
    pg.server.stop()
    try:
        with pytest.raises(MemoryDatabaseError, match=r"127\.0\.0\.1") as err:
            db.add([Memory("down", "written while the server is down")])
        assert PASSWORD not in str(err.value)
    finally:
        pg.server.start()
    db.add([Memory("after", "written after the restart")])  # dead pooled connections replaced, no error
    assert db.count() == 21 and db.get(["down"]) == [] and db.search("restart", 50)
    db.close()


def test_the_sync_lock_is_one_per_store_across_connections(pg: Backend) -> None:
    from filelock import Timeout

    db = pg.open()
    assert isinstance(db, PostgresMemoryDB)
    first, second, other = db.sync_lock("chroma:a"), db.sync_lock("chroma:a"), db.sync_lock("chroma:b")
    first.acquire(timeout=0)
    with pytest.raises(Timeout):
        second.acquire(timeout=0.2)
    other.acquire(timeout=0)  # another store: not blocked
    first.release()
    second.acquire(timeout=0)
    second.release()
    other.release()
    db.close()
