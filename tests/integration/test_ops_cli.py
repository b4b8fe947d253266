"""The operations commands end to end against the local test Hub (``modelcache.ops.cli.operations``).

export/import (also hostile bundles), prune/pin/unpin, doctor, status, outdated, embed,
config show, any-file pulls, and the shell recipes of docs/operations.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelcache.ops.cli.common import app
from tests.support.fault_proxy import FaultProxy
from tests.support.hub import TINY_REPO, HubRepo, LocalHub, files_from_dir
from tests.support.shell import run_recipe_script

ROOT = Path(__file__).resolve().parents[2]
DEAD_ENDPOINT = "http://127.0.0.1:9"  # discard port: nothing listens


def run(*args: str, code: int | None = 0) -> dict | list:
    """Invoke the CLI in-process with --json; check the exit code; return the parsed output."""
    result = CliRunner().invoke(app, [*args, "--json"])
    if code is not None:
        assert result.exit_code == code, f"{args} -> {result.exit_code}\n{result.output}\n{result.exception!r}"
    return json.loads(result.stdout)




def use_cache(monkeypatch: pytest.MonkeyPatch, path: Path) -> Path:
    monkeypatch.setenv("MODELCACHE_CACHE_DIR", str(path))
    return path


def repo_dirs(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("models--*")) if cache.exists() else []


def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    config = tmp_path / "modelcache.yaml"
    config.write_text(text)
    monkeypatch.setenv("MODELCACHE_CONFIG", str(config))
    return config


def new_repo(hub: LocalHub, name: str, files: dict) -> HubRepo:
    """A repo of this test's own (the session Hub's standard repos are shared: never mutate them)."""
    repo = HubRepo(hub.mirrors_dir, f"ops-test/{name}-{os.getpid()}-{time.monotonic_ns()}")
    repo.commit(files, "first")
    return repo


# -- export / import ------------------------------------------------------------------------
def test_export_then_import_into_an_empty_cache_with_no_network(
        online: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = use_cache(monkeypatch, tmp_path / "source")
    pulled = run("pull", TINY_REPO)
    bundle = tmp_path / "tiny.tar.gz"
    exported = run("export", TINY_REPO, "-o", str(bundle))
    assert exported["commit"] == pulled["commit"] and bundle.is_file()
    with tarfile.open(bundle) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert manifest["repo_id"] == TINY_REPO and manifest["commit"] == pulled["commit"]
    assert manifest["spec"]["repo_id"] == TINY_REPO and set(manifest["files"]) == set(pulled["files"])
    hub_files = online.repos[TINY_REPO].files_at("main")
    for path, info in manifest["files"].items():  # sha256 for every file, LFS or not
        assert info["sha256"] == hub_files[path].sha256 and info["size"] == hub_files[path].size

    # an empty cache on a machine with no network: offline, and the only endpoint is down
    target = use_cache(monkeypatch, tmp_path / "airgapped")
    with FaultProxy(online.endpoint) as proxy:
        proxy.down()
        monkeypatch.setenv("MODELCACHE_ENDPOINTS", proxy.endpoint)
        monkeypatch.setenv("MODELCACHE_OFFLINE", "1")
        imported = run("import", str(bundle))
        assert imported["commit"] == pulled["commit"] and imported["functional"]["dims"] == 32
        verified = run("verify", TINY_REPO, "--full")
        assert verified["ok"] and verified["models"][0]["functional"]["dims"] == 32
        vec = run("embed", "hello offline world", "--model", TINY_REPO)
        assert vec["dims"] == 32 and abs(vec["norm"] - 1) < 1e-4
        again = run("import", str(bundle), "--no-check")  # idempotent: nothing new to install
        assert again["commit"] == pulled["commit"] and again["already_cached"] == again["files"]
        assert proxy.count() == 0  # not one request
    # byte-for-byte the layout a pull makes: same blobs, same snapshot links, same ref
    for rel in ("refs/main", *(f"snapshots/{pulled['commit']}/{p}" for p in pulled["files"])):
        a, b = source / "models--tiny-org--tiny-st" / rel, target / "models--tiny-org--tiny-st" / rel
        assert a.read_bytes() == b.read_bytes()
        if a.is_symlink():
            assert os.readlink(a) == os.readlink(b)
    info = run("info", TINY_REPO)
    assert info["locked"] and info["meta"]["source_endpoint"] == "bundle:tiny.tar.gz"


def test_export_needs_a_cached_model(online: LocalHub) -> None:
    out = run("export", TINY_REPO, "-o", "never.tar.gz", code=1)
    assert out["error"] == "OfflineError" and "not in the cache" in out["message"]


# -- hostile bundles ------------------------------------------------------------------------
WEIGHTS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "  # a valid (empty) safetensors file
CONFIG = b'{"hidden_size": 4}'


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def manifest_for(files: dict[str, bytes]) -> dict:
    return {"format": "modelcache-bundle", "version": 1, "repo_id": "evil-org/evil-model", "revision": "main",
            "commit": "e" * 40, "pinned": True, "spec": {"name": "evil-org/evil-model"},
            "files": {p: {"size": len(d), "sha256": sha256(d),
                          "blob": sha256(d) if p.endswith(".safetensors") else git_sha1(d)}
                      for p, d in files.items()}}


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_bundle(path: Path, manifest: dict, members: list[tuple]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "manifest.json", json.dumps(manifest).encode())
        for member in members:
            add(tar, *member)
    return path


GOOD = {"model.safetensors": WEIGHTS, "config.json": CONFIG}


def hostile(case: str, tmp_path: Path) -> tuple[dict, list[tuple]]:
    manifest = manifest_for(GOOD)
    members = [(f"files/{p}", d) for p, d in GOOD.items()]
    if case == "dotdot":
        members.append(("files/../../escaped.txt", b"pwned"))
    elif case == "dotdot-in-manifest":
        manifest["files"]["../../escaped.txt"] = {"size": 5, "sha256": sha256(b"pwned"), "blob": git_sha1(b"pwned")}
        members.append(("files/../../escaped.txt", b"pwned"))
    elif case == "absolute":
        members.append((str(tmp_path / "escaped.txt"), b"pwned"))
    elif case == "symlink":
        members[1] = ("files/config.json", b"", tarfile.SYMTYPE, "/etc/passwd")
    elif case == "hardlink":
        members[1] = ("files/config.json", b"", tarfile.LNKTYPE, "manifest.json")
    elif case == "device":
        members.append(("files/dev", b"", tarfile.CHRTYPE))
    elif case == "fifo":
        members.append(("files/fifo", b"", tarfile.FIFOTYPE))
    elif case == "hash-mismatch":
        members[1] = ("files/config.json", CONFIG.replace(b"4", b"5"))  # same size, other bytes
    elif case == "size-mismatch":
        members[1] = ("files/config.json", CONFIG + b" ")
    elif case == "unlisted-file":
        members.append(("files/extra.py", b"import os"))
    elif case == "missing-file":
        members.pop()
    elif case == "bad-blob-name":
        manifest["files"]["config.json"]["blob"] = "../../../../x" + "0" * 27
    elif case == "bad-repo-id":
        manifest["repo_id"] = "../../etc"
    return manifest, members


@pytest.mark.parametrize("case", ["dotdot", "dotdot-in-manifest", "absolute", "symlink", "hardlink", "device", "fifo",
                                  "hash-mismatch", "size-mismatch", "unlisted-file", "missing-file", "bad-blob-name",
                                  "bad-repo-id"])
def test_hostile_bundle_is_refused_and_nothing_becomes_visible(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = use_cache(monkeypatch, tmp_path / "cache")
    manifest, members = hostile(case, tmp_path)
    bundle = make_bundle(tmp_path / f"{case}.tar.gz", manifest, members)
    out = run("import", str(bundle), "--no-check", code=1)
    assert out["ok"] is False
    assert out["error"] == ("BundleIntegrityError" if case == "hash-mismatch" else "UnsafeFileError"), out
    assert "Nothing was installed" in out["message"] or out["error"] == "UnsafeFileError"
    assert repo_dirs(cache) == []
    staging = cache / ".locks" / "modelcache" / "staging"
    assert not staging.exists() or not any(staging.iterdir())
    assert not (cache / ".locks" / "modelcache" / "lock.json").exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_handmade_good_bundle_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hostile cases above differ from this one by one entry each."""
    cache = use_cache(monkeypatch, tmp_path / "cache")
    manifest, members = hostile("none", tmp_path)
    out = run("import", str(make_bundle(tmp_path / "ok.tar.gz", manifest, members)), "--no-check")
    assert out["commit"] == "e" * 40 and out["files"] == ["config.json", "model.safetensors"]
    snap = cache / "models--evil-org--evil-model" / "snapshots" / ("e" * 40)
    assert (snap / "config.json").read_bytes() == CONFIG
    assert os.readlink(snap / "config.json") == f"../../blobs/{git_sha1(CONFIG)}"
    assert run("verify", "evil-org/evil-model")["ok"]


