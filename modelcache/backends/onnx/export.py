"""The ONNX files the ONNX Runtime backend runs: the repo's own, or a verified, cached export.

- A repo's own ``onnx/model.onnx`` is used when the snapshot has it and it computes what the
  safetensors do (compared with torch once, when torch is installed; a pull with no exporter
  installed fetches that file). Otherwise the cached
  safetensors are exported once with torch (``torch.onnx.export`` of the transformer, dynamic
  batch and sequence axes) into ``<cache>/.locks/modelcache/onnx/<fingerprint>/model.onnx``,
  written atomically, its sha256 recorded in ``meta.json`` and checked on reuse (a stat stamp
  skips the re-hash on a warm start, like the model files). A bad export is removed and
  re-exported.
- Tokenisation (tokenizers), pooling (the model's ``1_Pooling/config.json``) and
  normalisation run in numpy, so a process with an export imports no torch at all.
- ``quantize="int8"``: dynamic int8 quantisation (``onnxruntime.quantization``), cached as
  ``<fingerprint>-int8``; its vectors carry that fingerprint and never mix with fp32 ones.

The encoder is in :mod:`.encoder`; :func:`modelcache.backends.factory.load_encoder` picks the backend.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcache._util import atomic_write_json, read_json
from modelcache.backends.torch_st import refuse_remote_code
from modelcache.cache.fingerprint import with_precision
from modelcache.errors import (
    BackendUnavailableError,
    ModelCacheError,
    OnnxUnsupportedError,
)

if TYPE_CHECKING:
    from modelcache.settings import Settings


log = logging.getLogger("modelcache")

QUANTIZATIONS = ("fp32", "int8")

REPO_ONNX = "onnx/model.onnx"

OPSET = 17


def onnx_available() -> bool:
    """True if onnxruntime and tokenizers can be imported (without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers"))


def export_possible() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "onnx"))


def sha256_path(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]




def _torch_reference(model_dir: Path):
    """The transformer of ``model_dir`` in torch, with padded probe inputs and its outputs on them."""
    try:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise BackendUnavailableError("onnx export", "torch", str(exc)) from exc
    import inspect

    refuse_remote_code(Path(model_dir))
    hf_logging.disable_progress_bar()  # no "Loading weights" bar inside a pull's own progress
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager", trust_remote_code=False,
                                      local_files_only=True, use_safetensors=True)
    model.eval()
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")

    class _Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args)), return_dict=True).last_hidden_state

    vocab = int(getattr(model.config, "vocab_size", 1000))
    torch_gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, max(6, vocab - 1), (2, 12), generator=torch_gen)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    args = [ids, mask, torch.zeros_like(ids)][:len(names)]
    wrapper = _Wrapper(model)
    with torch.no_grad():
        expected = wrapper(*args).numpy()
    return wrapper, names, args, expected


