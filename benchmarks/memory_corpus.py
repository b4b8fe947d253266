"""A held-out retrieval corpus built from material on this machine: the docstrings of the
Python packages installed next to this interpreter (its ``site-packages``).

Every ``.py`` file is parsed with :mod:`ast` (nothing is imported). For each function, method
or class whose docstring follows the usual layout (a one-line summary, a blank line, then a
body) the *query* is the summary line and the *document* is ``name(args)`` followed by the body:
the summary itself never appears in its document, so a ranker has to connect a short
description to a longer one, as an agent's memory search does.

Dropped: tests and vendored copies, private names, summaries of fewer than 3 or more than 30
words, boilerplate (``Initialize self.``, ``Deprecated``, ``See ...``, ``Alias for ...``), bodies
under 15 words, and near-duplicates: a query or a document whose normalised text (lower case,
punctuation and whitespace collapsed) was already seen keeps only its first occurrence (files are
walked in sorted order). The pairs are then shuffled with a fixed seed, so "the first N" is a
deterministic sample. Bodies are cut at ``MAX_CHARS`` (at a word boundary).

The built corpus is cached as JSON under ``CACHE_DIR`` keyed on the installed distributions
(name + version) and the builder's own parameters, so a rerun takes well under a second.

    .venv/bin/python benchmarks/memory_corpus.py        # build (or load) and print a summary
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import re
import sys
import sysconfig
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

#: where built corpora (and the benchmark's embeddings) are cached
CACHE_DIR = Path(os.environ.get("MODELCACHE_BENCH_CACHE", "/tmp/modelcache-bench-cache"))
SEED = 20240611
MAX_CHARS = 2000
MIN_DOC_WORDS = 15
MIN_QUERY_WORDS, MAX_QUERY_WORDS = 3, 30
_VERSION = 1  # bump when the rules above change (invalidates the cache)

_SKIP_DIRS = {"tests", "test", "testing", "_vendor", "vendor", "vendored", "_vendored", "__pycache__",
              "examples", "benchmarks", "docs"}
_BOILERPLATE = re.compile(
    r"^(initiali[sz]e self|create and return a new object|return self|implement |"
    r"deprecated|see |alias (for|of) |same as |shortcut for |wrapper (for|around) |"
    r"todo|fixme|xxx|docstring|placeholder|overrid(e|den)|inherited|"
    r"this (method|function) is deprecated|for internal use|internal )", re.IGNORECASE)
_NORM = re.compile(r"[\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Pair:
    """One held-out pair: ``query`` (a docstring's summary line) and its relevant ``document``."""

    id: str       # "<distribution>:<module>:<qualname>"
    package: str  # the distribution the file belongs to
    query: str
    document: str


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _distributions(root: Path) -> dict[str, str]:
    """``{path relative to root: distribution name}`` from every ``*.dist-info/RECORD``."""
    owner: dict[str, str] = {}
    for info in sorted(root.glob("*.dist-info")):
        record = info / "RECORD"
        name = info.name.split("-")[0]
        if not record.is_file():
            continue
        for line in record.read_text(encoding="utf-8", errors="replace").splitlines():
            path = line.split(",", 1)[0]
            if path.endswith(".py"):
                owner[os.path.normpath(path)] = name
    return owner


def _fingerprint(root: Path) -> str:
    names = sorted(p.name for p in root.glob("*.dist-info"))
    key = json.dumps([_VERSION, SEED, MAX_CHARS, MIN_DOC_WORDS, MIN_QUERY_WORDS, MAX_QUERY_WORDS,
                      sys.version_info[:2], str(root), names])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _norm(text: str) -> str:
    return " ".join(_NORM.sub(" ", text.lower()).split())


def _signature(node: ast.AST) -> str:
    if isinstance(node, ast.ClassDef):
        return ""
    args = node.args  # type: ignore[attr-defined]
    names = [a.arg for a in args.posonlyargs + args.args if a.arg not in ("self", "cls")]
    if args.vararg:
        names.append("*" + args.vararg.arg)
    names += [a.arg for a in args.kwonlyargs]
    if args.kwarg:
        names.append("**" + args.kwarg.arg)
    return "(" + ", ".join(names) + ")"


def _split(doc: str) -> tuple[str, str] | None:
    """``(summary line, body)`` for a docstring laid out as summary / blank line / body."""
    lines = doc.strip().splitlines()
    if len(lines) < 3 or lines[1].strip():
        return None
    summary = " ".join(lines[0].split())
    body = "\n".join(lines[2:]).strip()
    return (summary, body) if summary and body else None


def _clean_body(summary: str, body: str) -> str:
    body = body.replace(summary, " ")  # held out: the query never appears in its document
    body = " ".join(body.split())
    if len(body) > MAX_CHARS:
        body = body[:MAX_CHARS].rsplit(" ", 1)[0]
    return body


def _pairs_in_file(path: Path, module: str, package: str):
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError, RecursionError):
        return
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        parent, prefix = stack.pop(0)
        for node in ast.iter_child_nodes(parent):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            qualname = f"{prefix}{node.name}"
            stack.append((node, qualname + "."))
            if node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node, clean=True)
            split = _split(doc) if doc else None
            if split is None:
                continue
            summary, body = split
            words = len(summary.split())
            if not (MIN_QUERY_WORDS <= words <= MAX_QUERY_WORDS) or _BOILERPLATE.match(summary):
                continue
            body = _clean_body(summary, body)
            if len(body.split()) < MIN_DOC_WORDS:
                continue
            document = f"{qualname}{_signature(node)}: {body}"
            yield Pair(f"{package}:{module}:{qualname}", package, summary, document)


