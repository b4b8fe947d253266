"""Keyword mode pieces: hashed vectors (the bottom tier), rank fusion, and the service handle of both adapters."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from modelcache.backends.hashed import KEYWORD_PREFIX, HashedEncoder
from modelcache.errors import EmbeddingSpaceWarning, ModelUnavailableError
from modelcache.memory.fusion import rrf
from modelcache.serving.handle import ServiceHandle

# -- HashedEncoder ------------------------------------------------------------------------------


def test_hashed_vectors_shape_norm_and_fingerprint() -> None:
    enc = HashedEncoder(64)
    vectors = enc.encode(["Hello world", "", "!!!", "hello, WORLD"])
    assert vectors.shape == (4, 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)  # never a zero vector
    np.testing.assert_array_equal(vectors[0], vectors[3])  # case and punctuation do not matter
    np.testing.assert_array_equal(vectors[1], vectors[2])  # no words: the same fixed vector
    assert enc.fingerprint == "keyword-hash-64" and enc.degraded


def test_hashed_vectors_share_subwords() -> None:
    enc = HashedEncoder(384)
    memory, memories, banana = enc.encode(["memory", "memories", "banana"])
    assert memory @ memories > 0.3 > abs(memory @ banana)


def test_hashed_vectors_are_the_same_in_another_process() -> None:
    code = ("import sys, json; from modelcache.backends.hashed import HashedEncoder; "
            "print(json.dumps(HashedEncoder(32).encode(['Spare keys in the blue drawer'])[0].tolist()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    here = HashedEncoder(32).encode(["Spare keys in the blue drawer"])[0]
    np.testing.assert_allclose(json.loads(out.stdout), here, atol=1e-7)


def test_hashed_encoder_rejects_bad_dims() -> None:
    with pytest.raises(ValueError):
        HashedEncoder(0)


# -- fusion -------------------------------------------------------------------------------------


def test_rrf() -> None:
    fused = rrf([["a", "b", "c"], ["c", "a"]], k=60)
    assert [i for i, _ in fused] == ["a", "c", "b"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


# -- the service handle -----------------------------------------------------------------------


class Handle(ServiceHandle):
    """An adapter's embeddings class, without the framework: the shared options and a model name."""

    model_name: str = "all-MiniLM-L6-v2"


def test_service_handle_is_lazy_and_refuses_to_change_space_unless_allowed() -> None:
    handle = Handle(offline=True, fallback_strategy="manual", fallback_models=["keyword"])
    assert handle._service is None
    assert (handle.active_tier, handle.active_model, handle.fingerprint, handle.degraded) == (None, None, None, False)
    service = handle.service
    assert handle.service is service and handle._service is service  # created once
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelUnavailableError, match="allow_degraded=True"):
            handle._vectors(["hello"], "query")  # no model of the space: never keyword vectors silently
    assert any(issubclass(w.category, EmbeddingSpaceWarning) for w in caught)  # visible without logging
    assert (handle.active_tier, handle.fingerprint, handle.degraded) == ("keyword", f"{KEYWORD_PREFIX}384", True)
    allowed = Handle(offline=True, fallback_strategy="manual", fallback_models=["keyword"], allow_degraded=True)
    assert allowed._vectors(["hello"], "query").shape == (1, 384)
    assert allowed.last_fingerprint == f"{KEYWORD_PREFIX}384" and allowed.status()["active_tier"] == "keyword"
    with pytest.raises(TypeError):
        allowed._vectors("a single string", "document")  # never split into characters