def _onnx_error(path: Path, names: list[str], args, expected: np.ndarray) -> tuple[float, float]:
    """Max abs error on live tokens and min cosine of mean-pooled vectors: ONNX file vs torch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {n: a.numpy() for n, a in zip(names, args) if n in {i.name for i in session.get_inputs()}}
    got = session.run(None, feed)[0]
    live = args[1].numpy()[..., None] > 0
    err = float(np.abs((got - expected) * live).max())
    pooled = [(x * live).sum(axis=1) / live.sum(axis=1) for x in (got, expected)]
    a, b = (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12) for v in pooled)
    return err, float((a * b).sum(axis=1).min())


#: an ONNX file is the model's when, on the probe inputs, its hidden states are this close to torch's
MAX_ABS_ERROR, MIN_COSINE = 1e-3, 0.99999


def export_onnx(model_dir: Path, dest: Path, opset: int = OPSET) -> None:
    """Export the transformer of ``model_dir`` (safetensors) to ``dest`` with torch.

    Dynamic batch/sequence axes; the traced inputs carry padding so the attention mask path
    stays dynamic. The export is checked against torch on its own inputs before it is kept
    (hidden states within ``MAX_ABS_ERROR``, pooled vectors' cosine at least ``MIN_COSINE``).
    """
    import torch

    if importlib.util.find_spec("onnx") is None:
        raise BackendUnavailableError("onnx export", "onnx", "the 'onnx' package is needed by torch.onnx.export")
    wrapper, names, args, expected = _torch_reference(model_dir)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, tuple(args), str(dest), input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]},
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    err, cos = _onnx_error(dest, names, args, expected)
    if not np.isfinite(err) or err > MAX_ABS_ERROR or cos < MIN_COSINE:
        raise ModelCacheError(f"ONNX export of {model_dir} does not match torch (max abs error {err:.2e}, "
                              f"cosine {cos:.6f})")


def repo_onnx_verdict(model_dir: Path, own: Path, roots: list[Path], fingerprint: str) -> bool:
    """Is the repo's own ``onnx/model.onnx`` the same model as its safetensors? Compared with torch
    once (the verdict is kept beside our exports, keyed by the file's sha256); without torch it is
    used as the Hub served it (its sha256 verified like every model file) and True is returned."""
    if not export_possible():
        return True
    verdict_path = roots[-1] / f"{fingerprint}-repo.json"
    verdict = read_json(verdict_path)
    if verdict.get("stamp") == _stamp(own) and "equal" in verdict:
        return bool(verdict["equal"])  # unchanged since it was compared (a stat stamp, as for model files)
    digest = sha256_path(own)
    if verdict.get("sha256") != digest:
        try:
            _, names, args, expected = _torch_reference(model_dir)
            err, cos = _onnx_error(own, names, args, expected)
        except (ModelCacheError, OSError, RuntimeError, ValueError) as exc:
            err, cos = float("inf"), 0.0
            log.warning("the repo's %s could not be compared with torch (%s)", REPO_ONNX, exc)
        verdict = {"sha256": digest, "max_abs_error": err if np.isfinite(err) else None, "min_cosine": cos,
                   "equal": bool(np.isfinite(err) and err <= MAX_ABS_ERROR and cos >= MIN_COSINE)}
        if not verdict["equal"]:
            log.warning("%s: the repo's %s differs from its safetensors weights (max abs error %s, cosine "
                        "%.6f); using our own export instead", Path(model_dir).name, REPO_ONNX,
                        verdict["max_abs_error"], cos)
    verdict["stamp"] = _stamp(own)
    try:
        verdict_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(verdict_path, verdict, indent=1)
    except OSError:
        pass  # read-only: compared again next time
    return bool(verdict["equal"])


class _DropPreprocessHint(logging.Filter):
    """onnxruntime.quantization logs a pre-processing hint on the root logger; not for our users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(src: Path, dest: Path) -> None:
    """Dynamic int8 quantisation of the MatMul weights, per channel (activations at run time).

    Per-channel weights keep cosine to fp32 ~0.99 on MiniLM (per-tensor: ~0.96); the embedding
    table (Gather) stays fp32, and MatMuls of two activations (attention scores) are left alone.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise BackendUnavailableError("onnx int8", "onnx", str(exc)) from exc
    hint = _DropPreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        quantize_dynamic(str(src), str(dest), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
    finally:
        root.removeFilter(hint)


class OnnxExportCache:
    """Exports kept under ``root/<fingerprint>/model.onnx`` with ``meta.json`` (sha256, stamp)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key / "model.onnx"

    def lookup(self, key: str, full: bool = False) -> Path | None:
        """The verified export for ``key``, or None (a bad one is removed)."""
        path = self.entry(key)
        meta_path = path.with_name("meta.json")
        meta = read_json(meta_path)
        if not path.exists() or not meta.get("sha256"):
            return None
        if not full and meta.get("stamp") == _stamp(path):
            return path
        actual = sha256_path(path)
        if actual != meta["sha256"]:
            log.warning("ONNX export %s failed verification (sha256 %s, recorded %s); exporting it again",
                        path, actual[:12], meta["sha256"][:12])
            self._discard(path.parent)
            return None
        if meta.get("stamp") != _stamp(path):
            meta["stamp"] = _stamp(path)
            try:
                atomic_write_json(meta_path, meta, indent=1)
            except OSError:
                pass  # read-only: verified anyway, re-hashed next time
        return path

    def get_or_build(self, key: str, build: Callable[[Path], None], **info: Any) -> Path:
        """The export for ``key``; else ``build(tmp_path)`` once (file lock across processes)."""
        from filelock import FileLock

        if (hit := self.lookup(key)) is not None:
            return hit
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f"{key}.lock")):
            if (hit := self.lookup(key)) is not None:
                return hit  # another process built it while we waited
            target = self.entry(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp_dir = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
            try:
                t0 = time.perf_counter()
                tmp = tmp_dir / "model.onnx"
                build(tmp)
                if any(p.name != "model.onnx" for p in tmp_dir.iterdir()):
                    raise OnnxUnsupportedError(key, "the export needs external data files (model over 2 GB)")
                digest = sha256_path(tmp)
                os.replace(tmp, target)
                meta = {"sha256": digest, "size": target.stat().st_size, "stamp": _stamp(target),
                        "created": time.time(), "build_seconds": round(time.perf_counter() - t0, 3), **info}
                atomic_write_json(target.with_name("meta.json"), meta, indent=1)
            finally:
                shutil.rmtree(tmp_dir, ignore_errors=True)
            log.info("cached ONNX export %s (%.1f MB)", target, target.stat().st_size / 1e6)
            return target

    @staticmethod
    def _discard(entry_dir: Path) -> None:
        for name in ("meta.json", "model.onnx"):
            try:
                (entry_dir / name).unlink()
            except FileNotFoundError:
                pass


def export_roots(settings: Settings) -> list[Path]:
    """Where exports are looked up, the last one being where new ones are written.

    Beside the model cache (``<cache>/.locks/modelcache/onnx``); for a read-only cache, its
    exports (made at build time) are still used and new ones go to a per-user temp dir.
    """
    from modelcache.cache.store import CacheStore

    store = CacheStore(settings.cache_dir, settings.model_cache.read_only)
    primary = store.state_dir / "onnx"
    if not store.read_only:
        return [primary]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return [primary, Path(tempfile.gettempdir()) / f"modelcache-onnx-{uid}"]


def _cached_or_built(roots: list[Path], key: str, build: Callable[[Path], None], **info: Any) -> Path:
    for root in roots[:-1]:
        if (hit := OnnxExportCache(root).lookup(key)) is not None:
            return hit
    return OnnxExportCache(roots[-1]).get_or_build(key, build, **info)


def onnx_model_path(model_dir: Path, fingerprint: str, roots: list[Path], quantize: str = "fp32") -> Path:
    """The ONNX file to run: the repo's own, or our (verified, cached) export / quantisation."""
    own = Path(model_dir) / REPO_ONNX
    if own.is_file() and repo_onnx_verdict(Path(model_dir), own, roots, fingerprint):
        fp32 = own
    else:
        fp32 = _cached_or_built(roots, fingerprint, lambda tmp: export_onnx(model_dir, tmp),
                                source=str(model_dir), quantization="fp32", opset=OPSET)
    if quantize == "fp32":
        return fp32
    return _cached_or_built(roots, with_precision(fingerprint, quantize), lambda tmp: quantize_int8(fp32, tmp),
                            source=str(fp32), quantization=quantize)


def has_onnx(model_dir: Path, fingerprint: str, roots: list[Path], quantize: str = "fp32") -> bool:
    """True if an ONNX file is there without exporting (repo's own or a cached export)."""
    if quantize == "fp32" and (Path(model_dir) / REPO_ONNX).is_file():
        return True
    key = with_precision(fingerprint, quantize)
    return any(OnnxExportCache(root).entry(key).exists() for root in roots)


def with_repo_onnx(spec, settings: Settings):
    """The spec to pull: with the repo's ``onnx/model.onnx`` too when the ONNX backend will run and
    no exporter is installed (an ``onnx``-only install: its first load then needs no torch at all).
    The repo's other ONNX files (quantised variants, copies of the configs) are never fetched."""
    if settings.embedding.backend == "torch" or settings.embedding.precision == "bf16":
        return spec
    if not onnx_available() or export_possible() or REPO_ONNX in spec.include:
        return spec
    import dataclasses

    exclude = tuple(p for p in spec.exclude if p not in ("onnx/*", "*.onnx"))
    exclude += tuple(f"onnx/{p}" for p in spec.include) + ("onnx/*_*.onnx",)
    return dataclasses.replace(spec, include=(*spec.include, REPO_ONNX), exclude=exclude)
