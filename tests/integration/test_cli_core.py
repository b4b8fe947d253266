"""The core CLI commands end to end: list, pull --dry-run, pull, info, install, rm (with --json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.hub import TINY_REPO


def mc(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelcache", *args], capture_output=True, text=True,
                          env=os.environ | (env or {}), timeout=300)


def test_list_pull_info_rm(hub):
    out = mc("list", "--json")
    assert out.returncode == 0
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["bge-m3"]["dims"] == 1024 and not rows["all-MiniLM-L6-v2"]["cached"]

    plan = json.loads(mc("pull", TINY_REPO, "--endpoint", hub.endpoint, "--dry-run", "--json").stdout)
    assert plan["dry_run"] and "model.safetensors" in plan["downloaded"] and plan["bytes_downloaded"] > 0
    cache = os.environ["MODELCACHE_CACHE_DIR"]
    assert not os.path.exists(os.path.join(cache, "models--tiny-org--tiny-st", "snapshots"))

    pulled = json.loads(mc("pull", TINY_REPO, "--endpoint", hub.endpoint, "--json").stdout)
    assert pulled["ok"] and pulled["commit"] == hub.repos[TINY_REPO].resolve("main")
    info = json.loads(mc("info", TINY_REPO, "--json").stdout)
    assert info["cached"] and info["locked"] and info["fingerprint"].startswith("mc1-")
    assert mc("verify", "--json").returncode == 0

    removed = mc("rm", TINY_REPO, "--json")
    assert json.loads(removed.stdout)["removed"] is True
    assert not json.loads(mc("info", TINY_REPO, "--json").stdout)["cached"]


def test_pull_failure_exits_nonzero_with_a_clear_message():
    out = mc("pull", "no-such-org/no-such-model", "--endpoint", "http://127.0.0.1:9", "--json",
             env={"MODELCACHE_ENDPOINTS": "http://127.0.0.1:9"})
    assert out.returncode == 1
    err = json.loads(out.stdout)
    assert err["error"] == "DownloadError" and "127.0.0.1:9" in err["message"]
    unknown = mc("info", "all-MiniLM-L6")
    assert unknown.returncode == 1 and "Did you mean" in unknown.stderr


def test_install_from_dir_offline(tiny_model_dir):
    out = mc("install", "tiny-local", "--from", str(tiny_model_dir), "--json", env={"HF_HUB_OFFLINE": "1"})
    # 'tiny-local' is not a registry name nor a repo id: the error says how to register
    assert out.returncode == 1 and "register" in out.stdout
    out = mc("install", "local-org/tiny", "--from", str(tiny_model_dir), "--json", env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(out.stdout)
    assert "model.safetensors" in data["files"]
    assert mc("verify", "local-org/tiny", "--full", "--json", env={"HF_HUB_OFFLINE": "1"}).returncode == 0
