"""Reduced precisions and their checks: the int8 quality gate and bf16 hardware support.

Each precision has its own fingerprint (:func:`modelcache.cache.fingerprint.with_precision`), so
vectors of two precisions never mix. ``int8`` (ONNX, per-channel dynamic quantisation) is kept only
when its vectors stay close to fp32 on :data:`PROBES` (cosine per probe >= ``int8_min_cosine``);
the verdict is recorded beside the export, so the gate runs once per export. ``bf16`` runs torch
under bfloat16 autocast, only where the CPU has AMX or avx512_bf16 (or on a GPU that supports it).
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from modelcache._util import atomic_write_json, read_json
from modelcache.errors import PrecisionRefusedError

PRECISIONS = ("fp32", "int8", "bf16")

#: short and long, plain and technical, several languages: what an agent's memory holds
PROBES = (
    "Hello world",
    "What is the capital of France?",
    "The user prefers dark mode and wants replies in German.",
    "def add(a, b):\n    return a + b",
    "Meeting moved to Thursday 3pm; bring the Q3 revenue figures and the churn analysis.",
    "Installing torch without a pin pulls several gigabytes of CUDA packages.",
    "La réunion est reportée à jeudi.",
    "Der Zug hat zwanzig Minuten Verspätung.",
    "error: connection refused (ECONNREFUSED) at 127.0.0.1:5432",
    "The quick brown fox jumps over the lazy dog. " * 12,
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules, releasing "
    "oxygen as a by-product; it takes place in the chloroplasts of plant cells.",
    "42",
)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def int8_gate(model: str, int8_path: Path, reference, candidate, bound: float) -> dict:
    """Check (once per export) that the int8 encoder ``candidate`` stays close to ``reference``.

    The verdict is kept in the export's ``meta.json`` (``gate``); a recorded verdict is reused when
    it was measured against a bound at least as strict. Raises :class:`PrecisionRefusedError`.
    """
    meta_path = Path(int8_path).with_name("meta.json")
    meta = read_json(meta_path)
    gate = meta.get("gate") or {}
    if not gate or gate.get("probes") != len(PROBES):
        sims = cosines(np.asarray(reference.encode(list(PROBES))), np.asarray(candidate.encode(list(PROBES))))
        gate = {"min_cosine": float(sims.min()), "mean_cosine": float(sims.mean()),
                "probes": len(PROBES)}
        meta["gate"] = gate
        if meta_path.parent.exists():
            try:
                atomic_write_json(meta_path, meta, indent=1)
            except OSError:
                pass  # read-only: the gate runs again next time
    if gate["min_cosine"] < bound:
        raise PrecisionRefusedError(
            model, "int8", f"its vectors are too far from fp32 (lowest cosine on {gate['probes']} probes "
            f"{gate['min_cosine']:.4f} < embedding.int8_min_cosine {bound})",
            "Use precision 'fp32' (or lower embedding.int8_min_cosine if this loss is acceptable).")
    return gate


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 matrix instructions (AMX or avx512_bf16)."""
    if platform.system() != "Linux":
        return platform.machine().lower() in ("arm64", "aarch64")  # Apple M2+/Graviton3: bf16 via NEON/SVE
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(f in flags for f in (" amx_bf16", " avx512_bf16"))


def check_bf16(model: str, device: str) -> None:
    """Raise unless ``device`` runs bfloat16 natively (emulated bf16 is slower than fp32)."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_bf16_supported():
            return
        why = "this GPU has no bfloat16 support"
    elif device == "cpu":
        if cpu_has_bf16():
            return
        why = "this CPU has no native bfloat16 instructions (AMX or avx512_bf16): it would run slower than fp32"
    else:
        why = f"bf16 is supported on cpu and cuda devices, not {device!r}"
    raise PrecisionRefusedError(model, "bf16", why, "Use precision 'fp32' or 'int8'.")
