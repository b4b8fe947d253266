"""The memory database (SQLite + FTS5): rows, keyword search, pending state, schema versions."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from modelcache.errors import MemoryDatabaseError
from modelcache.memory.db import DB_FILE, SCHEMA_VERSION, Memory, SQLiteMemoryDB, fts_query

FP = "mc1-aaaaaaaaaaaaaaaaaaaa"
OTHER = "mc1-bbbbbbbbbbbbbbbbbbbb"


@pytest.fixture
def db(tmp_path: Path) -> SQLiteMemoryDB:
    d = SQLiteMemoryDB(tmp_path / "mem")
    yield d
    d.close()


def test_add_get_count_and_replace(db: SQLiteMemoryDB) -> None:
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


def test_keyword_search_stems_and_ranks(db: SQLiteMemoryDB) -> None:
    db.add([Memory("keys", "The spare keys are in the blue kitchen drawer."),
            Memory("tea", "Alice prefers green tea without sugar."),
            Memory("charger", "The laptop charger is in the office.")])
    hits = db.search("Where did I put my key?", 5)
    assert hits[0][0] == "keys" and hits[0][1] > 0  # "key" matches "keys" (porter stemming)
    assert [i for i, _ in db.search("what does Alice drink? tea", 5)][0] == "tea"
    assert db.search("zebra", 5) == []
    assert db.search("", 5) == [] and db.search("   ?!", 5) == []


@pytest.mark.parametrize("query", ['"', "AND OR NOT", "keys*", "col:keys", "(keys", "NEAR(keys tea)", "a\x00b"])
def test_fts_syntax_in_a_query_is_plain_text(db: SQLiteMemoryDB, query: str) -> None:
    db.add([Memory("keys", "The spare keys are in the drawer. AND OR NOT col")])
    db.search(query, 3)  # never an FTS5 syntax error
    assert fts_query("don't (stop)") == '"don" OR "t" OR "stop"'


def test_delete_and_ref_docs(db: SQLiteMemoryDB) -> None:
    db.add([Memory("1", "one", ref_doc_id="doc"), Memory("2", "two", ref_doc_id="doc"), Memory("3", "three")])
    assert db.delete(["3", "missing"]) == ["3"]
    assert sorted(db.delete_ref_doc("doc")) == ["1", "2"]
    assert db.count() == 0 and db.search("one two three", 5) == []


def test_pending_until_marked_and_again_after_a_text_change(db: SQLiteMemoryDB) -> None:
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


def test_bad_metadata_is_refused_and_nothing_is_written(db: SQLiteMemoryDB) -> None:
    db.add([Memory("ok", "kept")])
    with pytest.raises(ValueError, match="JSON-serialisable"):
        db.add([Memory("x", "text", {"when": object()})])
    with pytest.raises(ValueError, match="JSON-serialisable"):
        db.add([Memory("y", "text"), Memory("z", "text", {"nan": float("nan")})])
    assert db.ids() == ["ok"]


def test_threads_share_one_database(db: SQLiteMemoryDB) -> None:
    def worker(n: int) -> None:
        for i in range(50):
            db.add([Memory(f"{n}-{i}", f"thread {n} memory {i}")])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.count() == 400 and len(set(db.ids())) == 400


def test_schema_version_recorded_and_reopen(tmp_path: Path) -> None:
    d = SQLiteMemoryDB(tmp_path)
    d.add([Memory("a", "persisted")])
    d.close()
    again = SQLiteMemoryDB(tmp_path)
    assert again.schema_version() == SCHEMA_VERSION and again.get(["a"])[0].text == "persisted"
    again.close()


def test_a_database_from_a_newer_modelcache_is_refused_untouched(tmp_path: Path) -> None:
    SQLiteMemoryDB(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.execute("UPDATE schema_info SET value = ? WHERE key = 'version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(MemoryDatabaseError, match="newer than this modelcache"):
        SQLiteMemoryDB(tmp_path)


def test_an_unversioned_database_is_migrated(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILE)  # version 0: a file with no schema yet
    conn.execute("CREATE TABLE unrelated (x)")
    conn.commit()
    conn.close()
    d = SQLiteMemoryDB(tmp_path)
    assert d.schema_version() == SCHEMA_VERSION
    d.add([Memory("a", "after migration")])
    assert d.search("migration", 1)[0][0] == "a"
    d.close()


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MemoryDatabaseError, match="memories.sqlite3"):
        SQLiteMemoryDB(tmp_path)
