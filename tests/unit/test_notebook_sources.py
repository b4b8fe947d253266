"""The notebooks' percent sources (``notebooks/*.py``) and their build script pass ruff.

pycodestyle errors and warnings and pyflakes (``--select E,F,W``), 120 columns, no project
config; a notebook idiom that trips a rule (imports in the cell that first needs them: E402) is waived per file, in the
source's jupytext header, never globally. The committed ``.ipynb`` files are checked too (ruff
lints notebooks by default).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_notebook_sources_pass_ruff() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "E,F,W", "--line-length", "120",
                           "notebooks"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
