"""Every ```python block of the README runs as written: offline, on an empty cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), flags=re.S)


def test_readme_has_the_two_commands_first():
    head = README.read_text("utf-8").splitlines()[:6]
    assert any(line.startswith("make demo") for line in head) and any(line.startswith("make test") for line in head)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs_offline(block, tmp_path):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(README.parent)}
    proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)  # the examples persist into ./agent-memory
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bundled" in proc.stdout  # offline + empty cache: the chain's bundled tier answered


def test_readme_config_block_is_a_valid_config(tmp_path):
    from modelcache.settings import load_settings

    block = re.findall(r"```yaml\n(.*?)```", README.read_text("utf-8"), flags=re.S)[0]
    path = tmp_path / "modelcache.yaml"
    path.write_text(block)
    settings = load_settings(path)
    assert settings.model_cache.max_size_gb == 20 and settings.fallback.strategy == "auto"
