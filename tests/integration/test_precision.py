"""Precisions: the int8 quality gate (measured at export, recorded, refused below the bound), bf16
where the hardware has it (refused, saying so, where it does not), their fingerprints, the settings
alias and the peers' ``encode_kwargs['precision']``."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from modelcache.backends import precision as prec  # noqa: E402
from modelcache.backends.factory import load_encoder  # noqa: E402
from modelcache.errors import PrecisionRefusedError  # noqa: E402
from modelcache.manager import ModelManager  # noqa: E402
from modelcache.serving.peer_args import translate_langchain  # noqa: E402
from modelcache.settings import load_settings  # noqa: E402

needs_export = pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None or importlib.util.find_spec("torch") is None,
    reason="torch.onnx.export needs torch and the 'onnx' package")


def manager(**embedding) -> ModelManager:
    return ModelManager(load_settings(embedding=embedding))


@needs_export
def test_int8_gate_is_measured_once_recorded_and_refuses_below_the_bound(tiny_model_dir):
    mgr = manager(backend="onnx", precision="int8")
    local = mgr.ensure(str(tiny_model_dir))
    int8 = load_encoder(local, mgr.settings)
    gate = json.loads((int8.onnx_path.parent / "meta.json").read_text())["gate"]
    assert gate == int8.gate and gate["probes"] == len(prec.PROBES)
    assert mgr.settings.embedding.int8_min_cosine <= gate["min_cosine"] <= gate["mean_cosine"] <= 1.0
    # the recorded verdict is what the vectors say
    fp32 = load_encoder(local, mgr.settings, precision="fp32")
    sims = prec.cosines(fp32.encode(list(prec.PROBES)), int8.encode(list(prec.PROBES)))
    assert abs(float(sims.min()) - gate["min_cosine"]) < 1e-4

    strict = manager(backend="onnx", precision="int8", int8_min_cosine=1.0)
    with pytest.raises(PrecisionRefusedError, match="int8_min_cosine") as info:
        load_encoder(local, strict.settings)
    assert "fp32" in str(info.value) and info.value.precision == "int8"


@needs_export
def test_bf16_where_the_cpu_has_it_else_refused_naming_why(tiny_model_dir):
    mgr = manager(backend="auto", precision="bf16", device="cpu")
    local = mgr.ensure(str(tiny_model_dir))
    if not prec.cpu_has_bf16():
        with pytest.raises(PrecisionRefusedError, match="bfloat16"):
            load_encoder(local, mgr.settings)
        return
    bf16 = load_encoder(local, mgr.settings)
    fp32 = load_encoder(local, manager(backend="torch", device="cpu").settings)
    assert bf16.backend == "torch" and bf16.fingerprint == f"{fp32.fingerprint}-bf16"
    texts = list(prec.PROBES)
    a, b = fp32.encode(texts), bf16.encode(texts)
    assert a.dtype == b.dtype == np.float32
    assert prec.cosines(a, b).min() > 0.99


def test_bf16_refused_on_a_cpu_without_it_and_the_model_still_enters_the_cache(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: False)
    mgr = manager(backend="torch", precision="bf16", device="cpu")
    local = mgr.ensure(str(tiny_model_dir))  # checked at fp32: the files are good, the precision is not
    functional = mgr.store.read_meta(local.spec.repo_id)["functional"][local.commit]
    assert "AMX or avx512_bf16" in functional["precision_refused"] and functional["dims"] == 32
    with pytest.raises(PrecisionRefusedError, match="AMX or avx512_bf16"):
        load_encoder(local, mgr.settings)
    with pytest.raises(ValueError, match="torch backend"):
        load_encoder(local, manager(backend="onnx", precision="bf16").settings)


def test_old_quantize_key_still_reads_and_default_backend_is_auto():
    settings = load_settings({"embedding": {"quantize": "int8"}})
    assert settings.embedding.precision == "int8"
    assert load_settings().embedding.backend == "auto"
    with pytest.raises(Exception, match="precision"):
        load_settings({"embedding": {"precision": "fp8"}})


def test_peer_precision_maps_to_ours_and_output_quantisation_is_refused():
    assert translate_langchain({"encode_kwargs": {"precision": "int8"}})["precision"] == "int8"
    assert translate_langchain({"encode_kwargs": {"precision": "float32"}})["precision"] == "fp32"
    with pytest.raises(ValueError, match="another embedding space"):
        translate_langchain({"encode_kwargs": {"precision": "ubinary"}})


def test_auto_goes_to_torch_for_a_gpu_and_stays_on_onnx_on_this_cpu(monkeypatch):
    from modelcache.backends.factory import gpu_requested

    assert gpu_requested("cuda") and gpu_requested("cuda:1") and gpu_requested("mps")
    assert not gpu_requested("cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not gpu_requested("auto")  # GPUs hidden: the CPU path (ONNX)
