"""Dependency direction: core → nothing framework; each adapter → core only.

Checked two ways: statically (every import statement, by AST) and dynamically (import in a
fresh interpreter, then look at ``sys.modules``). The core also imports no torch at import
time: torch is imported inside the functions that load a model.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("langchain", "langchain_core", "langchain_community", "llama_index")
HEAVY = ("torch", "sentence_transformers", "transformers")
RULES = {
    "modelcache": FRAMEWORKS + ("langchain_modelcache", "llamaindex_modelcache"),
    "langchain_modelcache": ("llama_index", "llamaindex_modelcache"),
    "llamaindex_modelcache": ("langchain", "langchain_core", "langchain_community", "langchain_modelcache"),
}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(module, line, top_level)`` for each import; top_level: not inside a function."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, not in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, child.lineno, not in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _matches(module: str, banned: tuple[str, ...]) -> bool:
    return any(module == b or module.startswith(b + ".") for b in banned)


@pytest.mark.parametrize("package", sorted(RULES))
def test_no_forbidden_import_statements(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    bad = [f"{f.relative_to(ROOT)}:{line} imports {mod}"
           for f in files for mod, line, _ in _imports(f) if _matches(mod, RULES[package])]
    assert not bad, "\n".join(bad)


def test_core_imports_torch_only_inside_functions() -> None:
    bad = [f"{f.relative_to(ROOT)}:{line} imports {mod} at module level"
           for f in sorted((ROOT / "modelcache").rglob("*.py"))
           for mod, line, top in _imports(f) if top and _matches(mod, HEAVY)]
    assert not bad, "\n".join(bad)


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}


def test_core_import_loads_no_framework_and_no_torch() -> None:
    loaded = _modules_after("import modelcache, modelcache.fallback, modelcache.keyword, modelcache.manager\n"
                            "from modelcache.fallback import EmbeddingService\n"
                            "EmbeddingService().status()")
    assert not loaded & {"langchain_core", "llama_index", "langchain_modelcache", "llamaindex_modelcache",
                         "torch", "sentence_transformers", "transformers"}


def test_langchain_adapter_loads_no_llamaindex_and_no_torch() -> None:
    loaded = _modules_after("from langchain_modelcache import ManagedEmbeddings, FallbackRetriever\n"
                            "ManagedEmbeddings(model='all-MiniLM-L6-v2').status()")
    assert "langchain_core" in loaded
    assert not loaded & {"llama_index", "llamaindex_modelcache", "torch", "sentence_transformers"}


def test_llamaindex_adapter_loads_no_langchain_and_no_torch() -> None:
    loaded = _modules_after("from llamaindex_modelcache import ManagedEmbedding, FallbackRetriever\n"
                            "ManagedEmbedding(model='all-MiniLM-L6-v2').status()")
    assert "llama_index" in loaded
    assert not loaded & {"langchain_modelcache", "langchain_core", "torch", "sentence_transformers"}
