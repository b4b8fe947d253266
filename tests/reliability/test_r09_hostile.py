"""R9: a hostile mirror or bundle is refused with a clear error, and nothing of it escapes.

- A tree listing with a path-traversal / absolute file name, or a blob name that is not a hash
  (git cannot hold such names, so a lying mirror is simulated by ``TamperProxy``): refused
  before anything is downloaded.
- ``safe_relpath`` / ``FileExpectation`` / ``CacheStore.publish_snapshot`` / ``write_ref``
  refuse escaping names and non-hash commits (unit level, defence in depth).
- A repo asking for remote code (``auto_map``) is refused at load, on both backends.
- A pickle-only repo is refused without ``allow_pickle``.
- An oversized body (the tree says N bytes, the body is longer) never reaches ``snapshots/``.
- A bundle that carries remote code installs its (verified) files but never runs them.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from modelcache._util import safe_relpath
from modelcache.cache.integrity import FileExpectation
from modelcache.cache.store import CacheStore
from modelcache.errors import ModelCacheError, UnsafeFileError
from modelcache.hub.pull import select_files
from tests.reliability import blobs_match_their_names, leftovers, manager, tiny
from tests.support.hub import TINY_REPO, HubRepo, files_from_dir, git_blob_sha1
from tests.support.loopback import LoopbackServer
from tests.support.tiny_model import pickle_weights

REMOTE_CODE_REPO = "hostile-org/remote-code"
PICKLE_ONLY_REPO = "hostile-org/pickle-only"
CLEAN = {"incomplete": [], "staging": [], "trash": [], "dangling": []}
EVIL = b'{"pwned": true}'
ESCAPES = ["../../evil.json", "../../../../../../tmp/evil.json", "/tmp/evil.json", "sub/../../evil.json",
           "a\\..\\..\\evil.json", "./config.json", "C:evil.json", "x/\x00.json"]
ESCAPE_IDS = ["dotdot", "deep-dotdot", "absolute", "inner-dotdot", "backslash", "dot", "drive", "nul"]


# -- a mirror that lies about its tree -------------------------------------------------------
class TamperProxy(LoopbackServer):
    """Reverse proxy to the Hub that rewrites tree listings with ``tamper(items) -> items``."""

    def __init__(self, upstream: str, tamper: Callable[[list[dict]], list[dict]],
                 serve: dict[str, bytes] | None = None):
        self.upstream = urlsplit(upstream)
        self.tamper = tamper
        self.serve = serve or {}  # /resolve/ paths containing a key are answered with its bytes
        self.requests: list[tuple[str, str, int]] = []
        super().__init__(_TamperHandler, "proxy")

    def count(self, path_contains: str, method: str = "GET") -> int:
        return sum(1 for m, p, _ in self.requests if m == method and path_contains in p)


class _TamperHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        proxy: TamperProxy = self.server.proxy  # type: ignore[attr-defined]
        fake = next((body for key, body in proxy.serve.items() if "/resolve/" in self.path and key in self.path), None)
        if fake is not None:  # the lying mirror serves its hostile file too
            proxy.requests.append((self.command, self.path, 200))
            self.send_response_only(200)
            self.send_header("Content-Length", str(len(fake)))
            self.send_header("ETag", f'"{git_blob_sha1(fake)}"')
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(fake)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")}
        conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
        try:
            conn.request(self.command, self.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if self.command == "GET" and resp.status == 200 and "/tree/" in self.path:
            body = json.dumps(proxy.tamper(json.loads(body))).encode()
        proxy.requests.append((self.command, self.path, resp.status))
        self.send_response_only(resp.status, resp.reason)
        for name, value in resp.getheaders():
            if name.lower() in ("connection", "content-length", "transfer-encoding"):
                continue
            if name.lower() == "location":
                parts = urlsplit(value)
                if parts.netloc == proxy.upstream.netloc:
                    value = urlunsplit(parts._replace(netloc=urlsplit(proxy.endpoint).netloc))
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET  # noqa: N815


def _escape_targets(root: Path) -> list[Path]:
    """Where an escaping name would have landed, from any directory a pull writes in."""
    return [p for p in {root.parent / "evil.json", Path("/tmp/evil.json"), root / "evil.json"} if os.path.lexists(p)]


@pytest.mark.scenario("R9")
@pytest.mark.parametrize("name", ESCAPES, ids=ESCAPE_IDS)
def test_tree_listing_an_escaping_name_is_refused_before_any_download(hub, name):
    def add_entry(items: list[dict]) -> list[dict]:
        return [*items, {"type": "file", "path": name, "oid": git_blob_sha1(EVIL), "size": len(EVIL)}]

    with TamperProxy(hub.endpoint, add_entry, serve={"evil.json": EVIL}) as mirror:
        mgr = manager([mirror.endpoint])
        with pytest.raises(UnsafeFileError) as err:
            mgr.pull(tiny())
        assert repr(name) in str(err.value) or name in str(err.value)
        assert mirror.count("/resolve/") == 0  # refused on the listing, nothing downloaded
    root = mgr.store.root
    assert not mgr.store.repo_dir(TINY_REPO).exists()
    assert leftovers(root) == CLEAN and _escape_targets(root) == []


@pytest.mark.scenario("R9")
@pytest.mark.parametrize("field", ["oid", "lfs.oid", "size"])
def test_tree_listing_a_blob_name_that_is_not_a_hash_is_refused(hub, field):
    def poison(items: list[dict]) -> list[dict]:
        for item in items:
            if item.get("path") == "model.safetensors" and field == "lfs.oid":
                item["lfs"]["oid"] = "../../../../evil" + "0" * 48
            elif item.get("path") == "config.json" and field == "oid":
                item["oid"] = "../../../../evil" + "0" * 24
            elif item.get("path") == "config.json" and field == "size":
                item["size"] = -1
        return items

    with TamperProxy(hub.endpoint, poison) as mirror:
        mgr = manager([mirror.endpoint])
        with pytest.raises(UnsafeFileError) as err:
            mgr.pull(tiny())
        assert mirror.count("/resolve/") == 0
    assert "hex digits" in str(err.value) or "non-negative" in str(err.value)
    assert not mgr.store.repo_dir(TINY_REPO).exists() and leftovers(mgr.store.root) == CLEAN


# -- the same checks, unit level ---------------------------------------------------------------
@pytest.mark.scenario("R9")
def test_safe_relpath_and_file_expectations_refuse_escaping_names():
    for good in ("config.json", "1_Pooling/config.json", ".gitattributes", "a/b/c..d.txt"):
        assert safe_relpath(good) == good
        FileExpectation(good, 1, blob_id="0" * 40)
    for bad in [*ESCAPES, "", "a//b", "a/", None, 3]:
        with pytest.raises(UnsafeFileError):
            safe_relpath(bad)  # type: ignore[arg-type]
        with pytest.raises(UnsafeFileError):
            FileExpectation(bad, 1, blob_id="0" * 40)  # type: ignore[arg-type]
    for sha256, blob_id, size in [("../" + "0" * 61, None, 1), (None, "0" * 39 + "/", 1), ("A" * 64, None, 1),
                                  (None, "0" * 40, -1), (None, "0" * 40, True), (None, "0" * 40, 1.5)]:
        with pytest.raises(UnsafeFileError):
            FileExpectation("config.json", size, sha256, blob_id)


@pytest.mark.scenario("R9")
def test_publish_snapshot_and_refs_refuse_escaping_names(tmp_path):
    store = CacheStore(tmp_path / "cache", read_only=False)
    good = {"config.json": FileExpectation("config.json", 2, blob_id="1" * 40)}
    commit = "a" * 40
    with store.staging() as staging:
        for bad_path in ("../../evil.json", "/abs/evil.json", "sub/../../evil.json"):
            # the key, not exp.path, names the link: a caller could pass any mapping
            with pytest.raises(UnsafeFileError):
                store.publish_snapshot("org/name", commit, {bad_path: good["config.json"]}, staging)
        for bad_commit in ("../../../escape", "main", "A" * 40, ""):
            with pytest.raises(UnsafeFileError):
                store.publish_snapshot("org/name", bad_commit, good, staging)
        snap = store.publish_snapshot("org/name", commit, good, staging)
    assert snap == store.snapshot_dir("org/name", commit) and (snap / "config.json").is_symlink()
    with pytest.raises(UnsafeFileError):
        store.write_ref("org/name", "../../../escape", commit)
    with pytest.raises(UnsafeFileError):
        store.write_ref("org/name", "main", "../../x")
    assert not list(tmp_path.rglob("escape")) and not list(tmp_path.rglob("evil.json"))
    # a ref that does not hold a commit hash is not followed
    store.write_ref("org/name", "main", commit)
    assert store.resolve("org/name", "main") == commit
    (store.repo_dir("org/name") / "refs" / "main").write_text("../../../..")
    assert store.resolve("org/name", "main") is None
    assert store.resolve("org/name", "../../../etc/passwd") is None


@pytest.mark.scenario("R9")
def test_select_files_never_sees_an_escaping_name():
    # the listing cannot even be built: FileExpectation refuses it, so select_files' globs
    # ("*.json" matches "../../evil.json") are never asked
    with pytest.raises(UnsafeFileError):
        select_files(tiny(), {"../../evil.json": FileExpectation("../../evil.json", 2, blob_id="1" * 40)}, False)


# -- hostile repos on the Hub -----------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_repos(hub, tiny_model_dir: Path) -> dict[str, Path]:
    """A repo asking for remote code (with code that would leave a marker if run) and a
    pickle-only repo, created once on the session's Hub."""
    marker = hub.mirrors_dir.parent / "remote-code-ran"
    files = files_from_dir(tiny_model_dir)
    config = json.loads(files["config.json"].read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "modeling_evil.EvilConfig"}
    code = f"open({str(marker)!r}, 'w').write('ran')\nclass EvilModel: pass\nclass EvilConfig: pass\n".encode()
    if not (hub.mirrors_dir / "models" / REMOTE_CODE_REPO).exists():
        HubRepo(hub.mirrors_dir, REMOTE_CODE_REPO).commit(
            {**files, "config.json": json.dumps(config).encode(), "modeling_evil.py": code}, "asks for remote code")
        configs = {p: f for p, f in files.items() if p != "model.safetensors"}
        HubRepo(hub.mirrors_dir, PICKLE_ONLY_REPO).commit(
            {**configs, "pytorch_model.bin": pickle_weights(tiny_model_dir)}, "pickle weights only")
    return {"marker": marker}


