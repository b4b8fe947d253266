"""What a sentence-transformers model directory says about itself, read from its configs (no load).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from modelcache._util import read_json
from modelcache.errors import OnnxUnsupportedError

if TYPE_CHECKING:
    pass


def dims_from_dir(path: Path) -> int | None:
    """Output dims of a sentence-transformers directory from its configs (no model load)."""
    modules = read_json(path / "modules.json")
    dims = None
    for module in modules if isinstance(modules, list) else []:
        conf = read_json(path / module.get("path", "") / "config.json")
        if "Pooling" in str(module.get("type")):
            dims = conf.get("word_embedding_dimension", dims)
        if "Dense" in str(module.get("type")):
            dims = conf.get("out_features", dims)
    if dims is None:
        dims = read_json(path / "config.json").get("hidden_size")
    return int(dims) if isinstance(dims, int) and dims > 0 else None


#: legacy ``pooling_mode_*`` flags -> sentence-transformers' mode names, in its concatenation order
_LEGACY_POOLING = {"cls_token": "cls", "max_tokens": "max", "mean_tokens": "mean",
                   "mean_sqrt_len_tokens": "mean_sqrt_len_tokens", "weightedmean_tokens": "weightedmean",
                   "lasttoken": "lasttoken"}

_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}




class ModelLayout:
    """What the sentence-transformers files of a model directory say about its pipeline."""

    def __init__(self, model_dir: Path, name: str):
        self.dir = Path(model_dir)
        modules = json.loads((self.dir / "modules.json").read_text("utf-8")) if (
            self.dir / "modules.json").exists() else [{"type": "Transformer", "path": ""},
                                                       {"type": "Pooling", "path": "1_Pooling"}]
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        unsupported = sorted(set(kinds) - _SUPPORTED_MODULES)
        if unsupported:
            raise OnnxUnsupportedError(name, f"module(s) {', '.join(unsupported)}")
        pooling_dir = next((m.get("path", "") for m, k in zip(modules, kinds) if k == "Pooling"), "1_Pooling")
        self.pooling = read_json(self.dir / pooling_dir / "config.json")
        mode = self.pooling.get("pooling_mode")  # sentence-transformers >= 6: a name or a list
        if mode:
            self.modes = [mode] if isinstance(mode, str) else list(mode)
        else:
            self.modes = [new for old, new in _LEGACY_POOLING.items() if self.pooling.get(f"pooling_mode_{old}")]
        self.modes = self.modes or ["mean"]
        unknown = sorted(set(self.modes) - set(_LEGACY_POOLING.values()))
        if unknown:
            raise OnnxUnsupportedError(name, f"pooling mode(s) {', '.join(unknown)}")
        self.include_prompt = bool(self.pooling.get("include_prompt", True))
        self.has_normalize = "Normalize" in kinds
        st_config = read_json(self.dir / "sentence_bert_config.json")
        tok_config = read_json(self.dir / "tokenizer_config.json")
        config = read_json(self.dir / "config.json")
        # as sentence-transformers: its own max_seq_length, else the tokenizer's, capped by positions
        self.max_seq_length = st_config.get("max_seq_length") or tok_config.get("model_max_length")
        self.model_max = config.get("max_position_embeddings")
        self.do_lower_case = bool(st_config.get("do_lower_case", False))
        width = (self.pooling.get("embedding_dimension") or self.pooling.get("word_embedding_dimension")
                 or config.get("hidden_size"))
        self.dims = int(width) * len(self.modes) if width else None
