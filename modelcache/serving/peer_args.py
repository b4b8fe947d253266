"""The peers' constructor arguments, mapped onto ours: a real drop-in for
``langchain_huggingface.HuggingFaceEmbeddings`` and ``llama_index.embeddings.huggingface.HuggingFaceEmbedding``.

:func:`translate` turns a peer's keyword arguments into our fields, with the peer's meaning;
what we refuse on purpose (remote code, output quantisation we do not do, options that would
silently change vectors) raises :class:`PeerArgumentError` saying why and what to do instead;
an unknown argument's error names the closest option we have. ``PEER_TABLE`` is the README's
table (peer argument -> ours -> same behaviour?), each row checked by a test.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable
from typing import Any

from modelcache.errors import ConfigError

#: (peer, argument, ours, same behaviour?) — the README table; tests/integration/test_peer_dropin.py checks each row
PEER_TABLE: list[tuple[str, str, str, str]] = [
    ("both", "model_name / model", "model_name (alias model)", "yes: registry name, alias, Hub repo id or local dir"),
    ("both", "cache_folder", "cache_dir", "yes: the Hugging Face hub cache layout"),
    ("langchain", "model_kwargs['device'] / device", "device", "yes; None or 'auto' picks cuda / mps / cpu"),
    ("langchain", "model_kwargs['revision']", "revision", "yes"),
    ("langchain", "model_kwargs['token']", "token", "yes (sent to the Hub endpoint only)"),
    ("langchain", "model_kwargs['prompts'] + default_prompt_name", "query_prompt / document_prompt", "yes"),
    ("langchain", "model_kwargs['local_files_only']", "offline", "yes"),
    ("langchain", "model_kwargs['backend']", "backend", "torch, onnx: yes; openvino: refused (not supported)"),
    ("both", "trust_remote_code=True", "refused", "no: modelcache never runs code from a model repo"),
    ("langchain", "encode_kwargs['normalize_embeddings']", "normalize", "yes"),
    ("langchain", "encode_kwargs['batch_size']", "batch_size", "yes"),
    ("langchain", "encode_kwargs['prompt'] / ['prompt_name']", "document_prompt", "yes"),
    ("langchain", "query_encode_kwargs['prompt'] / ['prompt_name']", "query_prompt", "yes"),
    ("langchain", "encode_kwargs['precision']", "precision", "float32: yes; int8: an int8 model (float vectors, own "
     "fingerprint); bf16: bf16 autocast; uint8/binary/ubinary (quantised outputs, another space): refused"),
    ("langchain", "encode_kwargs['show_progress_bar'], show_progress", "show_progress", "yes (a tqdm bar)"),
    ("langchain", "multi_process=True", "accepted, no effect (warns)", "same vectors; one process, micro-batched"),
    ("llamaindex", "max_length", "max_length", "yes: texts truncated at that many tokens"),
    ("llamaindex", "query_instruction / text_instruction", "query_prompt / document_prompt", "yes"),
    ("llamaindex", "normalize", "normalize", "yes"),
    ("llamaindex", "embed_batch_size", "embed_batch_size", "yes"),
    ("llamaindex", "device", "device", "yes; None picks cuda / mps / cpu like the peer"),
    ("llamaindex", "parallel_process / target_devices", "accepted, no effect (warns)", "same vectors; one process"),
    ("llamaindex", "show_progress_bar", "show_progress", "yes (a tqdm bar)"),
    ("llamaindex", "**model_kwargs (revision, token, prompts, local_files_only, backend)", "as model_kwargs above",
     "yes"),
    ("llamaindex", "tokenizer_name / pooling / model / tokenizer", "refused", "deprecated in the peer too"),
]

_ST_PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
#: argument names of the peers (for "did you mean" hints)
LANGCHAIN_PEER_ARGS = {"model_name", "model", "cache_folder", "model_kwargs", "encode_kwargs", "query_encode_kwargs",
                       "multi_process", "show_progress"}
LLAMAINDEX_PEER_ARGS = {"model_name", "max_length", "query_instruction", "text_instruction", "normalize",
                        "embed_batch_size", "cache_folder", "trust_remote_code", "device", "callback_manager",
                        "parallel_process", "target_devices", "num_workers", "show_progress_bar"}
_MODEL_KWARGS = {"device", "revision", "token", "local_files_only", "trust_remote_code", "backend", "cache_folder",
                 "prompts", "default_prompt_name"}
_LC_ENCODE_NEUTRAL = {"convert_to_numpy", "convert_to_tensor", "device"}


class PeerArgumentError(ConfigError, TypeError):
    """A peer's argument we refuse (on purpose, with the reason), or one we do not know."""

    def __init__(self, argument: str, message: str):
        ConfigError.__init__(self, argument, message)


