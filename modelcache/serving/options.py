"""The adapters' flat options: the fields both framework classes share, declared once, and how
they become :class:`~modelcache.settings.Settings`.

:class:`EmbeddingOptions` is a pydantic model; the LangChain and LlamaIndex embeddings classes
inherit its fields (with their attribute docstrings) next to their framework's base class.
``None`` means "as configured" (modelcache settings: env vars, config file, profile).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelcache.settings import RemoteSection, Settings, load_settings


class EmbeddingOptions(BaseModel):
    """The options of both adapters' embeddings classes (besides ``model_name``)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    revision: str | None = None
    """Branch, tag or commit of the preferred model. None: the registry's (``main``)."""

    fallback_models: list[str] | None = None
    """Models to try after the preferred one (``"bundled"`` and ``"keyword"`` allowed). None: ``fallback.models``."""

    fallback_strategy: Literal["auto", "manual", "strict"] | None = None
    """auto: whole chain; manual: only the listed tiers; strict: never degrade, raise instead."""

    backend: Literal["torch", "onnx", "auto"] | None = None
    """Inference backend. None: ``embedding.backend``."""

    device: str | None = None
    """Torch device (``cpu``, ``cuda``...). None: ``embedding.device``."""

    precision: Literal["fp32", "int8", "bf16"] | None = None
    """fp32; int8 (ONNX, quality-gated); bf16 (torch, AMX / avx512_bf16 CPUs). Each its own fingerprint.
    None: ``embedding.precision``."""

    cache_dir: str | None = None
    """Hub-layout model cache. None: MODELCACHE_CACHE_DIR / HF_HUB_CACHE / HF_HOME."""

    endpoints: list[str] | None = None
    """Hub endpoints or mirrors, tried in order. None: MODELCACHE_ENDPOINTS / HF_ENDPOINT / huggingface.co."""

    normalize: bool | None = None
    """L2-normalise vectors. None: the registry's setting for the model (true for all built-ins)."""

    batch_size: int | None = Field(default=None, ge=1, le=4096)
    """Texts per forward pass. None: ``embedding.batch_size``."""

    offline: bool | None = None
    """Never touch the network. None: MODELCACHE_OFFLINE / HF_HUB_OFFLINE."""

    query_prompt: str | None = None
    """Prefix for queries, overriding the registry's (e5: ``"query: "``). Part of the fingerprint."""

    document_prompt: str | None = None
    """Prefix for documents, overriding the registry's (e5: ``"passage: "``). Part of the fingerprint."""

    config: str | None = None
    """A modelcache YAML config file for everything else. None: MODELCACHE_CONFIG."""

    token: str | None = Field(default=None, repr=False)
    """Hub token for private models (sent to the Hub endpoint only, never shown). None: HF_TOKEN and friends."""

    max_length: int | None = Field(default=None, ge=1, le=1_000_000)
    """Truncate texts at this many tokens (sentence-transformers' max_seq_length). None: the model's."""

    remote: list[RemoteSection] | None = None
    """Remote embedding servers tried before the local model, e.g. ``[{"url": "http://gpu:8000/v1", "model":
    "sentence-transformers/all-MiniLM-L6-v2", "api": "openai"}]`` (also ``token``, ``timeout_s``,
    ``batch_size``; ``api: tei`` for TEI's /embed). None: the config's ``remote:`` list."""


#: the adapters' fields that configure the service (besides the model name)
OPTION_FIELDS = tuple(EmbeddingOptions.model_fields)


def settings_from_options(config: str | Path | dict | Settings | None = None, *, model: str | None = None,
                          fallback_models: Sequence[str] | None = None, fallback_strategy: str | None = None,
                          backend: str | None = None, device: str | None = None, precision: str | None = None,
                          cache_dir: str | Path | None = None, endpoints: Sequence[str] | None = None,
                          batch_size: int | None = None, offline: bool | None = None,
                          token: str | None = None, remote: Sequence[Any] | None = None) -> Settings:
    """Settings from the adapters' flat fields; None means "as configured" (env, config file)."""
    if isinstance(config, Settings):
        data = config.model_dump(exclude_none=True)
        data.pop("profile", None)
        if config.token is not None:
            data["token"] = config.token.get_secret_value()
        config = data
    embedding = {k: v for k, v in (("backend", backend), ("device", device), ("batch_size", batch_size),
                                          ("precision", precision))
                 if v is not None}
    fallback = {k: v for k, v in (("models", list(fallback_models) if fallback_models is not None else None),
                                  ("strategy", fallback_strategy)) if v is not None}
    return load_settings(
        config, model=model, offline=offline, token=token, remote=list(remote) if remote is not None else None,
        embedding=embedding or None, fallback=fallback or None,
        model_cache={"directory": str(cache_dir)} if cache_dir is not None else None,
        download={"endpoints": list(endpoints)} if endpoints is not None else None,
    )
