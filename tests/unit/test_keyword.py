"""Keyword mode pieces: hashed vectors, the BM25 memory index, fusion, mode choice, reindex loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelcache.backends.hashed import HashedEncoder
from modelcache.memory.fusion import rrf
from modelcache.memory.index import FINGERPRINT_KEY, MemoryIndex
from modelcache.memory.sync import choose_mode, index_fingerprint, reindex_memories

# -- HashedEncoder ------------------------------------------------------------------------------


def test_hashed_vectors_shape_norm_and_fingerprint() -> None:
    enc = HashedEncoder(64)
    vectors = enc.encode(["Hello world", "", "!!!", "hello, WORLD"])
    assert vectors.shape == (4, 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)  # never a zero vector
    np.testing.assert_array_equal(vectors[0], vectors[3])  # case and punctuation do not matter
    np.testing.assert_array_equal(vectors[1], vectors[2])  # no words: the same fixed vector
    assert enc.fingerprint == "keyword-hash-64" and enc.degraded


def test_hashed_vectors_share_subwords() -> None:
    enc = HashedEncoder(384)
    memory, memories, banana = enc.encode(["memory", "memories", "banana"])
    assert memory @ memories > 0.3 > abs(memory @ banana)


def test_hashed_vectors_are_the_same_in_another_process() -> None:
    code = ("import sys, json; from modelcache.backends.hashed import HashedEncoder; "
            "print(json.dumps(HashedEncoder(32).encode(['Spare keys in the blue drawer'])[0].tolist()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    here = HashedEncoder(32).encode(["Spare keys in the blue drawer"])[0]
    np.testing.assert_allclose(json.loads(out.stdout), here, atol=1e-7)


def test_hashed_encoder_rejects_bad_dims() -> None:
    with pytest.raises(ValueError):
        HashedEncoder(0)


# -- MemoryIndex --------------------------------------------------------------------------------


@pytest.fixture
def index() -> MemoryIndex:
    idx = MemoryIndex()
    idx.add(["car", "tea", "keys"],
            ["The car is parked on level 3", "Alice likes green tea", "Spare keys are in the blue drawer"],
            [{FINGERPRINT_KEY: "fp1"}, {FINGERPRINT_KEY: "fp1"}, {"topic": "home"}])
    return idx


def test_search_add_delete_upsert(index: MemoryIndex) -> None:
    assert [i for i, _ in index.search("where is the car parked?", 2)] == ["car"]  # no overlap: not returned
    assert index.search("nothing matches here", 3) == [] and index.search("the", 3) == []  # stopwords only
    index.add(["car"], ["The car is now on level 5"])
    assert len(index) == 3 and index.get("car")[0] == "The car is now on level 5"
    assert index.delete(["tea", "unknown"]) == 1 and "tea" not in index
    assert index.search("green tea", 3) == []
    index.add(["new"], ["a brand new memory about tea"])
    assert index.search("tea", 3)[0][0] == "new"  # the index was rebuilt after the change


def test_scores_rank_by_relevance() -> None:
    idx = MemoryIndex()
    idx.add(["a", "b", "c"], ["tea tea tea", "tea and coffee and biscuits", "coffee"])
    hits = idx.search("tea", 5)
    assert [i for i, _ in hits] == ["a", "b"] and hits[0][1] > hits[1][1] > 0


def test_fingerprint_bookkeeping(index: MemoryIndex) -> None:
    assert index.fingerprints() == {"fp1": 2, None: 1}
    assert index_fingerprint(index) is None and index.stale_ids("fp1") == ["keys"]
    index.update_metadata(["keys"], {FINGERPRINT_KEY: "fp1"})
    assert index.fingerprints() == {"fp1": 3} and index_fingerprint(index) == "fp1"
    index.update_metadata(["car"], {FINGERPRINT_KEY: "fp2"})
    index.delete(["car"])
    assert index.fingerprints() == {"fp1": 2}


def test_bad_input(index: MemoryIndex) -> None:
    with pytest.raises(ValueError, match="same length"):
        index.add(["a", "b"], ["only one"])
    with pytest.raises(TypeError):
        index.add(["a"], [42])
    with pytest.raises(TypeError):
        index.search(None)


def test_persist_and_load_round_trip(index: MemoryIndex, tmp_path: Path) -> None:
    path = index.persist(tmp_path / "mem")
    again = MemoryIndex.load(tmp_path / "mem")
    assert again.ids() == index.ids() and again.get("keys") == index.get("keys")
    assert again.search("blue drawer", 1)[0][0] == "keys"
    assert [p.name for p in path.parent.iterdir()] == [MemoryIndex.FILE]  # no temp file left
    assert MemoryIndex.load_or_new(tmp_path / "absent").ids() == []


def test_persist_is_atomic(index: MemoryIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index.persist(tmp_path)
    before = (tmp_path / MemoryIndex.FILE).read_bytes()
    index.add(["more"], ["another memory"])

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError):
        index.persist(tmp_path)
    assert (tmp_path / MemoryIndex.FILE).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [MemoryIndex.FILE]


# -- fusion and mode choice ---------------------------------------------------------------------


def test_rrf() -> None:
    fused = rrf([["a", "b", "c"], ["c", "a"]], k=60)
    assert [i for i, _ in fused] == ["a", "c", "b"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


def test_choose_mode(index: MemoryIndex) -> None:
    index.update_metadata(index.ids(), {FINGERPRINT_KEY: "fp1"})
    assert choose_mode("auto", degraded=False, active_fingerprint="fp1", index=index) == "vector"
    assert choose_mode("hybrid", degraded=False, active_fingerprint="fp1", index=index) == "hybrid"
    assert choose_mode("auto", degraded=False, active_fingerprint="fp2", index=index) == "bm25"
    assert choose_mode("hybrid", degraded=True, active_fingerprint="fp1", index=index) == "bm25"
    assert choose_mode("vector", degraded=True, active_fingerprint="x", index=index) == "vector"
    assert choose_mode("auto", degraded=False, active_fingerprint="fp9", index=MemoryIndex()) == "vector"
    with pytest.raises(ValueError):
        choose_mode("fast", degraded=False, active_fingerprint="fp1", index=index)


# -- the reindex loop ---------------------------------------------------------------------------


def _memories(n: int, fp: str = "old") -> MemoryIndex:
    idx = MemoryIndex()
    idx.add([f"m{i}" for i in range(n)], [f"memory {i}" for i in range(n)], [{FINGERPRINT_KEY: fp}] * n)
    return idx


def test_reindex_resumes_from_checkpoint(tmp_path: Path) -> None:
    idx, store, calls = _memories(25), {}, {"n": 0}

    def write(ids, texts, metas):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        for i, m in zip(ids, metas):
            store[i] = m[FINGERPRINT_KEY]

    checkpoint = tmp_path / "ckpt.json"
    with pytest.raises(KeyboardInterrupt):
        reindex_memories(idx, fingerprint=lambda: "new", write=write, checkpoint=checkpoint, batch_size=10,
                         progress=False)
    assert json.loads(checkpoint.read_text())["done"] == 10 and idx.fingerprints() == {"new": 10, "old": 15}
    report = reindex_memories(idx, fingerprint=lambda: "new", write=write, checkpoint=checkpoint, batch_size=10,
                              progress=False)
    assert report.resumed and report.reembedded == 15 and report.skipped == 10
    assert idx.fingerprints() == {"new": 25} and len(store) == 25 and not checkpoint.exists()
    again = reindex_memories(idx, fingerprint=lambda: "new", write=write, progress=False)
    assert again.reembedded == 0


def test_reindex_restarts_when_the_model_changes_midway() -> None:
    idx = _memories(30)
    fps = iter(["a", "a", "b"] + ["b"] * 20)

    report = reindex_memories(idx, fingerprint=lambda: next(fps), write=lambda *a: None, batch_size=10,
                              progress=False)
    assert report.restarts == ["a -> b"] and report.target == "b"
    assert idx.fingerprints() == {"b": 30}
