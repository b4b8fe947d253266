"""Check a model's small files (configs, tokenizer) before its weights are fetched.

A pull fetches every file that is not weights first (:func:`is_weights`), then
:func:`check_model_files` reads them: each JSON file must parse, ``config.json`` must name a
``model_type`` and need no code from the repo (``auto_map``), ``modules.json`` must list
sentence-transformers modules only, and a pipeline of Transformer / Pooling / Normalize modules
must have a pooling mode we know (:class:`~modelcache.cache.modelfiles.ModelLayout`). A text
model needs a tokenizer. A broken or unsupported model thus fails before gigabytes move.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

from modelcache.cache.modelfiles import ModelLayout
from modelcache.errors import IntegrityError, OnnxUnsupportedError, UnsafeFileError

#: files that are weights (fetched after the checks); everything else is small and checked first
WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".onnx_data", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack",
                   ".ckpt", ".ot", ".tflite", ".pb", ".npz", ".pkl")
#: a tokenizer in any of the formats transformers reads
TOKENIZER_PATTERNS = ("tokenizer.json", "vocab.txt", "vocab.json", "*.model", "spiece.model")
_PIPELINE_ONLY = {"Transformer", "Pooling", "Normalize"}


def is_weights(path: str) -> bool:
    return path.endswith(WEIGHT_SUFFIXES)


def hint_for(name: str) -> str:
    return (f"No weights were downloaded. The repo's files are broken or unsupported at this revision: fix them "
            f"on the Hub, or pull a revision that works (`modelcache pull {name} --revision REV`).")


def _load_json(path: str, file: Path, name: str):
    try:
        return json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(path, "format (JSON)", detail=f"does not parse: {exc}", hint=hint_for(name)) from None


def check_model_files(name: str, files: dict[str, Path], workdir: Path) -> None:
    """Check the small files of a model (``{repo path: file on disk}``, weights left out).

    ``workdir`` is an empty directory the files are linked into at their repo paths (for
    :class:`ModelLayout`). Raises :class:`IntegrityError` (broken) or :class:`UnsafeFileError`
    (the model needs code from the repo). A repo that is not a transformers model (no
    ``config.json`` and no ``modules.json``: a GGUF repo, any files) is not checked.
    """
    parsed = {p: _load_json(p, f, name) for p, f in sorted(files.items()) if p.endswith(".json")}
    if "config.json" not in parsed and "modules.json" not in parsed:
        return
    config = parsed.get("config.json")
    if config is not None:
        if not isinstance(config, dict):
            raise IntegrityError("config.json", "config", detail="not a JSON object", hint=hint_for(name))
        if config.get("auto_map"):
            raise UnsafeFileError(f"{name}: config.json has auto_map: the model needs remote code (shipped in "
                                  "the repo)", "modelcache never runs code from a model repo; use a model "
                                  "transformers supports natively. No weights were downloaded.")
        if not isinstance(config.get("model_type"), str) or not config["model_type"]:
            raise IntegrityError("config.json", "config (model_type)", detail="names no model_type, so no "
                                 "architecture can load it", hint=hint_for(name))
    modules = parsed.get("modules.json")
    kinds: list[str] = []
    if modules is not None:
        if not isinstance(modules, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str)
                                                    for m in modules):
            raise IntegrityError("modules.json", "modules", detail="not a list of modules with a 'type'",
                                 hint=hint_for(name))
        foreign = [m["type"] for m in modules if not m["type"].startswith("sentence_transformers.")]
        if foreign:
            raise UnsafeFileError(f"{name}: modules.json names module(s) {', '.join(foreign)} outside "
                                  "sentence-transformers", "modelcache never runs code from a model repo. No "
                                  "weights were downloaded.")
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if config is not None and not any(fnmatch.fnmatch(os.path.basename(p), pat)
                                      for p in files for pat in TOKENIZER_PATTERNS):
        raise IntegrityError("tokenizer", "exists", detail="the repo has no tokenizer file "
                             f"({', '.join(TOKENIZER_PATTERNS)})", hint=hint_for(name))
    if set(kinds) <= _PIPELINE_ONLY:
        for path, file in files.items():
            link = workdir / path
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.abspath(file), link)
        try:
            ModelLayout(workdir, name)
        except OnnxUnsupportedError as exc:
            raise IntegrityError(name, "pipeline", detail=str(exc), hint=hint_for(name)) from None
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise IntegrityError(name, "pipeline", detail=f"{type(exc).__name__}: {exc}", hint=hint_for(name)) from None


__all__ = ["WEIGHT_SUFFIXES", "check_model_files", "hint_for", "is_weights"]
