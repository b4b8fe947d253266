"""Run a documented shell recipe as a user would: bash -euo pipefail, this interpreter's bin dir first on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_recipe_script(name: str, script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, (f"recipe {name} failed:\n{script}\n--- stdout\n{done.stdout}\n"
                                  f"--- stderr\n{done.stderr}")
    return done
