"""GGUF next to the embedding model (issue 15): ``pull --include`` is pinned like a model (a re-pull makes
no request, offline too), and the ``models/`` recipes of docs/models-layout.md run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelcache.ops.cli.common import app
from tests.support.fault_proxy import FaultProxy
from tests.support.hub import TINY_REPO, HubRepo, LocalHub
from tests.support.shell import run_recipe_script

ROOT = Path(__file__).resolve().parents[2]
GGUF_Q4 = b"GGUF" + os.urandom(2 * 1024 * 1024)
GGUF_Q8 = b"GGUF" + b"8" * 4096


def run(*args: str, code: int | None = 0) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"])
    if code is not None:
        assert result.exit_code == code, f"{args} -> {result.exit_code}\n{result.output}\n{result.exception!r}"
    return json.loads(result.stdout)


def gguf_repo(hub: LocalHub) -> HubRepo:
    repo = HubRepo(hub.mirrors_dir, f"llm-org/tiny-llm-GGUF-{os.getpid()}-{time.monotonic_ns()}")
    repo.commit({"tiny-llm.Q4_K_M.gguf": GGUF_Q4, "tiny-llm.Q8_0.gguf": GGUF_Q8, "README.md": b"# GGUF\n"},
                "two quantisations")
    return repo


def test_an_include_pull_is_pinned_and_a_repull_makes_no_request(
        proxy: FaultProxy, hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCACHE_ENDPOINTS", proxy.endpoint)
    monkeypatch.setenv("MODELCACHE_CACHE_DIR", str(tmp_path / "cache"))
    repo = gguf_repo(hub)
    first = run("pull", repo.repo_id, "--include", "*.Q4_K_M.gguf")
    assert first["files"] == ["tiny-llm.Q4_K_M.gguf"] and first["network"]
    info = run("info", repo.repo_id)
    assert info["locked"] and info["commit"] == repo.head()
    assert info["files"]["tiny-llm.Q4_K_M.gguf"]["size"] == len(GGUF_Q4)
    assert info["files"]["tiny-llm.Q4_K_M.gguf"]["sha256"] == repo.files_at("main")["tiny-llm.Q4_K_M.gguf"].sha256

    proxy.reset()
    again = run("pull", repo.repo_id, "--include", "*.Q4_K_M.gguf")
    assert again["network"] is False and again["commit"] == first["commit"] and proxy.count() == 0
    monkeypatch.setenv("MODELCACHE_OFFLINE", "1")
    assert run("pull", repo.repo_id, "--include", "*.Q4_K_M.gguf")["network"] is False
    monkeypatch.delenv("MODELCACHE_OFFLINE")

    # the Hub moves on: the pin holds; another pattern is added to the same entry at the pinned commit
    pinned = repo.head()
    repo.commit({"tiny-llm.Q4_K_M.gguf": b"GGUF" + b"new" * 1000}, "requantised")
    assert run("pull", repo.repo_id, "--include", "*.Q4_K_M.gguf")["commit"] == pinned
    both = run("pull", repo.repo_id, "--include", "*.Q8_0.gguf")
    assert both["commit"] == pinned and both["files"] == ["tiny-llm.Q8_0.gguf"]
    proxy.reset()
    assert run("pull", repo.repo_id, "--include", "*.gguf")["network"]  # a new pattern asks the Hub once
    proxy.reset()
    for pattern in ("*.Q4_K_M.gguf", "*.Q8_0.gguf", "*.gguf"):
        assert run("pull", repo.repo_id, "--include", pattern)["network"] is False
    assert proxy.count() == 0
    assert run("verify", repo.repo_id)["ok"]
    locked = json.loads((tmp_path / "cache" / ".locks" / "modelcache" / "lock.json").read_text())
    entry = locked["pins"][f"{repo.repo_id}@main"]
    assert entry["includes"] == ["*.Q4_K_M.gguf", "*.Q8_0.gguf", "*.gguf"] and entry["model"] is False

    # --upgrade moves the pin to the new commit
    upgraded = run("pull", repo.repo_id, "--include", "*.Q4_K_M.gguf", "--upgrade")
    assert upgraded["commit"] == repo.head() != pinned

    # a pinned GGUF pull is no model: the model's own pull of the repo is not answered by it
    tiny = run("pull", TINY_REPO)
    assert tiny["network"] and "model.safetensors" in tiny["files"]


def recipes() -> dict[str, str]:
    text = (ROOT / "docs" / "models-layout.md").read_text()
    return {name: body for body, name in re.findall(r"```sh\n(# recipe: ([\w-]+)\n.*?)```", text, flags=re.S)}


def run_recipe(name: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return run_recipe_script(name, recipes()[name], env, cwd)


def tree(root: Path) -> list[tuple[str, bytes]]:
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
                  for p in root.rglob("*"))


def test_the_models_layout_recipes_run(hub: LocalHub, tmp_path: Path) -> None:
    assert set(recipes()) == {"models-build", "models-prod"}
    repo = gguf_repo(hub)
    models = tmp_path / "models"
    env = {"MODELS": str(models), "EMBED_MODEL": TINY_REPO, "LLM_REPO": repo.repo_id,
           "LLM_FILE": "tiny-llm.Q4_K_M.gguf", "MODELCACHE_ENDPOINTS": hub.endpoint}
    run_recipe("models-build", env, tmp_path)
    link = models / "llm.gguf"
    assert link.is_symlink() and not os.readlink(link).startswith("/") and link.read_bytes() == GGUF_Q4
    lock = json.loads((models / "modelcache.lock.json").read_text())
    assert {f"{TINY_REPO}@main", f"{repo.repo_id}@main"} <= set(lock["pins"])
    assert lock["pins"][f"{repo.repo_id}@main"]["files"]["tiny-llm.Q4_K_M.gguf"]["size"] == len(GGUF_Q4)

    # production: another mount point, no endpoint that answers, read-only: nothing is written
    mounted = tmp_path / "mnt" / "models"
    mounted.parent.mkdir()
    models.rename(mounted)
    before = tree(mounted)
    out = run_recipe("models-prod", env | {"MODELS": str(mounted), "MODELCACHE_ENDPOINTS": "http://127.0.0.1:9"},
                     tmp_path)
    assert "GGUF" in out.stdout and "32 dims" in out.stdout
    assert tree(mounted) == before