def build(root: Path | None = None) -> tuple[list[Pair], dict]:
    """Walk ``root`` (site-packages) and return the shuffled, de-duplicated pairs and build stats."""
    root = root or site_packages()
    owner = _distributions(root)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith((".dist-info", ".egg-info"))
                             and not d.startswith("test"))
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith("test_") and not name.endswith("_test.py"):
                files.append(Path(dirpath) / name)
    files.sort()
    seen_q: set[str] = set()
    seen_d: set[str] = set()
    pairs: list[Pair] = []
    candidates = dups = 0
    for path in files:
        rel = os.path.normpath(path.relative_to(root))
        package = owner.get(rel) or rel.split(os.sep, 1)[0].removesuffix(".py")
        module = rel.removesuffix(".py").replace(os.sep, ".").removesuffix(".__init__")
        for pair in _pairs_in_file(path, module, package):
            candidates += 1
            nq, nd = _norm(pair.query), _norm(pair.document.split(": ", 1)[1])
            if nq in seen_q or nd in seen_d:
                dups += 1
                continue
            seen_q.add(nq)
            seen_d.add(nd)
            pairs.append(pair)
    random.Random(SEED).shuffle(pairs)
    stats = {"files": len(files), "candidates": candidates, "duplicates_dropped": dups, "pairs": len(pairs),
             "packages": len({p.package for p in pairs}), "site_packages": str(root), "seed": SEED}
    return pairs, stats


def load(root: Path | None = None, cache_dir: Path = CACHE_DIR) -> tuple[list[Pair], dict]:
    """:func:`build`, cached under ``cache_dir`` (keyed on the installed distributions)."""
    root = root or site_packages()
    path = cache_dir / f"corpus-{_fingerprint(root)}.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Pair(**p) for p in data["pairs"]], data["stats"]
    pairs, stats = build(root)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"stats": stats, "pairs": [asdict(p) for p in pairs]}), encoding="utf-8")
    os.replace(tmp, path)
    return pairs, stats


def main() -> int:
    import time

    t0 = time.perf_counter()
    pairs, stats = load()
    print(f"{stats['pairs']} pairs from {stats['packages']} packages ({stats['files']} files, "
          f"{stats['candidates']} candidates, {stats['duplicates_dropped']} duplicates dropped) "
          f"in {time.perf_counter() - t0:.1f} s")
    for p in pairs[:3]:
        print(f"\n[{p.id}]\n  Q: {p.query}\n  D: {p.document[:300]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