@pytest.mark.scenario("R9")
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_repo_asking_for_remote_code_is_refused_at_load(hub, hostile_repos, backend):
    mgr = manager([hub.endpoint], {"embedding": {"backend": backend}})
    spec = tiny(repo_id=REMOTE_CODE_REPO, name="remote-code")
    with pytest.raises(UnsafeFileError) as err:
        mgr.pull(spec)  # the configs are checked before the weights move (progressive pull): refused there
    assert "auto_map" in str(err.value) and "remote code" in str(err.value)
    with pytest.raises(UnsafeFileError):
        mgr.load(spec)
    assert mgr.puller.cached(spec) is None  # nothing published, nothing locked
    assert not list(mgr.store.repo_dir(REMOTE_CODE_REPO).rglob("*.py"))  # code files are never even fetched
    assert not hostile_repos["marker"].exists()


@pytest.mark.scenario("R9")
def test_pickle_only_repo_is_refused_without_allow_pickle(proxy, hostile_repos):
    mgr = manager([proxy.endpoint])
    spec = tiny(repo_id=PICKLE_ONLY_REPO, name="pickle-only")
    with pytest.raises(UnsafeFileError) as err:
        mgr.pull(spec)
    assert "pytorch_model.bin" in str(err.value) and "allow-pickle" in str(err.value)
    assert proxy.count(method="GET", path_contains="/resolve/") == 0
    assert not (mgr.store.repo_dir(PICKLE_ONLY_REPO) / "snapshots").exists()


