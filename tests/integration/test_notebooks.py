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
import re
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


def timeline(nb: nbformat.NotebookNode) -> list[dict]:
    """The rows of the memory notebooks' timeline table (cell ``timeline``): step, tier, how queries were
    answered, memories in the database, documents in Chroma, pending."""
    rows = []
    for line in text(nb, "timeline").splitlines()[1:]:
        found = re.match(r"^(?P<step>.+?)\s{2,}(?P<tier>\S+)\s+(?P<answered>\S+)\s+(?P<memories>\d+)\s+"
                         r"(?P<chroma>\d+)\s+(?P<pending>\d+)$", line.strip())
        assert found, f"not a timeline row: {line!r}"
        row = found.groupdict()
        rows.append(row | {k: int(row[k]) for k in ("memories", "chroma", "pending")})
    return rows


def check_timeline(rows: list[dict], stored: int, added: int) -> None:
    """Model -> no model -> model back -> reopened, as both memory notebooks tell it."""
    assert [r["tier"] for r in rows] == ["bundled", "keyword", "keyword", "preferred", "preferred", "preferred"]
    assert [r["answered"] for r in rows] == ["vector", "keyword", "keyword", "(syncing)", "vector", "vector"]
    assert rows[0]["chroma"] == rows[0]["memories"] == stored and rows[0]["pending"] == 0
    for row in rows[1:3]:  # degraded: Chroma receives nothing, the new memories wait
        assert row["chroma"] == stored
    assert rows[2]["memories"] == stored + added and rows[2]["pending"] == added
    for row in rows[4:]:  # model back: the pending memories reached Chroma by themselves, each once
        assert row["memories"] == row["chroma"] == stored + added and row["pending"] == 0


# -- the notebooks, executed ---------------------------------------------------------------
@pytest.mark.slow
def test_langchain_agent_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("langchain_agent_memory.ipynb", tmp_path, monkeypatch)
    first = text(nb, "offline-bundled")
    assert "active tier: bundled" in first and "degraded: False" in first and "query mode: vector" in first
    assert "answered 8/8 correctly (top-1), by vector" in first and "in Chroma: 8 | pending: 0" in first
    keyword = text(nb, "keyword-mode")
    assert "active tier: keyword" in keyword and "degraded: True" in keyword and "query mode: keyword" in keyword
    assert "[keyword" in keyword and "[vector" not in keyword
    assert "warning: EmbeddingSpaceWarning" in keyword  # the change of space is visible with no logging set up
    degraded = text(nb, "degraded-add")
    assert "acknowledged" in degraded
    assert "Chroma: 8 before, 8 after (received nothing while degraded: True)" in degraded
    assert "memories: 10 | in Chroma: 8 | pending: 2" in degraded
    assert "answered 2/2 correctly (top-1), by keyword" in degraded
    assert "hybrid asked for:\n  The guest wifi password is sunflower42.  [keyword" in degraded
    assert "the plain Chroma store, embedding the query itself: ModelUnavailableError" in degraded
    recovered = text(nb, "recovered")
    assert "pending went to 0 by itself" in recovered and "Chroma holds 10" in recovered
    assert "the space of step 1: True" in recovered and "active tier: preferred" in recovered
    assert "answered 10/10 correctly (top-1), by vector" in recovered and "[hybrid" in recovered
    reopened = text(nb, "reopened")
    assert "every memory there once: database True, Chroma True" in reopened
    assert "memories in the database: 10, in Chroma: 10, pending: 0" in reopened
    check_timeline(timeline(nb), stored=8, added=2)
    assert has_png(nb, "timeline-plot")
    recall = text(nb, "recall")
    assert "recall@5" in recall and all(mode in recall for mode in ("vector", "keyword", "hybrid"))
    assert has_png(nb, "plot")


@pytest.mark.slow
def test_llamaindex_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("llamaindex_memory.ipynb", tmp_path, monkeypatch)
    first = text(nb, "first-start")
    assert "active tier: bundled" in first and "answered 5/5 correctly (top-1), by vector" in first
    assert "notes: 6 | in Chroma: 6 | pending: 0" in first
    keyword = text(nb, "keyword-mode")
    assert "a bare ManagedEmbedding: ModelUnavailableError" in keyword
    assert "degraded: True" in keyword and "query mode: keyword" in keyword
    assert "[keyword" in keyword and "[vector" not in keyword
    degraded = text(nb, "degraded-insert")
    assert "Chroma: 6 before, 6 after (received nothing while degraded: True) | pending: 1" in degraded
    assert "by keyword" in degraded and "hybrid asked for: The printer" in degraded and "[keyword" in degraded
    recovered = text(nb, "recovered")
    assert "pending went to 0 by itself" in recovered and "Chroma holds 7" in recovered
    assert "the space of step 1: True" in recovered and "active tier: preferred" in recovered
    assert "✓ Which device is out of ink?" in recovered and "by vector" in recovered and "[hybrid" in recovered
    reopened = text(nb, "reopened")
    assert "every note there once: database True, Chroma True" in reopened
    assert "notes in the database: 7, in Chroma: 7, pending: 0" in reopened
    check_timeline(timeline(nb), stored=6, added=1)
    assert has_png(nb, "timeline-plot")


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
    assert "bm25s" not in (NOTEBOOKS / source).read_text("utf-8"), f"{source}: the bm25s index is gone"
    raw = (NOTEBOOKS / name).read_text("utf-8")
    for private in ("/tmp/", str(ROOT), "/root/", "/home/"):
        assert private not in raw, f"{name}: output contains {private!r}"
