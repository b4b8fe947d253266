"""Dependency direction: core → nothing framework; each adapter → core only; inside the core,
arrows between layers point down only and no module imports itself back through others.

Checked two ways: statically (every import statement, by AST, function-local and
``TYPE_CHECKING`` ones included) and dynamically (import in a fresh interpreter, then look at
``sys.modules``). The core also imports no torch at import time: torch is imported inside the
functions that load a model.

The core's layers (a layer may import its own and those listed for it, nothing else)::

    base      errors settings configfile registry metrics texts origins _util _version  (and the package root)
    cache     store integrity lockfile budget fingerprint modelfiles publish history   disk only
    hub       remote http transfer retry pull                               network; over cache
    backends  base factory hashed pool torch_st onnx/                       over cache
    manager   the composition root: cache + hub + backends
    serving   service tiers options batching handle                         over manager
    memory    db fts fusion records engine                                over serving
    ops       health doctor outdated bundle demo cli/ (and __main__)        may import anything
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


BASE = {"errors", "settings", "configfile", "registry", "metrics", "texts", "origins", "_util", "_version"}
LAYERS: dict[str, set[str]] = {
    "base": {"base"},
    "cache": {"base", "cache"},
    "hub": {"base", "cache", "hub"},
    "backends": {"base", "cache", "backends"},
    "manager": {"base", "cache", "hub", "backends", "manager"},
    "serving": {"base", "cache", "backends", "manager", "serving"},
    "memory": {"base", "cache", "backends", "manager", "serving", "memory"},
    "ops": {"base", "cache", "hub", "backends", "manager", "serving", "memory", "ops"},
}
#: the package root re-exports ModelManager lazily (``modelcache.ModelManager``): its only upward edge
ROOT_LAZY = {"modelcache.manager"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "base"
    if parts[1] == "__main__":  # ``python -m modelcache``: the CLI
        return "ops"
    if parts[1] in LAYERS or parts[1] == "manager":
        return parts[1]
    assert parts[1] in BASE, f"{module}: not in any layer of this test; add it to BASE or a subpackage"
    return "base"


def _core_graph() -> dict[str, set[str]]:
    """module -> the core modules it imports (absolute and relative, anywhere in the file)."""
    files = sorted((ROOT / "modelcache").rglob("*.py"))
    names = {_module_name(f) for f in files}
    graph: dict[str, set[str]] = {}
    for f in files:
        me = _module_name(f)
        package = me if f.name == "__init__.py" else me.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text("utf-8"), str(f))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                while target and target not in names:
                    target = target.rpartition(".")[0]
                if target and target != me and target.startswith("modelcache"):
                    edges.add(target)
        graph[me] = edges
    return graph


def test_core_has_no_import_cycle() -> None:
    graph = _core_graph()
    graph["modelcache"] = graph["modelcache"] - ROOT_LAZY
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    assert not cycles, "import cycles in the core: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_core_layers_import_downwards_only() -> None:
    bad = []
    for module, edges in sorted(_core_graph().items()):
        allowed = LAYERS[_layer(module)]
        for target in sorted(edges):
            if module == "modelcache" and target in ROOT_LAZY:
                continue
            if _layer(target) not in allowed:
                bad.append(f"{module} ({_layer(module)}) imports {target} ({_layer(target)})")
    assert not bad, "\n".join(bad)


def test_the_cycle_check_catches_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: a planted two-module cycle is reported."""
    pkg = tmp_path / "modelcache"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from modelcache import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="modelcache.a <-> modelcache.b"):
        test_core_has_no_import_cycle()


def test_adapters_never_import_ops() -> None:
    bad = [f"{f.relative_to(ROOT)}:{line} imports {mod}"
           for package in ("langchain_modelcache", "llamaindex_modelcache")
           for f in sorted((ROOT / package).rglob("*.py"))
           for mod, line, _ in _imports(f) if _matches(mod, ("modelcache.ops",))]
    assert not bad, "\n".join(bad)


def test_no_core_module_over_400_lines() -> None:
    big = {str(f.relative_to(ROOT)): n for f in (ROOT / "modelcache").rglob("*.py")
           if (n := len(f.read_text("utf-8").splitlines())) > 400}
    assert not big, f"split these modules (one concept each): {big}"


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
    loaded = _modules_after("import modelcache, modelcache.serving.service, modelcache.memory.engine\n"
                            "import modelcache.manager\n"
                            "from modelcache.serving.service import EmbeddingService\n"
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
