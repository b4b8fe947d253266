"""sentence-transformers (torch) backend. torch is imported only when a model is loaded."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from modelcache.backends.base import Kind
from modelcache.errors import BackendUnavailableError, UnsafeFileError
from modelcache.texts import check_texts

log = logging.getLogger("modelcache")


def resolve_device(device: str | None) -> str:
    """``auto`` (or None): ``cuda`` when torch sees a GPU, else ``mps`` on Apple silicon, else ``cpu``."""
    if device not in (None, "", "auto"):
        return str(device)
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def refuse_remote_code(model_dir: Path) -> None:
    """We never execute code shipped in a model repo."""
    config = model_dir / "config.json"
    if config.exists():
        data = json.loads(config.read_text("utf-8"))
        if data.get("auto_map"):
            raise UnsafeFileError(f"{model_dir.name}: the model asks for remote code (auto_map)",
                                  "modelcache never runs code from a model repo; pick a model that "
                                  "works with trust_remote_code=False")


class SentenceTransformerEncoder:
    """A loaded sentence-transformers model, with the registry's prompts applied."""

    def __init__(self, model_dir: Path, *, name: str, fingerprint: str, device: str = "cpu",
                 query_prompt: str = "", document_prompt: str = "", normalize: bool = True,
                 batch_size: int = 32, max_seq_length: int | None = None, precision: str = "fp32"):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise BackendUnavailableError("torch", "torch", str(exc)) from exc
        refuse_remote_code(model_dir)
        self.device = resolve_device(device)
        if precision == "bf16":
            from modelcache.backends.precision import check_bf16

            check_bf16(name, self.device.split(":")[0] if self.device.startswith("cuda") else self.device)
        self.precision = precision
        self.model = SentenceTransformer(str(model_dir), device=self.device, trust_remote_code=False,
                                         local_files_only=True)
        if max_seq_length:
            self.model.max_seq_length = min(self.model.max_seq_length or max_seq_length, max_seq_length)
        self.name = name
        self.fingerprint = fingerprint
        self.dims = int(self.model.get_embedding_dimension() or 0)
        self.prompts = {"query": query_prompt, "document": document_prompt}
        self.normalize = normalize
        self.batch_size = batch_size
        self.backend = "torch"

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length or 0)

    def encode(self, texts: list[str], kind: Kind = "document") -> np.ndarray:
        """float32 ``(len(texts), dims)``.

        ``texts`` must be a list (or tuple) of str: a single str, None or a non-str item raises
        :class:`TypeError` naming the index; a str that is not valid Unicode (a lone surrogate)
        raises :class:`ValueError` naming the index. ``[]`` gives ``(0, dims)``; ``""`` embeds
        like any text. Texts longer than ``max_seq_length`` tokens are truncated (as
        sentence-transformers does); the first time that happens a WARNING is logged, once per
        loaded model.
        """
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        prompt = self.prompts.get(kind, "")
        inputs = [prompt + t for t in texts] if prompt else list(texts)
        limit = self.max_seq_length
        cap = limit * 16
        reported = "_truncation_reported" in self.__dict__
        # a token covers at least one UTF-8 byte, so only longer texts can be truncated; they are
        # counted on a prefix (the backend tokenizer is only read here, never reconfigured)
        candidates = [i for i, t in enumerate(inputs)
                      if len(t) > cap or (not reported and len(t.encode("utf-8")) + 2 > limit)]
        if candidates:
            prefixes = [_word_prefix(inputs[i], cap) for i in candidates]
            encodings = self.model.tokenizer.backend_tokenizer.encode_batch(prefixes)
            truncated = 0
            for i, prefix, enc in zip(candidates, prefixes, encodings):
                if len(enc.ids) > limit or enc.overflowing:
                    truncated += 1
                    if len(prefix) < len(inputs[i]) and inputs[i][len(prefix)].isspace():
                        # whole words that already exceed the limit: the same tokens are kept, so
                        # the same vector, without tokenizing megabytes
                        inputs[i] = prefix
            mark = object()  # setdefault is atomic: exactly one call reports, once
            if truncated and self.__dict__.setdefault("_truncation_reported", mark) is mark:
                log.warning("%s: %d of %d texts are longer than max_seq_length (%d tokens) and are "
                            "truncated to it (reported once per loaded model)",
                            self.name, truncated, len(inputs), limit)
        if self.precision == "bf16":
            import torch

            with torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16):
                tensor = self.model.encode(inputs, batch_size=self.batch_size, convert_to_tensor=True,
                                           normalize_embeddings=self.normalize, show_progress_bar=False)
            vectors = tensor.float().cpu().numpy()
        else:
            vectors = self.model.encode(inputs, batch_size=self.batch_size, convert_to_numpy=True,
                                        normalize_embeddings=self.normalize, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dims)


def _word_prefix(text: str, cap: int) -> str:
    """``text`` cut to at most ``cap`` characters at a whitespace (whole words only)."""
    if len(text) <= cap:
        return text
    cut = max(text.rfind(" ", 0, cap), text.rfind("\n", 0, cap), text.rfind("\t", 0, cap))
    return text[:cut] if cut > 0 else text[:cap]
