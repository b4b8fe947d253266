"""The backend factory: :func:`load_encoder` picks torch | onnx | auto for a model on disk."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from modelcache.backends.base import ModelDir
from modelcache.backends.onnx import export as onnx_export
from modelcache.backends.onnx.encoder import OnnxEncoder
from modelcache.backends.onnx.export import (
    QUANTIZATIONS,
    export_roots,
    has_onnx,
    onnx_available,
    onnx_model_path,
)
from modelcache.cache import fingerprint as fp
from modelcache.cache.modelfiles import ModelLayout
from modelcache.errors import BackendUnavailableError, ModelCacheError

if TYPE_CHECKING:
    from modelcache.settings import Settings


log = logging.getLogger("modelcache")


def load_encoder(local: ModelDir, settings: Settings, backend: str | None = None, *,
                 quantize: str | None = None, fingerprint: str | None = None):
    """An encoder for a model on disk: ``backend`` torch | onnx | auto (default: the settings').

    ``auto`` runs ONNX when onnxruntime + tokenizers are installed and an ONNX file is there or
    can be exported, and torch otherwise (or when the ONNX load fails, with a warning).
    ``quantize="int8"`` (ONNX only) gives a ``-int8`` fingerprint.
    """
    spec, path = local.spec, Path(local.path)
    backend = backend or settings.embedding.backend
    quantize = quantize or "fp32"
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    fingerprint = fingerprint or fp.for_spec(spec, path)
    if backend == "auto":
        exportable = has_onnx(path, fingerprint, export_roots(settings), quantize) or onnx_export.export_possible()
        if onnx_available() and exportable:
            try:
                return _onnx(local, settings, fingerprint, quantize)
            except (ModelCacheError, ImportError, OSError, RuntimeError) as exc:
                if quantize != "fp32":
                    raise
                log.warning("ONNX backend unavailable for %s (%s); using torch", spec.name, exc)
        elif quantize != "fp32":
            raise BackendUnavailableError("onnx", "onnx", "int8 quantisation needs the ONNX backend")
        backend = "torch"
    if backend == "onnx":
        if not onnx_available():
            raise BackendUnavailableError("onnx", "onnx", "onnxruntime and tokenizers are needed")
        return _onnx(local, settings, fingerprint, quantize)
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r}; allowed: torch, onnx, auto")
    if quantize != "fp32":
        raise ValueError("quantize='int8' needs backend 'onnx' (or 'auto')")
    from modelcache.backends.torch_st import SentenceTransformerEncoder

    return SentenceTransformerEncoder(path, name=spec.name, fingerprint=fingerprint,
                                      device=settings.embedding.device, query_prompt=spec.query_prompt,
                                      document_prompt=spec.document_prompt, normalize=spec.normalize,
                                      batch_size=settings.embedding.batch_size,
                                      max_seq_length=spec.max_seq_length)


def _onnx(local: ModelDir, settings: Settings, fingerprint: str, quantize: str) -> OnnxEncoder:
    spec, path = local.spec, Path(local.path)
    if settings.embedding.device not in ("cpu", "auto"):
        log.info("the ONNX backend runs on CPU; ignoring device %r", settings.embedding.device)
    ModelLayout(path, spec.name)  # refuse unsupported pipelines before exporting anything
    onnx_path = onnx_model_path(path, fingerprint, export_roots(settings), quantize)
    return OnnxEncoder(path, onnx_path, name=spec.name,
                       fingerprint=fp.with_precision(fingerprint, quantize),
                       query_prompt=spec.query_prompt, document_prompt=spec.document_prompt,
                       normalize=spec.normalize, batch_size=settings.embedding.batch_size,
                       max_seq_length=spec.max_seq_length, quantization=quantize)
