"""The ONNX Runtime encoder (extra ``onnx``: onnxruntime + tokenizers).

Tokenisation (tokenizers), pooling (the model's ``1_Pooling/config.json``) and normalisation run
in numpy, so a process with an ONNX file imports no torch at all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modelcache._util import read_json
from modelcache.backends.base import Kind
from modelcache.backends.torch_st import _word_prefix, refuse_remote_code
from modelcache.cache.modelfiles import ModelLayout
from modelcache.errors import BackendUnavailableError, OnnxUnsupportedError
from modelcache.texts import check_texts

if TYPE_CHECKING:
    pass


log = logging.getLogger("modelcache")


def _load_tokenizer(model_dir: Path, max_length: int):
    from tokenizers import Tokenizer

    path = model_dir / "tokenizer.json"
    if not path.exists():
        raise OnnxUnsupportedError(model_dir.name, "no tokenizer.json (a fast tokenizer file is needed)")
    tok = Tokenizer.from_file(str(path))
    special = read_json(model_dir / "special_tokens_map.json").get("pad_token", "[PAD]")
    pad_token = special.get("content") if isinstance(special, dict) else special
    pad_id = tok.token_to_id(pad_token) if pad_token else None
    if pad_id is None:
        pad_id = tok.padding["pad_id"] if tok.padding else 0
        pad_token = tok.padding["pad_token"] if tok.padding else "[PAD]"
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()  # groups are padded in numpy (see plan_groups)
    return tok, pad_id


class OnnxEncoder:
    """A sentence-transformers model run by ONNX Runtime, pooled and normalised in numpy."""

    def __init__(self, model_dir: Path, onnx_path: Path, *, name: str, fingerprint: str,
                 query_prompt: str = "", document_prompt: str = "", normalize: bool = True,
                 batch_size: int = 32, max_seq_length: int | None = None, quantization: str = "fp32",
                 threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError("onnx", "onnx", str(exc)) from exc
        model_dir = Path(model_dir)
        refuse_remote_code(model_dir)
        layout = ModelLayout(model_dir, name)
        limits = [v for v in (layout.max_seq_length, max_seq_length, layout.model_max) if v]
        self._max_seq_length = int(min(limits)) if limits else 512
        self.tokenizer, self._pad_id = _load_tokenizer(model_dir, self._max_seq_length)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # do not spin idle worker threads: other Python threads (callers, tokenizer) need the cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.layout = layout
        self.name = name
        self.fingerprint = fingerprint
        self.onnx_path = Path(onnx_path)
        self.prompts = {"query": query_prompt, "document": document_prompt}
        self.normalize = normalize or layout.has_normalize
        self.batch_size = batch_size
        self.quantization = quantization
        self.precision = quantization
        #: the int8 quality gate's verdict (min / mean cosine to fp32 on the probes), when gated
        self.gate: dict | None = None
        self.backend = "onnx"
        self.memory_bytes = sum(p.stat().st_size for p in self.onnx_path.parent.glob(self.onnx_path.name + "*"))
        self.dims = layout.dims or int(self._run([self.tokenizer.encode("dims")]).shape[-1])

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    def encode(self, texts: list[str], kind: Kind = "document") -> np.ndarray:
        """float32 (len(texts), dims).

        Texts are tokenized once, then run in groups of similar token length (at most
        ``batch_size`` each) chosen by :func:`plan_groups` to waste little compute on padding.
        """
        texts = check_texts(texts)
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        if not texts:
            return out
        prompt = self.prompts.get(kind, "") or ""
        inputs = [prompt + t for t in texts] if prompt else texts
        if self.layout.do_lower_case:
            inputs = [t.lower() for t in inputs]
        # a text far past the limit: when a whole-word prefix already fills it, that prefix gives the same
        # tokens (so the same vector) without tokenizing megabytes
        cap = self._max_seq_length * 16
        long = [i for i, t in enumerate(inputs) if len(t) > cap]
        if long:
            inputs = list(inputs)
            prefixes = [_word_prefix(inputs[i], cap) for i in long]
            for i, prefix, enc in zip(long, prefixes, self.tokenizer.encode_batch(prefixes)):
                if enc.overflowing and len(prefix) < len(inputs[i]) and inputs[i][len(prefix)].isspace():
                    inputs[i] = prefix
        encoded = self.tokenizer.encode_batch(inputs, add_special_tokens=True)
        truncated = sum(1 for e in encoded if e.overflowing)
        mark = object()  # setdefault is atomic: exactly one call reports, once per loaded model
        if truncated and self.__dict__.setdefault("_truncation_reported", mark) is mark:
            log.warning("%s: %d of %d texts are longer than max_seq_length (%d tokens) and are truncated to it "
                        "(reported once per loaded model)", self.name, truncated, len(inputs), self._max_seq_length)
        prompt_len = 0
        if prompt and not self.layout.include_prompt:
            prompt_len = len(self.tokenizer.encode(prompt, add_special_tokens=True).ids) - 1
        for group in plan_groups([len(e.ids) for e in encoded], self.batch_size, GROUP_OVERHEAD_TOKENS):
            out[group] = self._run([encoded[i] for i in group], prompt_len)
        return out

    def _run(self, encoded: list, prompt_len: int = 0) -> np.ndarray:
        width = max(len(e.ids) for e in encoded)
        ids = np.full((len(encoded), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.int64)
        types = np.zeros((len(encoded), width), dtype=np.int64)
        for row, e in enumerate(encoded):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = 1
            types[row, :n] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        outputs = self.session.run(None, {k: v for k, v in feed.items() if k in self._inputs})
        tokens = next(o for o in outputs if getattr(o, "ndim", 0) == 3)
        if prompt_len:
            mask = mask.copy()
            mask[:, :prompt_len] = 0
        pooled = _pool(tokens.astype(np.float32, copy=False), mask, self.layout.modes)
        if self.normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32, copy=False)


#: the fixed cost of one ONNX Runtime call, in tokens of compute (weights streamed once per call)
GROUP_OVERHEAD_TOKENS = 16


def plan_groups(lengths: list[int], max_size: int, overhead: int = GROUP_OVERHEAD_TOKENS) -> list[list[int]]:
    """Split indices into runs of similar length: minimise sum(overhead + size * longest).

    Texts sorted by length, then an exact dynamic programme over contiguous runs of at most
    ``max_size``: one long text no longer pads fifteen short ones to its length, and texts of
    equal length still share one call.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sl = [lengths[i] for i in order]
    n = len(sl)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        longest = sl[end - 1]
        for start in range(max(0, end - max_size), end):
            cost = best[start] + overhead + (end - start) * longest
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], n
    while end > 0:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]


def _pool(tokens: np.ndarray, mask: np.ndarray, modes: list[str]) -> np.ndarray:
    """sentence-transformers ``Pooling``, in numpy, modes concatenated in its order."""
    m = mask[..., None].astype(np.float32)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(tokens[:, 0])
        elif mode == "max":
            parts.append(np.where(m > 0, tokens, -np.inf).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            summed = (tokens * m).sum(axis=1)
            count = np.maximum(m.sum(axis=1), 1e-9)
            parts.append(summed / (count if mode == "mean" else np.sqrt(count)))
        elif mode == "weightedmean":
            w = np.arange(1, tokens.shape[1] + 1, dtype=np.float32)[None, :, None] * m
            parts.append((tokens * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-9))
        elif mode == "lasttoken":
            last = np.maximum(mask.sum(axis=1) - 1, 0)
            parts.append(tokens[np.arange(tokens.shape[0]), last])
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