@pytest.mark.scenario("R9")
def test_oversized_body_is_refused_and_never_reaches_snapshots(hub, proxy, record_property):
    proxy.add_fault("wrong_size", path_contains="model.safetensors", times=50, extra=4096)
    mgr = manager([proxy.endpoint])
    with pytest.raises(ModelCacheError) as err:
        mgr.pull(tiny())
    size = hub.repos[TINY_REPO].files_at("main")["model.safetensors"].size
    message = str(err.value)
    assert "model.safetensors" in message and str(size) in message and str(size + 4096) in message, message
    repo = mgr.store.repo_dir(TINY_REPO)
    assert not (repo / "snapshots").exists() or not any((repo / "snapshots").iterdir())
    assert blobs_match_their_names(repo) == [] and leftovers(mgr.store.root) == CLEAN
    record_property("error", type(err.value).__name__)
    record_property("GETs", proxy.count(method="GET", path_contains="model.safetensors"))


# -- hostile bundles ----------------------------------------------------------------------------
@pytest.mark.scenario("R9")
def test_bundle_carrying_remote_code_installs_verified_files_but_never_runs_them(hub, hostile_repos, tmp_path,
                                                                                 monkeypatch, tiny_model_dir):
    pytest.importorskip("modelcache.ops.bundle")
    from modelcache.ops.bundle import export_bundle, import_bundle

    spec = tiny(repo_id=REMOTE_CODE_REPO, name="remote-code")
    source = manager([hub.endpoint])
    with pytest.raises(UnsafeFileError):
        source.pull(spec)  # refused before the weights move: a pull leaves nothing to export
    # the same files copied in from a directory: installed verified, the functional check refuses to run them
    local = tmp_path / "remote-code-files"
    shutil.copytree(tiny_model_dir, local)
    config = json.loads((local / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "modeling_evil.EvilConfig"}
    (local / "config.json").write_text(json.dumps(config))
    (local / "modeling_evil.py").write_text(f"open({str(hostile_repos['marker'])!r}, 'w').write('ran')\n")
    with pytest.raises(UnsafeFileError):
        source.install(spec, local)
    bundle = tmp_path / "remote-code.tar.gz"
    export_bundle(source, spec, bundle)
    with tarfile.open(bundle) as tar:
        assert not [m.name for m in tar.getmembers() if m.name.endswith(".py")]
    monkeypatch.setenv("MODELCACHE_CACHE_DIR", str(tmp_path / "target"))
    target = manager([hub.endpoint])
    import_bundle(target, bundle)
    with pytest.raises(UnsafeFileError):
        target.load(spec)
    assert not hostile_repos["marker"].exists()



@pytest.mark.scenario("R9")
def test_endless_body_stops_at_the_announced_size_and_never_fills_the_disk(small_fs, proxy, record_property):
    root = small_fs(12)  # the model is 4 MB; the body is 36 MB
    proxy.add_fault("wrong_size", path_contains="model.safetensors", times=50, extra=32 * 1024 * 1024)
    mgr = manager([proxy.endpoint], disk_margin_mb=0)
    with pytest.raises(ModelCacheError) as err:
        mgr.pull(tiny())
    message = str(err.value)
    record_property("error", type(err.value).__name__)
    assert "No space left" not in message, message  # it stopped reading; the disk never filled
    assert "model.safetensors" in message and "should be" in message, message
    assert leftovers(root) == CLEAN
