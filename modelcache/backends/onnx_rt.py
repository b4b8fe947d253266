"""ONNX Runtime backend (extra ``onnx``: onnxruntime + tokenizers) and the backend factory.

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

:func:`load_encoder` picks torch | onnx | auto for a :class:`~modelcache.manager.LocalModel`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendUnavailableError, ModelCacheError
from ..texts import check_texts
from .base import Kind
from .torch_st import refuse_remote_code

if TYPE_CHECKING:
    from ..manager import LocalModel
    from ..settings import Settings

log = logging.getLogger("modelcache")

__all__ = ["OnnxEncoder", "OnnxExportCache", "OnnxUnsupportedError", "export_onnx", "load_encoder",
           "onnx_available", "QUANTIZATIONS"]

QUANTIZATIONS = ("fp32", "int8")
REPO_ONNX = "onnx/model.onnx"
OPSET = 17
#: legacy ``pooling_mode_*`` flags -> sentence-transformers' mode names, in its concatenation order
_LEGACY_POOLING = {"cls_token": "cls", "max_tokens": "max", "mean_tokens": "mean",
                   "mean_sqrt_len_tokens": "mean_sqrt_len_tokens", "weightedmean_tokens": "weightedmean",
                   "lasttoken": "lasttoken"}
_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}


class OnnxUnsupportedError(ModelCacheError, ValueError):
    """The model has a part the ONNX backend does not run (``auto`` then uses torch)."""

    def __init__(self, model: str, why: str):
        self.model = model
        super().__init__(f"{model}: the ONNX backend cannot run this model ({why}). "
                         "Use embedding.backend: torch (or auto).")


def onnx_available() -> bool:
    """True if onnxruntime and tokenizers can be imported (without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers"))


def _export_possible() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "onnx"))


def sha256_path(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), "utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- model layout
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


class _Layout:
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
        self.pooling = _read_json(self.dir / pooling_dir / "config.json")
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
        st_config = _read_json(self.dir / "sentence_bert_config.json")
        tok_config = _read_json(self.dir / "tokenizer_config.json")
        config = _read_json(self.dir / "config.json")
        # as sentence-transformers: its own max_seq_length, else the tokenizer's, capped by positions
        self.max_seq_length = st_config.get("max_seq_length") or tok_config.get("model_max_length")
        self.model_max = config.get("max_position_embeddings")
        self.do_lower_case = bool(st_config.get("do_lower_case", False))
        width = (self.pooling.get("embedding_dimension") or self.pooling.get("word_embedding_dimension")
                 or config.get("hidden_size"))
        self.dims = int(width) * len(self.modes) if width else None


def _load_tokenizer(model_dir: Path, max_length: int):
    from tokenizers import Tokenizer

    path = model_dir / "tokenizer.json"
    if not path.exists():
        raise OnnxUnsupportedError(model_dir.name, "no tokenizer.json (a fast tokenizer file is needed)")
    tok = Tokenizer.from_file(str(path))
    special = _read_json(model_dir / "special_tokens_map.json").get("pad_token", "[PAD]")
    pad_token = special.get("content") if isinstance(special, dict) else special
    pad_id = tok.token_to_id(pad_token) if pad_token else None
    if pad_id is None:
        pad_id = tok.padding["pad_id"] if tok.padding else 0
        pad_token = tok.padding["pad_token"] if tok.padding else "[PAD]"
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()  # groups are padded in numpy (see plan_groups)
    return tok, pad_id


# ----------------------------------------------------------------------------- encoder
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
        layout = _Layout(model_dir, name)
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
        self.backend = "onnx"
        self.memory_bytes = sum(p.stat().st_size for p in self.onnx_path.parent.glob(self.onnx_path.name + "*"))
        self.dims = layout.dims or int(self._run([self.tokenizer.encode("dims")]).shape[-1])

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text after truncation, special tokens included."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=True)]

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
        encoded = self.tokenizer.encode_batch(inputs, add_special_tokens=True)
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


# ----------------------------------------------------------------------------- export
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
        meta = _read_json(meta_path)
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
                _write_json_atomic(meta_path, meta)
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
                _write_json_atomic(target.with_name("meta.json"), meta)
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
    from ..store import CacheStore

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
    return _cached_or_built(roots, f"{fingerprint}-{quantize}", lambda tmp: quantize_int8(fp32, tmp),
                            source=str(fp32), quantization=quantize)


def has_onnx(model_dir: Path, fingerprint: str, roots: list[Path], quantize: str = "fp32") -> bool:
    """True if an ONNX file is there without exporting (repo's own or a cached export)."""
    if quantize == "fp32" and (Path(model_dir) / REPO_ONNX).is_file():
        return True
    key = fingerprint if quantize == "fp32" else f"{fingerprint}-{quantize}"
    return any(OnnxExportCache(root).entry(key).exists() for root in roots)


# ----------------------------------------------------------------------------- factory
def load_encoder(local: LocalModel, settings: Settings, backend: str | None = None, *,
                 quantize: str | None = None, fingerprint: str | None = None):
    """An encoder for a model on disk: ``backend`` torch | onnx | auto (default: the settings').

    ``auto`` runs ONNX when onnxruntime + tokenizers are installed and an ONNX file is there or
    can be exported, and torch otherwise (or when the ONNX load fails, with a warning).
    ``quantize="int8"`` (ONNX only) gives a ``-int8`` fingerprint.
    """
    from .. import fingerprint as fp

    spec, path = local.spec, Path(local.path)
    backend = backend or settings.embedding.backend
    quantize = quantize or "fp32"
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    fingerprint = fingerprint or fp.compute(path, dims=spec.dims, normalize=spec.normalize,
                                            query_prompt=spec.query_prompt, document_prompt=spec.document_prompt)
    if backend == "auto":
        if onnx_available() and (has_onnx(path, fingerprint, export_roots(settings), quantize) or _export_possible()):
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
    from .torch_st import SentenceTransformerEncoder

    return SentenceTransformerEncoder(path, name=spec.name, fingerprint=fingerprint,
                                      device=settings.embedding.device, query_prompt=spec.query_prompt,
                                      document_prompt=spec.document_prompt, normalize=spec.normalize,
                                      batch_size=settings.embedding.batch_size,
                                      max_seq_length=spec.max_seq_length)


def _onnx(local: LocalModel, settings: Settings, fingerprint: str, quantize: str) -> OnnxEncoder:
    spec, path = local.spec, Path(local.path)
    if settings.embedding.device not in ("cpu", "auto"):
        log.info("the ONNX backend runs on CPU; ignoring device %r", settings.embedding.device)
    _Layout(path, spec.name)  # refuse unsupported pipelines before exporting anything
    onnx_path = onnx_model_path(path, fingerprint, export_roots(settings), quantize)
    return OnnxEncoder(path, onnx_path, name=spec.name,
                       fingerprint=fingerprint if quantize == "fp32" else f"{fingerprint}-{quantize}",
                       query_prompt=spec.query_prompt, document_prompt=spec.document_prompt,
                       normalize=spec.normalize, batch_size=settings.embedding.batch_size,
                       max_seq_length=spec.max_seq_length, quantization=quantize)