def test_bundle_that_contradicts_the_registry_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle claiming to be all-MiniLM-L6-v2 must carry the registry's known weights."""
    cache = use_cache(monkeypatch, tmp_path / "cache")
    manifest, members = hostile("none", tmp_path)
    manifest["repo_id"] = "sentence-transformers/all-MiniLM-L6-v2"
    out = run("import", str(make_bundle(tmp_path / "fake.tar.gz", manifest, members)), "--no-check", code=1)
    assert out["error"] == "BundleIntegrityError" and "registry" in out["message"]
    assert repo_dirs(cache) == []


# -- any-file pulls -------------------------------------------------------------------------
def test_any_file_pull_verify_export_import(online: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = b"GGUF" + os.urandom(3 * 1024 * 1024)
    repo = new_repo(online, "gguf", {"model.Q4_K_M.gguf": gguf, "model.Q8_0.gguf": b"GGUF" + b"8" * 1000,
                                     "README.md": b"# a gguf repo\n"})
    use_cache(monkeypatch, tmp_path / "a")
    pulled = run("pull", repo.repo_id, "--include", "*.Q4_K_M.gguf")
    assert pulled["files"] == ["model.Q4_K_M.gguf"]
    assert run("verify", repo.repo_id)["ok"]
    bundle = tmp_path / "gguf.tar.gz"
    run("export", repo.repo_id, "-o", str(bundle))
    cache = use_cache(monkeypatch, tmp_path / "b")
    monkeypatch.setenv("MODELCACHE_OFFLINE", "1")
    imported = run("import", str(bundle))
    assert imported["functional"] is None and imported["locked"] is False  # not a model: nothing to embed
    snap = cache / f"models--{repo.repo_id.replace('/', '--')}" / "snapshots" / pulled["commit"]
    assert (snap / "model.Q4_K_M.gguf").read_bytes() == gguf
    assert os.readlink(snap / "model.Q4_K_M.gguf").endswith(sha256(gguf))


# -- prune / pin ----------------------------------------------------------------------------
def test_prune_pin_unpin(online: LocalHub, tiny_model_dir: Path, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    cache = use_cache(monkeypatch, tmp_path / "cache")
    other = new_repo(online, "other", files_from_dir(tiny_model_dir))
    run("pull", TINY_REPO)
    run("pull", other.repo_id)
    assert run("pin", TINY_REPO) == {"ok": True, "repo_id": TINY_REPO, "pinned": True}
    q = cache / "models--tiny-org--tiny-st" / "quarantine" / "bad-config.json"
    q.parent.mkdir()
    q.write_text("{}")

    plan = run("prune", "--dry-run", "--max-models", "1")
    assert [e["repo_id"] for e in plan["evict"]] == [other.repo_id] and plan["dry_run"]
    assert [x["path"] for x in plan["quarantined"]] == [str(q)] and q.exists()
    assert len(repo_dirs(cache)) == 2

    done = run("prune", "--max-models", "1", "--yes")
    assert done["applied"]["evicted"] == [other.repo_id] and not q.exists()
    assert repo_dirs(cache) == ["models--tiny-org--tiny-st"]
    assert run("verify", TINY_REPO)["ok"]

    # everything left is pinned: over budget is an error with the numbers
    out = run("prune", "--max-size-gb", "0.000001", "--yes", code=1)
    assert out["error"] == "BudgetExceededError" and "pinned: tiny-org/tiny-st" in out["message"]
    assert "bytes cached" in out["message"] and "max_size_gb 1e-06" in out["message"]
    run("unpin", TINY_REPO)
    assert run("prune", "--max-size-gb", "0.000001", "--yes")["applied"]["evicted"] == [TINY_REPO]
    assert repo_dirs(cache) == []
    assert run("pin", TINY_REPO, code=1)["error"] == "FileNotFoundError"


def _budget_is_wired() -> bool:
    return "ensure_room" in (ROOT / "modelcache" / "hub" / "pull.py").read_text()


@pytest.mark.skipif(not _budget_is_wired(), reason="download.py does not call budget.ensure_room yet")
def test_pull_over_budget_evicts_first_or_fails_with_the_numbers(
        online: LocalHub, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = use_cache(monkeypatch, tmp_path / "cache")
    first, second, third = (new_repo(online, f"budget{i}", files_from_dir(tiny_model_dir)) for i in range(3))
    write_config(tmp_path, monkeypatch, "model_cache: {max_models: 1, cleanup_policy: lru}\n")
    run("pull", first.repo_id)
    run("pull", second.repo_id)  # evicts the first before downloading
    assert repo_dirs(cache) == [f"models--{second.repo_id.replace('/', '--')}"]
    run("pin", second.repo_id)
    out = run("pull", third.repo_id, code=1)
    assert out["error"] == "BudgetExceededError" and "2 models" not in out["message"]
    assert "1 models (max_models 1)" in out["message"] and f"pinned: {second.repo_id}" in out["message"]
    assert repo_dirs(cache) == [f"models--{second.repo_id.replace('/', '--')}"]
    write_config(tmp_path, monkeypatch, "model_cache: {max_models: 1, cleanup_policy: manual}\n")
    run("unpin", second.repo_id)
    out = run("pull", third.repo_id, code=1)
    assert "manual" in out["message"]


def test_prune_rejects_an_unknown_policy() -> None:
    out = run("prune", "--policy", "random", code=1)
    assert "allowed: lru, fifo, manual" in out["message"]


# -- doctor / status ------------------------------------------------------------------------
def tiny_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str = "") -> Path:
    return write_config(tmp_path, monkeypatch,
                        f"model: {TINY_REPO}\nfallback: {{bundled: false, keyword: true}}\n{extra}")


def statuses(report: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def test_doctor_ok_degraded_failed(online: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = use_cache(monkeypatch, tmp_path / "cache")
    tiny_config(tmp_path, monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    run("pull", TINY_REPO)
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    assert "hf_secret_value_123" not in result.output
    report = json.loads(result.stdout)
    assert report["status"] == "ok" and report["exit_code"] == 0
    checks = statuses(report)
    assert checks[f"endpoint:{online.endpoint}"] == "ok" and checks[f"integrity:{TINY_REPO}"] == "ok"
    assert checks["load"] == "ok" and checks["disk"] == "ok" and checks["models"] == "ok"
    token = next(c for c in report["checks"] if c["name"] == "token")
    assert token["data"] == {"present": True, "source": "environment (HF_TOKEN)"}

    # one dead mirror: degraded (exit 2), the model still serves
    monkeypatch.setenv("MODELCACHE_ENDPOINTS", f"{DEAD_ENDPOINT},{online.endpoint}")
    report = run("doctor", "--timeout", "1", code=2)
    assert statuses(report)[f"endpoint:{DEAD_ENDPOINT}"] == "degraded" and report["status"] == "degraded"
    assert any(r.startswith(f"endpoint:{DEAD_ENDPOINT}: unreachable") for r in report["reasons"])

    # corrupt weights: failed (exit 1), and the bad file is quarantined
    monkeypatch.setenv("MODELCACHE_ENDPOINTS", online.endpoint)
    blob = next(p for p in (cache / "models--tiny-org--tiny-st" / "blobs").iterdir() if len(p.name) == 64)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    report = run("doctor", code=1)
    assert statuses(report)[f"integrity:{TINY_REPO}"] == "failed" and report["exit_code"] == 1
    assert any("sha256" in r for r in report["reasons"])


def test_doctor_human_output_and_offline(online: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_cache(monkeypatch, tmp_path / "cache")
    tiny_config(tmp_path, monkeypatch)
    run("pull", TINY_REPO)
    monkeypatch.setenv("MODELCACHE_OFFLINE", "1")
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "offline mode" in result.output and "overall: ok" in result.output


def test_status_follows_the_chain(online: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_cache(monkeypatch, tmp_path / "cache")
    tiny_config(tmp_path, monkeypatch)
    out = run("status", code=2)  # not cached yet: keyword mode would serve
    assert out["status"] == "degraded" and out["active"] == "keyword"
    assert out["tiers"][0]["model"] == TINY_REPO and "not in the cache" in out["tiers"][0]["reason"]
    assert out["active_tier"] == "keyword" and [t["tier"] for t in out["tiers"]] == ["preferred", "bundled", "keyword"]
    run("pull", TINY_REPO)
    out = run("status")
    assert out["status"] == "ok" and out["active"] == TINY_REPO and out["tiers"][0]["available"]
    live = run("status", "--live")["service"]
    assert live["active_tier"] == "preferred" and live["degraded"] is False
    write_config(tmp_path, monkeypatch, f"model: {TINY_REPO}\nfallback: {{strategy: strict, bundled: false}}\n")
    run("rm", TINY_REPO)
    out = run("status", code=1)
    assert out["status"] == "failed" and "strict" in " ".join(out["reasons"])


def test_status_with_the_bundled_model_is_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """all-MiniLM-L6-v2 not cached, but the bundled copy is the same embedding space."""
    use_cache(monkeypatch, tmp_path / "cache")
    monkeypatch.setenv("MODELCACHE_OFFLINE", "1")
    out = run("status")
    assert out["active"] == "bundled-mini" and out["status"] == "ok"


# -- outdated -------------------------------------------------------------------------------
def test_outdated_reports_and_upgrade_records_the_old_fingerprint(
        online: LocalHub, tiny_model_dir: Path, tiny_model_dir_v2: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from modelcache.ops.cli.common import _manager

    use_cache(monkeypatch, tmp_path / "cache")
    repo = new_repo(online, "moving", files_from_dir(tiny_model_dir))
    first = run("pull", repo.repo_id)["commit"]
    out = run("outdated")
    assert out["outdated"] == [] and out["models"][0]["remote_commit"] == first
    assert run("outdated", "--check")["ok"]

    second = repo.commit(files_from_dir(tiny_model_dir_v2), "new weights")
    out = run("outdated", "--check", code=1)
    assert [(e["repo_id"], e["locked_commit"], e["remote_commit"]) for e in out["outdated"]] == [
        (repo.repo_id, first, second)]
    assert run("info", repo.repo_id)["commit"] == first  # nothing upgraded silently
    assert run("pull", repo.repo_id)["commit"] == first  # a plain pull keeps the pin

    mgr = _manager()
    spec = mgr.spec(repo.repo_id)
    result = mgr.pull(spec, upgrade=True)  # records the old commit and fingerprint itself
    assert result.commit == second and run("info", repo.repo_id)["commit"] == second
    history = mgr.store.read_meta(repo.repo_id)["previous_fingerprints"]
    assert [(h["commit"], h["replaced_by"]) for h in history] == [(first, second)]
    assert history[0]["fingerprint"].startswith("mc1-") and history[0]["fingerprint"] != run(
        "info", repo.repo_id)["fingerprint"]
    assert run("outdated")["outdated"] == []


def test_cli_pull_upgrade_records_the_old_fingerprint(
        online: LocalHub, tiny_model_dir: Path, tiny_model_dir_v2: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    use_cache(monkeypatch, tmp_path / "cache")
    repo = new_repo(online, "moving-cli", files_from_dir(tiny_model_dir))
    first = run("pull", repo.repo_id)["commit"]
    second = repo.commit(files_from_dir(tiny_model_dir_v2), "new weights")
    assert run("pull", repo.repo_id, "--upgrade")["commit"] == second
    history = run("info", repo.repo_id)["meta"]["previous_fingerprints"]
    assert history[0]["commit"] == first and history[0]["replaced_by"] == second


def test_outdated_offline_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCACHE_OFFLINE", "1")
    assert run("outdated", code=1)["error"] == "OfflineError"


# -- embed / config -------------------------------------------------------------------------
def test_embed_pulls_on_first_use_and_prompts(online: LocalHub, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    use_cache(monkeypatch, tmp_path / "cache")
    out = run("embed", "Hello world", "--model", TINY_REPO)
    assert out["dims"] == 32 and len(out["vector"]) == 32 and out["fingerprint"].startswith("mc1-")
    result = CliRunner().invoke(app, ["embed", "Hello world", "--model", TINY_REPO])
    assert result.exit_code == 0 and "32 dims" in result.output
    assert run("embed", "x", "--kind", "passage", code=1)["message"].endswith("allowed: query, document")


def test_config_show_redacts_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, monkeypatch, "profile: prod\ntoken: hf_from_the_file\nmodel_cache: {max_models: 3}\n")
    result = CliRunner().invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0 and "hf_from_the_file" not in result.output
    data = json.loads(result.stdout)
    assert data["token"] == "***" and data["profile"] == "prod" and data["fallback"]["strategy"] == "strict"
    assert data["model_cache"]["max_models"] == 3
    assert data["model_cache"]["directory"] == os.environ["MODELCACHE_CACHE_DIR"]
    human = CliRunner().invoke(app, ["config", "show"])
    assert human.exit_code == 0 and "hf_from_the_file" not in human.output and "***" in human.output
    write_config(tmp_path, monkeypatch, "model_cache: {cleanup_policy: random}\n")
    out = run("config", "show", code=1)
    assert out["error"] == "ConfigError" and "model_cache.cleanup_policy" in out["message"]


# -- the shell recipes of docs/operations.md ------------------------------------------------
def doc_blocks() -> dict[str, str]:
    """``sh`` blocks of the docs page whose first line is ``# recipe: NAME``."""
    text = (ROOT / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```sh\n(# recipe: ([\w-]+)\n.*?)```", text, flags=re.S)
    return {name: body for body, name in blocks}


def run_recipe(name: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return run_recipe_script(name, doc_blocks()[name], env, cwd)


@pytest.mark.slow
def test_docs_recipes_run_against_the_local_hub(online: LocalHub, tmp_path: Path) -> None:
    names = ("bake", "airgap-import", "shared-volume", "read-only", "token-secret", "mirror")
    assert set(doc_blocks()) == set(names)
    models = tmp_path / "models"  # stands for the image's /models
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    (secrets / "hf_token").write_text("hf_build_secret_456")
    env = {"MODELS": str(models), "BUILD_CACHE": str(tmp_path / "buildkit-cache"), "BUNDLES": str(tmp_path / "bundles"),
           "AIRGAP_MODELS": str(tmp_path / "airgap"), "MODEL": TINY_REPO, "HF_ENDPOINT": online.endpoint,
           "MIRROR": online.endpoint, "SECRETS": str(secrets), "MODELCACHE_CACHE_DIR": "", "MODELCACHE_ENDPOINTS": ""}
    out = {"bake": run_recipe("bake", env, tmp_path)}
    snapshot = models / "models--tiny-org--tiny-st"
    assert (snapshot / "refs" / "main").is_file() and not (tmp_path / "bundles" / "model.tar.gz").exists()

    out["airgap-import"] = run_recipe("airgap-import", env, tmp_path)
    assert (tmp_path / "airgap" / "models--tiny-org--tiny-st").is_dir() and "32 dims" in out["airgap-import"].stdout

    shared = tmp_path / "shared"
    out["shared-volume"] = run_recipe("shared-volume", env | {"MODELS": str(shared)}, tmp_path)
    pulls = [json.loads((tmp_path / f"shared.pull-{i}.json").read_text()) for i in (1, 2)]
    assert sorted(bool(p["downloaded"]) for p in pulls) == [False, True]  # downloaded once

    meta = snapshot / "modelcache.json"
    before = (meta.read_bytes(), sorted(str(p) for p in models.rglob("*")))
    out["read-only"] = run_recipe("read-only", env, tmp_path)
    assert (meta.read_bytes(), sorted(str(p) for p in models.rglob("*"))) == before  # nothing written

    out["token-secret"] = run_recipe("token-secret", env, tmp_path)
    out["mirror"] = run_recipe("mirror", env, tmp_path)
    dry = json.loads(out["mirror"].stdout[:out["mirror"].stdout.index("\n}") + 2])
    assert dry["endpoint"] == online.endpoint and dry["downloaded"] == [] and dry["dry_run"]
    assert "current" in out["mirror"].stdout
    assert "hf_build_secret_456" not in "".join(o.stdout + o.stderr for o in out.values())
