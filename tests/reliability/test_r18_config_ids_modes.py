"""R18: hostile or odd configuration, repo ids that would share a cache folder, file modes under a
permissive umask, tokens from every documented variable, honest install errors, and a model that
can never load is never locked as good."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelcache.cache.store import repo_folder
from modelcache.errors import ConfigError, IntegrityError, UnsafeFileError
from modelcache.manager import ModelManager
from modelcache.registry import ModelSpec, Registry, get_registry
from modelcache.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelcache", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, cwd=ROOT)


# -- configuration -------------------------------------------------------------------------
def _bomb() -> str:
    levels = ['l0: &l0 ["x","x","x","x","x","x","x","x"]']
    levels += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 8) + "]" for i in range(1, 8)]
    return "\n".join(levels) + "\nfallback:\n  models: *l7\n"  # 8^8 = 16.7M values once expanded


@pytest.mark.parametrize("name, text, message", [
    ("deep", "a: " + "[" * 20000 + "]" * 20000, "nested deeper than"),
    ("alias bomb", _bomb(), "expands to more than"),
    ("many aliases", "x: &x 1\ny: [" + ",".join(["*x"] * 200) + "]\n", "more than 64 aliases"),
    ("huge", "# " + "x" * (2 * 1024 * 1024) + "\n", "the limit is"),
    ("bad ipv6 endpoint", 'download:\n  endpoints: ["http://[::1"]\n', "not a valid URL"),
    ("not http", 'download:\n  endpoints: ["ftp://mirror.local"]\n', "http:// or https://"),
    ("bad port", 'download:\n  endpoints: ["http://127.0.0.1:99999"]\n', "not a valid URL"),
    ("1e308 backoff", "download:\n  backoff_base: 1e308\n", "less than or equal to 60"),
    ("1e308 timeout", "download:\n  connect_timeout: 1e308\n", "less than or equal to 600"),
    ("inf", "download:\n  connect_timeout: .inf\n", "finite number"),
    ("nan", "fallback:\n  retry_preferred_after_s: .nan\n", "finite number"),
])
def test_hostile_config_is_one_clear_error_quickly(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        load_settings(path)
    assert time.perf_counter() - started < 5  # never expanded, never recursed to the limit


def test_a_bad_config_is_one_clean_line_or_json_for_every_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("download: [\n")
    for args in (["list"], ["info", "all-MiniLM-L6-v2"], ["doctor"], ["config", "show"], ["status"]):
        out = _cli(*args, env={"MODELCACHE_CONFIG": str(bad)})
        assert out.returncode != 0 and "Traceback" not in out.stderr + out.stdout, (args, out.stderr)
        assert "bad.yaml" in out.stderr and len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)
        out = _cli(*args, "--json", env={"MODELCACHE_CONFIG": str(bad)})
        assert out.returncode != 0 and "Traceback" not in out.stderr, (args, out.stderr)
        data = json.loads(out.stdout)
        assert data["ok"] is False and data["error"] == "ConfigError", (args, out.stdout)


# -- repo ids --------------------------------------------------------------------------------
@pytest.mark.parametrize("repo_id", ["a--x/y", "a/x--y", "a/..", "../etc", "a/b/c", "org/" + "n" * 97])
def test_repo_ids_the_hub_refuses_are_refused_everywhere(repo_id: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Registry([], trusted=False).register(ModelSpec(name="x", repo_id=repo_id))
    if repo_id.count("/") == 1:
        with pytest.raises((ConfigError, KeyError)):
            get_registry().get(repo_id)
    out = _cli("pull", repo_id, "--json")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert json.loads(out.stdout)["ok"] is False


def test_two_ids_can_never_share_a_cache_folder() -> None:
    assert repo_folder("org/name") == "models--org--name"
    for repo_id in ("a--x/y", "a/x--y", "a/../b"):
        with pytest.raises(UnsafeFileError, match="collide"):
            repo_folder(repo_id)


def test_a_local_directory_named_with_dashes_still_loads_as_a_custom_model(tmp_path: Path) -> None:
    model_dir = tmp_path / "my--model..v2"
    model_dir.mkdir()
    spec = get_registry().get(str(model_dir))
    assert spec.repo_id == "local/my-model.v2"
    repo_folder(spec.repo_id)  # a valid folder name


# -- tokens ----------------------------------------------------------------------------------
@pytest.mark.parametrize("variable", ["HF_TOKEN", "HF_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "MODELCACHE_TOKEN"])
def test_every_documented_token_variable_is_honoured(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "hf_secret_value")
    settings = load_settings()
    assert settings.token_value == "hf_secret_value"
    assert "hf_secret_value" not in json.dumps(settings.redacted())


def test_hf_token_wins_over_the_older_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUGGINGFACE_HUB_TOKEN", "old")
    monkeypatch.setenv("HF_HUB_TOKEN", "older")
    monkeypatch.setenv("HF_TOKEN", "new")
    assert load_settings().token_value == "new"


# -- file modes, install errors, a model that cannot load --------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_pins_and_metadata_are_never_group_or_world_writable(tiny_model_dir: Path) -> None:
    old = os.umask(0)
    try:
        mgr = ModelManager(load_settings(offline=True))
        local = mgr.install(str(tiny_model_dir), tiny_model_dir)
    finally:
        os.umask(old)
    written = [mgr.lockfile.path, mgr.store.repo_dir(local.spec.repo_id) / "modelcache.json"]
    written += list((mgr.store.repo_dir(local.spec.repo_id) / "refs").rglob("*"))
    written += list((mgr.store.repo_dir(local.spec.repo_id) / "blobs").iterdir())
    for path in written:
        if path.is_file():
            assert _mode(path) & 0o022 == 0, f"{path} is {oct(_mode(path))}"


def test_install_from_a_tampered_copy_says_nothing_was_installed(tmp_path: Path) -> None:
    spec = get_registry().get("all-MiniLM-L6-v2")
    fake = tmp_path / "fake-minilm"
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    (fake / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    mgr = ModelManager(load_settings(offline=True))
    with pytest.raises(IntegrityError) as err:
        mgr.install(spec, fake)
    assert "quarantined" not in str(err.value) and "Nothing was installed" in str(err.value)
    assert mgr.lockfile.get(spec.repo_id, spec.revision) is None


def test_a_model_that_cannot_load_is_never_locked(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    modules = json.loads((broken / "modules.json").read_text())
    modules[0]["type"] = "evil_module.RunsCodeOnLoad"  # sentence-transformers refuses to import it
    (broken / "modules.json").write_text(json.dumps(modules))
    mgr = ModelManager(load_settings(offline=True))
    spec = mgr.spec(str(broken))
    with pytest.raises(IntegrityError, match="Nothing was locked") as err:
        mgr.install(spec, broken)
    assert "functional" in str(err.value)
    assert mgr.lockfile.get(spec.repo_id, spec.revision) is None
    assert not mgr.verify(spec).ok or mgr.lockfile.entries() == []


def test_prune_removes_what_a_killed_process_left_on_this_host_at_once(tmp_path: Path) -> None:
    from modelcache.cache import budget
    from modelcache.cache.store import host_tag

    mgr = ModelManager(load_settings(offline=True))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    staging = mgr.store.state_dir / "staging"
    ours = staging / f"{child.pid}-{host_tag()}-deadbeef0000"
    foreign = staging / f"{child.pid}-0000beef-deadbeef0000"  # another host or container: its pid means nothing
    for d in (ours, foreign):
        d.mkdir(parents=True)
    found = {p["path"] for p in budget.partials(mgr.store)}
    assert str(ours) in found and str(foreign) not in found
    budget.prune(mgr)
    assert not ours.exists() and foreign.exists()


def _as_nobody(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                           "modelcache", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env, "HOME": "/nonexistent"}, cwd="/")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_permission_denied_is_a_clean_error_for_an_unprivileged_user(tiny_model_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared cache that belongs to root, used by another user: reads work, writes fail cleanly."""
    cache = tmp_path / "shared-cache"
    monkeypatch.setenv("MODELCACHE_CACHE_DIR", str(cache))
    mgr = ModelManager(load_settings(offline=True))
    source = tmp_path / "source-model"
    shutil.copytree(tiny_model_dir, source)
    for p in [source, *source.rglob("*")]:
        os.chmod(p, os.stat(p).st_mode | (0o055 if p.is_dir() else 0o044))
    local = mgr.install(str(source), source)
    for p in [tmp_path, *tmp_path.parents]:  # let the other user traverse pytest's 0700 temp dirs
        if p != Path("/"):
            os.chmod(p, os.stat(p).st_mode | 0o055)
    env = {"MODELCACHE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    listed = _as_nobody(["list", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    verified = _as_nobody(["verify", str(source), "--json"], env)
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"], verified.stdout + verified.stderr
    for args in (["rm", local.spec.repo_id], ["install", str(source), "--from", str(source), "--force"],
                 ["prune", "--yes"], ["pin", local.spec.repo_id]):
        out = _as_nobody(args, env)
        assert out.returncode != 0, (args, out.stdout)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)
        assert "read-only" in out.stderr or "ermission" in out.stderr, (args, out.stderr)
        out = _as_nobody([*args, "--json"], env)
        assert json.loads(out.stdout)["ok"] is False, (args, out.stdout)
    assert mgr.lockfile.get(local.spec.repo_id, local.spec.revision) is not None  # nothing lost
