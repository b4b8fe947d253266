"""Keyword-mode vectors: deterministic hashed token features (the bottom tier of the chain).

``HashedEncoder`` gives vectors when no model is available, so vector stores never break; their
fingerprint is ``KEYWORD_PREFIX + dims``, never equal to a model's.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import defaultdict

import numpy as np

log = logging.getLogger("modelcache")

#: the fingerprint of hashed-token vectors is ``KEYWORD_PREFIX + dims``
KEYWORD_PREFIX = "keyword-hash-"

_WORD = re.compile(r"\w+", re.UNICODE)


def word_tokens(text: str) -> list[str]:
    """Lowercased Unicode word tokens (``\\w+``): the tokenizer of both keyword features."""
    return _WORD.findall(text.lower())


class HashedEncoder:
    """Deterministic hashed token features: the vectors of keyword (degraded) mode.

    Features of a text: every lowercased word token (weight 1) and every character 3-gram of
    each word padded as ``<word>`` (weight 0.5, so "memory" and "memories" overlap). Each
    feature is hashed with blake2b (8 bytes; not Python's salted ``hash``) to a dimension and
    a sign; a feature's weight is multiplied by ``1 + log(count)`` (sublinear term frequency).
    The vector is L2-normalised. The empty string (or a text with no word characters) maps to
    a fixed unit vector, so no vector is ever zero. The same text gives the same vector in
    every process and on every machine; ``kind`` (query/document) is ignored.
    """

    degraded = True
    backend = "keyword"

    def __init__(self, dims: int = 384, ngram: int = 3):
        if not isinstance(dims, int) or dims <= 0:
            raise ValueError(f"dims must be a positive integer, got {dims!r}")
        self.dims = dims
        self.ngram = ngram
        self.name = "keyword"
        self.fingerprint = f"{KEYWORD_PREFIX}{dims}"

    def features(self, text: str) -> dict[str, float]:
        """Feature -> summed weight, before hashing (useful to explain a vector)."""
        feats: defaultdict[str, float] = defaultdict(float)
        for word in word_tokens(text):
            feats["w:" + word] += 1.0
            padded = f"<{word}>"
            for i in range(max(1, len(padded) - self.ngram + 1)):
                feats["c:" + padded[i:i + self.ngram]] += 0.5
        return dict(feats) or {"<empty>": 1.0}

    def _slot(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dims, (1.0 if (value >> 63) & 1 else -1.0)

    def encode(self, texts: list[str], kind: str = "document") -> np.ndarray:
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature, weight in self.features(text).items():
                col, sign = self._slot(feature)
                out[row, col] += sign * (1.0 + math.log(weight)) if weight >= 1 else sign * weight
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:  # every feature cancelled out: fall back to the sentinel
                col, sign = self._slot("<empty>")
                out[row, col], norm = sign, 1.0
            out[row] /= norm
        return out
