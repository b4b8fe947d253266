"""The name of an embedding space: two encoders with equal fingerprints give comparable vectors.

Built from the weights' sha256 (taken from blob names: the HF layout names an LFS blob by its
sha256, so no re-hash), the module stack and pooling config, normalization, prompts, dims and
quantization. The bundled MiniLM and the Hub's have the same weights, so the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from modelcache._util import read_json
from modelcache.cache.modelfiles import dims_from_dir
from modelcache.registry import ModelSpec

WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".bin", ".gguf")


def _blob_sha(link: Path) -> str:
    name = os.path.basename(os.readlink(link)) if link.is_symlink() else ""
    if len(name) == 64:
        return name
    with open(link, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def with_precision(fingerprint: str, quantization: str = "fp32") -> str:
    """The fingerprint of ``fingerprint``'s model run at ``quantization``: itself for fp32, else
    ``<fingerprint>-<quantization>`` (int8 vectors never mix with fp32 ones)."""
    return fingerprint if quantization == "fp32" else f"{fingerprint}-{quantization}"


def compute(model_dir: Path, *, dims: int | None, normalize: bool, query_prompt: str,
            document_prompt: str, quantization: str = "fp32") -> str:
    """The fingerprint of the model in ``model_dir`` as configured, run at ``quantization``."""
    model_dir = Path(model_dir)
    weights = {}
    for p in sorted(model_dir.rglob("*")):
        rel = p.relative_to(model_dir).as_posix()
        if rel.endswith(WEIGHT_SUFFIXES) and not rel.startswith(("onnx/", "openvino/")):
            weights[rel] = _blob_sha(p)
    modules = read_json(model_dir / "modules.json", []) or []
    module_types = [m.get("type") for m in modules if isinstance(m, dict)]
    pooling: dict = {}
    for m in modules:
        if isinstance(m, dict) and "Pooling" in str(m.get("type")):
            pooling = read_json(model_dir / m.get("path", "") / "config.json") or {}
    payload = {"weights": weights, "modules": module_types, "pooling": pooling, "dims": dims,
               "normalize": normalize, "prompts": [query_prompt, document_prompt],
               "quant": "fp32"}  # the stored weights; a run-time precision is the suffix of with_precision
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return with_precision(f"mc1-{digest[:20]}", quantization)


def for_spec(spec: ModelSpec, model_dir: Path, dims: int | None = None, quantization: str = "fp32") -> str:
    """:func:`compute` with the spec's normalization and prompts and the model's output dims (``dims``,
    else the spec's, else read from the directory's configs): one fingerprint per embedding space
    however the model is named (registry name, alias, Hub repo id, local directory, bundled copy)."""
    dims = dims or spec.dims or dims_from_dir(Path(model_dir))
    return compute(model_dir, dims=dims, normalize=spec.normalize, query_prompt=spec.query_prompt,
                   document_prompt=spec.document_prompt, quantization=quantization)