def unknown(argument: str, known: Iterable[str]) -> PeerArgumentError:
    """The error for an argument nobody knows, naming the closest option we have."""
    close = difflib.get_close_matches(argument, sorted(known), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return PeerArgumentError(argument, f"unknown argument{hint} (see the options of the class, or the "
                                       "README's table of the peers' arguments)")


def _no_remote_code(value: Any, where: str) -> None:
    if value:
        raise PeerArgumentError(where, "trust_remote_code=True is refused: modelcache never runs code shipped in "
                                       "a model repo. Pick a model that works without it (every registry model "
                                       "does), or load that model yourself with sentence-transformers.")


def _model_kwargs(kwargs: dict[str, Any], out: dict[str, Any], where: str,
                  known: Iterable[str] = ()) -> None:
    prompts = kwargs.pop("prompts", None)
    default_prompt = kwargs.pop("default_prompt_name", None)
    for key, value in list(kwargs.items()):
        if key == "device":
            out["device"] = value
        elif key == "revision":
            out["revision"] = value
        elif key == "token":
            out["token"] = value
        elif key == "local_files_only":
            out["offline"] = bool(value)
        elif key == "trust_remote_code":
            _no_remote_code(value, f"{where}['trust_remote_code']")
        elif key == "backend":
            if value not in ("torch", "onnx"):
                raise PeerArgumentError(f"{where}['backend']", f"backend {value!r} is not supported; use 'torch' "
                                                               "or 'onnx' (both give the same vectors)")
            out["backend"] = value
        elif key == "cache_folder":
            out["cache_dir"] = value
        elif known:
            raise unknown(key, set(known) | _MODEL_KWARGS)
        else:
            raise PeerArgumentError(f"{where}[{key!r}]", "not supported by modelcache's managed models; remove "
                                                         "it, or see the README's table of the peers' arguments")
    if prompts is not None:
        if not isinstance(prompts, dict):
            raise PeerArgumentError(f"{where}['prompts']", "must be a mapping of prompt name -> prefix")
        out["_prompts"] = dict(prompts)
        if "query" in prompts:
            out.setdefault("query_prompt", prompts["query"])
        for doc_name in ("document", "passage", "text", "doc"):
            if doc_name in prompts:
                out.setdefault("document_prompt", prompts[doc_name])
                break
        if default_prompt is not None:
            if default_prompt not in prompts:
                raise PeerArgumentError(f"{where}['default_prompt_name']", f"{default_prompt!r} is not in prompts")
            out.setdefault("document_prompt", prompts[default_prompt])
            out.setdefault("query_prompt", prompts[default_prompt])


def _encode_kwargs(kwargs: dict[str, Any], out: dict[str, Any], where: str, prompt_field: str) -> None:
    prompts = out.get("_prompts", {})
    for key, value in kwargs.items():
        if key == "normalize_embeddings":
            previous = out.get("normalize")
            if previous is not None and previous != bool(value):
                raise PeerArgumentError(f"{where}['normalize_embeddings']", "queries and documents must be "
                                        "normalised the same way (their vectors are compared)")
            out["normalize"] = bool(value)
        elif key == "batch_size":
            out["batch_size"] = value
        elif key == "prompt":
            out[prompt_field] = value
        elif key == "prompt_name":
            if value not in prompts:
                raise PeerArgumentError(f"{where}['prompt_name']", f"{value!r} is not one of the model_kwargs "
                                                                   "prompts")
            out[prompt_field] = prompts[value]
        elif key == "precision":
            if value not in _ST_PRECISIONS and value not in ("fp32", "bf16"):
                raise PeerArgumentError(f"{where}['precision']", f"unknown precision {value!r}; modelcache takes "
                                        "'float32' / 'fp32', 'int8' or 'bf16'")
            if value not in ("float32", "fp32", "int8", "bf16"):
                raise PeerArgumentError(f"{where}['precision']", f"precision={value!r} (quantised output vectors) "
                                        "is refused: such vectors are another embedding space. Use 'float32', "
                                        "or 'int8' / 'bf16' (a faster model, float vectors with their own fingerprint)")
            out["precision"] = {"float32": "fp32"}.get(value, value)
        elif key == "show_progress_bar":
            out["show_progress"] = bool(value)
        elif key in _LC_ENCODE_NEUTRAL:
            if key == "device":
                out["device"] = value
        else:
            raise PeerArgumentError(f"{where}[{key!r}]", "not supported; remove it, or see the README's table of "
                                                         "the peers' arguments")


def _no_effect(argument: str, value: Any) -> None:
    if value:
        warnings.warn(f"{argument}={value!r} has no effect with modelcache: encoding runs in this process, "
                      "micro-batched across callers (the vectors are the same)", UserWarning, stacklevel=4)


def translate_langchain(data: dict[str, Any]) -> dict[str, Any]:
    """``HuggingFaceEmbeddings(**data)``'s arguments as ``ManagedEmbeddings`` fields (ours pass through)."""
    data = dict(data)
    out: dict[str, Any] = {}
    if "cache_folder" in data:
        out["cache_dir"] = data.pop("cache_folder")
    if "model_kwargs" in data:
        _model_kwargs(dict(data.pop("model_kwargs") or {}), out, "model_kwargs")
    if "encode_kwargs" in data:
        _encode_kwargs(dict(data.pop("encode_kwargs") or {}), out, "encode_kwargs", "document_prompt")
    if "query_encode_kwargs" in data:
        query = dict(data.pop("query_encode_kwargs") or {})
        query.pop("batch_size", None)  # one batcher for both kinds
        _encode_kwargs(query, out, "query_encode_kwargs", "query_prompt")
    if "multi_process" in data:
        _no_effect("multi_process", data.pop("multi_process"))
    if "show_progress" in data:
        out["show_progress"] = bool(data.pop("show_progress"))
    out.pop("_prompts", None)
    return _merge(out, data)


def translate_llamaindex(data: dict[str, Any], own: Iterable[str]) -> dict[str, Any]:
    """``HuggingFaceEmbedding(**data)``'s arguments as ``ManagedEmbedding`` fields; ``own`` are the
    class's own field names (everything else is the peer's ``**model_kwargs``)."""
    data = dict(data)
    out: dict[str, Any] = {}
    for deprecated in ("tokenizer_name", "pooling", "model", "tokenizer"):
        if deprecated in data and not (deprecated == "model" and isinstance(data[deprecated], str)):
            raise PeerArgumentError(deprecated, f"{deprecated} is deprecated (in the peer too); remove it")
    if "cache_folder" in data:
        out["cache_dir"] = data.pop("cache_folder")
    if "query_instruction" in data:
        out["query_prompt"] = data.pop("query_instruction")
    if "text_instruction" in data:
        out["document_prompt"] = data.pop("text_instruction")
    if "trust_remote_code" in data:
        _no_remote_code(data.pop("trust_remote_code"), "trust_remote_code")
    for name in ("parallel_process", "target_devices"):
        if name in data:
            _no_effect(name, data.pop(name))
    if "show_progress_bar" in data:
        out["show_progress"] = bool(data.pop("show_progress_bar"))
    own = set(own) | {"model", "model_name"}
    extra = {k: data.pop(k) for k in list(data) if k not in own}
    if extra:  # the peer's **model_kwargs; anything else is a typo, answered with the closest name
        _model_kwargs(extra, out, "model_kwargs", known=own | LLAMAINDEX_PEER_ARGS)
    out.pop("_prompts", None)
    return _merge(out, data)


def _merge(mapped: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    for key, value in mapped.items():
        if key in ours and ours[key] is not None and ours[key] != value:
            raise PeerArgumentError(key, f"given twice with different values ({ours[key]!r} and {value!r} from a "
                                         "peer argument)")
        ours[key] = value
    return ours


__all__ = ["LANGCHAIN_PEER_ARGS", "LLAMAINDEX_PEER_ARGS", "PEER_TABLE", "PeerArgumentError", "translate_langchain",
           "translate_llamaindex", "unknown"]
