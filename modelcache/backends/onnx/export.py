"""The ONNX files the ONNX Runtime backend runs: the repo's own, or a verified, cached export.

- A repo's own ``onnx/model.onnx`` is used when the snapshot has it. Otherwise the cached
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




def export_onnx(model_dir: Path, dest: Path, opset: int = OPSET) -> None:
    """Export the transformer of ``model_dir`` (safetensors) to ``dest`` with torch.

    Dynamic batch/sequence axes; the traced inputs carry padding so the attention mask path
    stays dynamic. The export is checked against torch on its own inputs before it is kept.
    """
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise BackendUnavailableError("onnx export", "torch", str(exc)) from exc
    if importlib.util.find_spec("onnx") is None:
        raise BackendUnavailableError("onnx export", "onnx", "the 'onnx' package is needed by torch.onnx.export")
    import inspect

    refuse_remote_code(Path(model_dir))
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
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = wrapper(*args).numpy()
        torch.onnx.export(wrapper, tuple(args), str(dest), input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]},
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    import onnxruntime as ort

    session = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: a.numpy() for n, a in zip(names, args)})[0]
    live = mask.numpy()[..., None] > 0
    err = float(np.abs((got - expected) * live).max())
    if not np.isfinite(err) or err > 1e-3:
        raise ModelCacheError(f"ONNX export of {model_dir} does not match torch (max abs error {err:.2e})")


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
    if own.is_file():
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
