"""Build the notebooks from their jupytext percent sources, execute them, and save them with outputs.

    .venv/bin/python notebooks/_build.py                 # all notebooks
    .venv/bin/python notebooks/_build.py operations      # the ones whose name contains a word
    .venv/bin/python notebooks/_build.py --no-execute    # write them without outputs
    .venv/bin/python notebooks/_build.py --no-hub        # operations.ipynb without a Hub endpoint

Each ``notebooks/NAME.py`` (jupytext "percent" format: ``# %%`` code cells, ``# %% [markdown]``
markdown cells, ``# %% tags=["..."]`` for tags) is the source of ``notebooks/NAME.ipynb``: edit
the ``.py``, then run this script, so that the committed notebooks always carry the outputs of
their current code. Each notebook runs in a fresh temp dir as working directory, with kernel
``python3`` (this interpreter). ``operations.ipynb`` pulls from the local test Hub
(``tests.support.hub``, olah on 127.0.0.1) unless ``--no-hub``. Outputs are cleaned of
machine-specific paths (the notebooks' temp dirs, the repo and the interpreter) before saving.

``tests/integration/test_notebooks.py`` executes the saved notebooks the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CELL_TIMEOUT_S = 300
# notebook -> its percent source; every notebooks/*.py but this script
NOTEBOOKS = {p.with_suffix(".ipynb").name: p for p in sorted(HERE.glob("*.py")) if not p.name.startswith("_")}


def read_source(path: Path) -> nbformat.NotebookNode:
    """The cells of a percent file, as jupytext reads them (what the committed notebook must hold)."""
    return jupytext.read(path, fmt="py:percent")


def build(path: Path) -> nbformat.NotebookNode:
    """A notebook without outputs from the percent file ``path``: its cells (and tags), fixed metadata."""
    nb = nbformat.v4.new_notebook()
    nb.cells = read_source(path).cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids and only the tags as metadata: small diffs between builds
        tags = cell.metadata.get("tags")
        cell.metadata = nbformat.NotebookNode({"tags": list(tags)} if tags else {})
        cell["id"] = f"cell-{i:02d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = CELL_TIMEOUT_S) -> nbformat.NotebookNode:
    """Run every cell in a python3 kernel (this interpreter) with ``cwd`` as working directory."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}},
                            record_timing=False, coalesce_streams=True)
    client.execute()
    return nb


def clean(nb: nbformat.NotebookNode, replacements: dict[str, str]) -> nbformat.NotebookNode:
    """Remove machine-specific paths from text outputs."""
    patterns = [(re.compile(r"/tmp/modelcache-nb-[A-Za-z0-9_]+"), "$WORK"),
                *((re.compile(re.escape(k)), v) for k, v in replacements.items())]

    def fix(text: str) -> str:
        for pattern, new in patterns:
            text = pattern.sub(new, text)
        return text

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = fix(out["text"])
            for mime in ("text/plain", "text/markdown"):
                if mime in out.get("data", {}):
                    out["data"][mime] = fix(out["data"][mime])
    return nb


@contextlib.contextmanager
def local_hub() -> Iterator[str]:
    """The tests' olah Hub on 127.0.0.1 (tiny repos + the real all-MiniLM-L6-v2)."""
    sys.path.insert(0, str(ROOT))
    from tests.support.hub import OlahServer, build_standard_repos
    from tests.support.tiny_model import build_tiny_st_model

    with tempfile.TemporaryDirectory(prefix="modelcache-nbhub-") as tmp:
        root = Path(tmp)
        build_standard_repos(root / "mirrors", build_tiny_st_model(root / "tiny-v1", seed=0),
                             build_tiny_st_model(root / "tiny-v2", seed=1))
        with OlahServer(root / "mirrors", root / "olah") as server:
            yield server.endpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="build only notebooks whose file name contains one of these")
    parser.add_argument("--no-execute", action="store_true", help="write the notebooks without outputs")
    parser.add_argument("--no-hub", action="store_true", help="run operations.ipynb without a Hub endpoint")
    args = parser.parse_args(argv)
    chosen = [n for n in NOTEBOOKS if not args.names or any(w in n for w in args.names)]
    if not chosen:
        parser.error(f"no notebook matches {' '.join(args.names)}; there are: {', '.join(NOTEBOOKS)}")
    replacements = {sysconfig.get_paths()["purelib"]: "<site-packages>", sys.prefix: "<venv>", str(ROOT): "<repo>",
                    sys.base_prefix: "<python>"}
    with contextlib.ExitStack() as stack:
        for name in chosen:
            nb = build(NOTEBOOKS[name])
            if not args.no_execute:
                cwd = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelcache-nbrun-")))
                saved = os.environ.get("MODELCACHE_ENDPOINTS")
                os.environ.pop("MODELCACHE_ENDPOINTS", None)
                if name == "operations.ipynb" and not args.no_hub:
                    endpoint = stack.enter_context(local_hub())
                    os.environ["MODELCACHE_ENDPOINTS"] = endpoint
                    replacements[endpoint] = "http://127.0.0.1:<port>"
                t0 = time.perf_counter()
                try:
                    execute(nb, cwd)
                finally:
                    os.environ.pop("MODELCACHE_ENDPOINTS", None)
                    if saved is not None:
                        os.environ["MODELCACHE_ENDPOINTS"] = saved
                print(f"{name}: executed in {time.perf_counter() - t0:.0f}s")
                clean(nb, replacements)
            nbformat.validate(nb)
            nbformat.write(nb, HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
