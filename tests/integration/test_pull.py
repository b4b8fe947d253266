"""Issue 2: pull, cache and verify against a real local Hub (olah) and a fault proxy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelcache.errors import (
    DiskSpaceError,
    DownloadError,
    IntegrityError,
    OfflineError,
)
from modelcache.manager import ModelManager
from modelcache.registry import ModelSpec
from modelcache.settings import load_settings
from tests.support.hub import MINILM_REPO, PICKLE_REPO, TINY_REPO

ROOT = Path(__file__).resolve().parents[2]
FAST_RETRY = {"retries": 4, "backoff_base": 0.05, "backoff_max": 0.2}


def manager(endpoints: list[str], **download) -> ModelManager:
    return ModelManager(load_settings({"download": {"endpoints": endpoints, **FAST_RETRY, **download}}))


def tiny(dims: int = 32) -> ModelSpec:
    return ModelSpec(name="tiny", repo_id=TINY_REPO, dims=dims, custom=True)


def blob_names(snapshot: Path) -> dict[str, str]:
    return {p.relative_to(snapshot).as_posix(): os.path.basename(os.readlink(p))
            for p in snapshot.rglob("*") if p.is_symlink()}


def test_pull_lays_out_the_hf_cache_with_hub_hashes(hub):
    mgr = manager([hub.endpoint])
    result = mgr.pull(tiny())
    repo = hub.repos[TINY_REPO]
    assert result.commit == repo.resolve("main")
    expected = repo.files_at("main")
    blobs = blob_names(result.snapshot)
    assert "model.safetensors" in blobs and "1_Pooling/config.json" in blobs
    for path, blob in blobs.items():
        info = expected[path]
        assert blob == (info.sha256 if info.is_lfs else info.git_sha1), path
    ref = mgr.store.repo_dir(TINY_REPO) / "refs" / "main"
    assert ref.read_text() == result.commit
    pin = mgr.lockfile.get(TINY_REPO, "main")
    assert pin.commit == result.commit and pin.files["model.safetensors"].sha256 == expected["model.safetensors"].sha256
    meta = mgr.store.read_meta(TINY_REPO)
    assert meta["source_endpoint"] == hub.endpoint and meta["functional"][result.commit]["dims"] == 32
    assert not any(mgr.store.state_dir.joinpath("staging").iterdir())  # nothing left behind


def test_revisions_by_tag_and_sha_resolve(hub):
    repo = hub.repos[TINY_REPO]
    mgr = manager([hub.endpoint])
    old = mgr.pull(tiny(), revision="v1.0")
    assert old.commit == repo.resolve("v1.0") != repo.resolve("main")
    by_sha = mgr.pull(tiny(), revision=repo.resolve("main"))
    assert by_sha.commit == repo.resolve("main")
    assert blob_names(old.snapshot)["model.safetensors"] != blob_names(by_sha.snapshot)["model.safetensors"]


def test_second_pull_of_pinned_model_makes_no_request(proxy):
    mgr = manager([proxy.endpoint])
    mgr.pull(tiny())
    assert proxy.count() > 0
    proxy.reset()
    again = ModelManager(mgr.settings).pull(tiny())
    assert proxy.count() == 0 and again.requests_made is False
    ModelManager(mgr.settings).load(tiny())
    assert proxy.count() == 0


def test_pull_minilm_from_mirror_verifies_against_registry_hash(hub):
    mgr = manager([hub.endpoint])
    result = mgr.pull("all-MiniLM-L6-v2")
    assert blob_names(result.snapshot)["model.safetensors"] == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
    assert mgr.store.read_meta(MINILM_REPO)["functional"][result.commit]["dims"] == 384
    assert mgr.verify("all-MiniLM-L6-v2", full=True).ok


def test_rate_limit_retry_after_is_honoured(proxy):
    proxy.add_fault("429", path_contains="model.safetensors", times=2, retry_after=1)
    proxy.add_fault("429", path_contains="/tree/", times=1, retry_after=1)
    result = manager([proxy.endpoint]).pull(tiny())
    assert result.stats.rate_limited == 3 and result.stats.waited_s >= 3.0
    assert proxy.count(method="GET", path_contains="model.safetensors") == 3


@pytest.mark.parametrize("kind", ["503", "reset", "truncate"])
def test_transient_faults_are_retried_and_the_file_verifies(proxy, kind):
    proxy.add_fault(kind, path_contains="model.safetensors", times=2)
    mgr = manager([proxy.endpoint])
    mgr.pull(tiny())
    # retried (by huggingface_hub's resume or by our policy) until a good body arrived
    assert proxy.count(method="GET", path_contains="model.safetensors") >= 3
    assert mgr.verify(tiny(), full=True).ok


def test_corrupt_body_never_reaches_snapshots_and_is_refetched_once(hub, proxy):
    proxy.add_fault("corrupt", path_contains="model.safetensors", times=1)
    mgr = manager([proxy.endpoint])
    result = mgr.pull(tiny())
    assert mgr.verify(tiny(), full=True).ok
    quarantined = list((mgr.store.repo_dir(TINY_REPO) / "quarantine").iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.endswith("model.safetensors")
    truth = hub.repos[TINY_REPO].files_at("main")["model.safetensors"].sha256
    assert blob_names(result.snapshot)["model.safetensors"] == truth


def test_corrupt_twice_raises_integrity_error_and_leaves_no_snapshot(proxy):
    proxy.add_fault("corrupt", path_contains="model.safetensors", times=2)
    mgr = manager([proxy.endpoint])
    with pytest.raises(IntegrityError) as err:
        mgr.pull(tiny())
    assert err.value.file == "model.safetensors" and err.value.check == "sha256"
    assert err.value.expected != err.value.actual
    snapshots = mgr.store.repo_dir(TINY_REPO) / "snapshots"
    assert not snapshots.exists() or not any(snapshots.iterdir())
    assert len(list((mgr.store.repo_dir(TINY_REPO) / "quarantine").iterdir())) == 2


def test_mirror_failover_and_all_down(hub, proxy):
    proxy.down()
    mgr = manager([proxy.endpoint, hub.endpoint])
    result = mgr.pull(tiny())
    assert result.endpoint == hub.endpoint
    with pytest.raises(DownloadError) as err:
        manager([proxy.endpoint, "http://127.0.0.1:9"], retries=1).pull(tiny(), revision="v1.0")
    assert set(err.value.failures) == {proxy.endpoint, "http://127.0.0.1:9"}
    assert "MODELCACHE_ENDPOINTS" in str(err.value)


def test_pickle_weights_are_never_fetched_unless_allowed(hub):
    spec = ModelSpec(name="pickled", repo_id=PICKLE_REPO, dims=32, custom=True)
    result = manager([hub.endpoint]).pull(spec)
    assert "pytorch_model.bin" not in result.files and "model.safetensors" in result.files
    allowed = manager([hub.endpoint]).pull(spec, upgrade=True, allow_pickle=True)
    assert "pytorch_model.bin" in allowed.files


def test_disk_preflight_fails_fast_with_numbers(hub):
    mgr = manager([hub.endpoint], disk_margin_mb=10**9)
    with pytest.raises(DiskSpaceError) as err:
        mgr.pull(tiny())
    assert err.value.needed > err.value.free
    assert f"{err.value.needed:,}" in str(err.value) and "free" in str(err.value)
    assert not (mgr.store.repo_dir(TINY_REPO) / "snapshots").exists()


def test_offline_cold_cache_names_the_fix_and_opens_no_socket(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("a socket was opened in offline mode")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mgr = ModelManager(load_settings())
    with pytest.raises(OfflineError) as err:
        mgr.load(tiny())
    assert "modelcache pull" in str(err.value) and "modelcache install" in str(err.value)


def test_offline_warm_cache_loads_with_zero_sockets(hub, monkeypatch):
    mgr = manager([hub.endpoint])
    mgr.pull(tiny())
    import socket

    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(AssertionError("socket")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = ModelManager(load_settings({"download": {"endpoints": [hub.endpoint]}}))
    assert offline.settings.offline
    vec = offline.load(tiny()).encode(["Hello world"])
    assert vec.shape == (1, 32)


def test_warm_verify_does_not_rehash_and_detects_a_flipped_byte(hub):
    mgr = manager([hub.endpoint])
    result = mgr.pull(tiny())
    first = mgr.verify(tiny())
    assert first.ok and first.hashed == []  # stamps from the download itself
    blob = (result.snapshot / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    cli = subprocess.run([sys.executable, "-m", "modelcache", "verify", TINY_REPO, "--full", "--json"],
                         capture_output=True, text=True, env=os.environ | {"MODELCACHE_ENDPOINTS": hub.endpoint})
    assert cli.returncode == 1, cli.stderr
    report = json.loads(cli.stdout)["models"][0]
    assert "model.safetensors" in report["failures"] and "sha256" in report["failures"]["model.safetensors"]
    assert report["quarantined"] == ["model.safetensors"]
    # the load path re-fetches it, and then everything verifies again
    mgr2 = manager([hub.endpoint])
    mgr2.load(tiny())
    assert mgr2.verify(tiny(), full=True).ok


def test_functional_check_rejects_wrong_dims(hub):
    with pytest.raises(IntegrityError) as err:
        manager([hub.endpoint]).pull(tiny(dims=64))
    assert "dims" in err.value.check and err.value.expected == 64 and err.value.actual == 32


def test_hf_cache_tools_read_what_modelcache_pulled(hub):
    mgr = manager([hub.endpoint])
    result = mgr.pull(tiny())
    env = os.environ | {"HF_HUB_CACHE": str(mgr.store.root), "HF_ENDPOINT": hub.endpoint, "NO_COLOR": "1"}
    hf = str(Path(sys.executable).parent / "hf")
    ls = subprocess.run([hf, "cache", "ls", "--cache-dir", str(mgr.store.root), "--format", "json"],
                        capture_output=True, text=True, env=env)
    assert ls.returncode == 0, ls.stderr
    assert TINY_REPO in ls.stdout
    verify = subprocess.run([hf, "cache", "verify", TINY_REPO, "--revision", result.commit,
                             "--cache-dir", str(mgr.store.root)], capture_output=True, text=True, env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # and sentence-transformers finds it by repo id, offline
    code = textwrap.dedent(f"""
        from sentence_transformers import SentenceTransformer
        m = SentenceTransformer({TINY_REPO!r}, cache_folder={str(mgr.store.root)!r}, device="cpu")
        print(m.encode(["Hello world"]).shape)
    """)
    st = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env | {"HF_HUB_OFFLINE": "1"})
    assert st.returncode == 0 and "(1, 32)" in st.stdout, st.stderr[-2000:]


def test_two_processes_download_once(proxy, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from modelcache.manager import ModelManager
        from modelcache.registry import ModelSpec
        from modelcache.settings import load_settings
        mgr = ModelManager(load_settings({{"download": {{"endpoints": [{proxy.endpoint!r}]}}}}))
        r = mgr.pull(ModelSpec(name="tiny", repo_id={TINY_REPO!r}, dims=32, custom=True))
        print(r.commit, len(r.downloaded))
    """)
    # slow the body down so both processes overlap
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=os.environ.copy()) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    downloaded = sorted(int(o[0].split()[1]) for o in outs)
    assert downloaded[0] == 0 and downloaded[1] > 0  # one process downloaded, the other found it done
    assert proxy.count(method="GET", path_contains="model.safetensors") == 1


def test_read_only_cache_loads_and_writes_nothing(hub, tmp_path):
    mgr = manager([hub.endpoint])
    mgr.pull(tiny())
    root = mgr.store.root
    before = {str(p): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in root.rglob("*")}
    for p in [tmp_path, *tmp_path.parents]:  # let the other user traverse pytest's 0700 temp dirs
        if p != Path("/"):
            os.chmod(p, os.stat(p).st_mode | 0o055)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from modelcache.manager import ModelManager
        from modelcache.registry import ModelSpec
        from modelcache.settings import load_settings
        mgr = ModelManager(load_settings())
        assert mgr.store.read_only, "a cache we cannot write must be detected"
        enc = mgr.load(ModelSpec(name="tiny", repo_id={TINY_REPO!r}, dims=32, custom=True))
        print(enc.encode(["Hello world"]).shape)
    """)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HOME": "/nonexistent"}
    # a real unprivileged user: the cache belongs to root and is not writable by it
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "(1, 32)" in proc.stdout, proc.stderr[-2000:]
    after = {str(p): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in root.rglob("*")}
    assert after == before
