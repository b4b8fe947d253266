"""sentence-transformers (torch) backend. torch is imported only when a model is loaded."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, UnsafeFileError
from .base import Kind

log = logging.getLogger("modelcache")


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
                 batch_size: int = 32, max_seq_length: int | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise BackendUnavailableError("torch", "torch", str(exc)) from exc
        refuse_remote_code(model_dir)
        self.model = SentenceTransformer(str(model_dir), device=device, trust_remote_code=False,
                                         local_files_only=True)
        if max_seq_length:
            self.model.max_seq_length = min(self.model.max_seq_length or max_seq_length, max_seq_length)
        self.name = name
        self.fingerprint = fingerprint
        self.dims = int(self.model.get_embedding_dimension())
        self.prompts = {"query": query_prompt, "document": document_prompt}
        self.normalize = normalize
        self.batch_size = batch_size
        self.backend = "torch"

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def count_tokens(self, texts: list[str]) -> list[int]:
        tok = self.model.tokenizer
        return [len(ids) for ids in tok(texts, add_special_tokens=True, truncation=False)["input_ids"]]

    def encode(self, texts: list[str], kind: Kind = "document") -> np.ndarray:
        prompt = self.prompts.get(kind, "")
        inputs = [prompt + t for t in texts] if prompt else list(texts)
        vectors = self.model.encode(inputs, batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=self.normalize, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dims)
