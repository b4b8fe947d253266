"""The backend factory: :func:`load_encoder` picks torch | onnx | auto for a model on disk."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from modelcache.backends.base import ModelDir
from modelcache.backends.onnx import export as onnx_export
from modelcache.backends.onnx.encoder import OnnxEncoder
from modelcache.backends.onnx.export import (
    export_roots,
    has_onnx,
    onnx_available,
    onnx_model_path,
)
from modelcache.backends.precision import PRECISIONS, int8_gate
from modelcache.cache import fingerprint as fp
from modelcache.cache.modelfiles import ModelLayout
from modelcache.errors import BackendUnavailableError, ModelCacheError

if TYPE_CHECKING:
    from modelcache.settings import Settings


log = logging.getLogger("modelcache")


def load_encoder(local: ModelDir, settings: Settings, backend: str | None = None, *,
                 precision: str | None = None, fingerprint: str | None = None):
    """An encoder for a model on disk: ``backend`` torch | onnx | auto (default: the settings').

    ``auto`` runs torch on a GPU when there is one (:func:`gpu_requested`), else ONNX Runtime when
    onnxruntime + tokenizers are installed and an ONNX file is there or can be exported, and torch
    otherwise (or when the ONNX load fails, with a warning).
    ``precision``: ``fp32``; ``int8`` (ONNX, quality-gated); ``bf16`` (torch autocast, where the
    hardware has it). Each gives its own fingerprint (``-int8``, ``-bf16``).
    """
    spec, path = local.spec, Path(local.path)
    backend = backend or settings.embedding.backend
    precision = precision or settings.embedding.precision
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    fingerprint = fingerprint or fp.for_spec(spec, path)
    if precision == "bf16":
        if backend == "onnx":
            raise ValueError("precision 'bf16' runs on the torch backend (ONNX Runtime's CPU provider has no "
                             "bf16 kernels): use backend 'torch' or 'auto'")
        backend = "torch"
    if backend == "auto" and gpu_requested(settings.embedding.device):
        backend = "torch"  # ONNX Runtime runs here on the CPU provider: a GPU is torch's
    if backend == "auto":
        exportable = has_onnx(path, fingerprint, export_roots(settings), precision) or onnx_export.export_possible()
        if onnx_available() and exportable:
            try:
                return _onnx(local, settings, fingerprint, precision)
            except (ModelCacheError, ImportError, OSError, RuntimeError) as exc:
                if precision != "fp32":
                    raise
                # the message, not the exception: a kept log record must not keep its frames (and the
                # half-built export's memory-mapped weights) alive
                log.warning("ONNX backend unavailable for %s (%s); using torch", spec.name, str(exc))
        elif precision == "int8":
            raise BackendUnavailableError("onnx", "onnx", "int8 precision needs the ONNX backend")
        backend = "torch"
    if backend == "onnx":
        if not onnx_available():
            raise BackendUnavailableError("onnx", "onnx", "onnxruntime and tokenizers are needed")
        return _onnx(local, settings, fingerprint, precision)
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r}; allowed: torch, onnx, auto")
    if precision == "int8":
        raise ValueError("precision 'int8' needs backend 'onnx' (or 'auto')")
    from modelcache.backends.torch_st import SentenceTransformerEncoder

    return SentenceTransformerEncoder(path, name=spec.name, fingerprint=fp.with_precision(fingerprint, precision),
                                      device=settings.embedding.device, query_prompt=spec.query_prompt,
                                      document_prompt=spec.document_prompt, normalize=spec.normalize,
                                      batch_size=settings.embedding.batch_size,
                                      max_seq_length=spec.max_seq_length, precision=precision)


def gpu_requested(device: str) -> bool:
    """Should ``auto`` run on a GPU? ``cuda``/``mps`` asked for, or ``auto`` on a machine with an NVIDIA
    device (checked without importing torch: /dev/nvidia*, unless CUDA_VISIBLE_DEVICES hides them)."""
    import glob
    import os

    if device.startswith(("cuda", "mps")):
        return True
    if device != "auto" or os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*")) and importlib.util.find_spec("torch") is not None


def _onnx(local: ModelDir, settings: Settings, fingerprint: str, precision: str) -> OnnxEncoder:
    spec, path = local.spec, Path(local.path)
    if settings.embedding.device not in ("cpu", "auto"):
        log.info("the ONNX backend runs on CPU; ignoring device %r", settings.embedding.device)
    ModelLayout(path, spec.name)  # refuse unsupported pipelines before exporting anything
    roots = export_roots(settings)

    def encoder(which: str) -> OnnxEncoder:
        return OnnxEncoder(path, onnx_model_path(path, fingerprint, roots, which), name=spec.name,
                           fingerprint=fp.with_precision(fingerprint, which),
                           query_prompt=spec.query_prompt, document_prompt=spec.document_prompt,
                           normalize=spec.normalize, batch_size=settings.embedding.batch_size,
                           max_seq_length=spec.max_seq_length, quantization=which)

    chosen = encoder(precision)
    if precision == "int8":
        bound = settings.embedding.int8_min_cosine
        gate = int8_gate(spec.name, chosen.onnx_path, _Lazy(lambda: encoder("fp32")), chosen, bound)
        chosen.gate = gate
    return chosen


class _Lazy:
    """The fp32 reference of the int8 gate, loaded only when the gate has no recorded verdict."""

    def __init__(self, make):
        self._make = make

    def encode(self, texts):
        return self._make().encode(texts)
