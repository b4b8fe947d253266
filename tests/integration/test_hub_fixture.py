"""The test Hub, tiny models and fault proxy work with plain huggingface_hub (no modelcache).

These pin down the behaviour other tests rely on, including huggingface_hub 2.4's own
reaction to each fault (what it retries, what it lets through).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from tests.support.fault_proxy import FaultProxy
from tests.support.hub import MINILM_REPO, PICKLE_REPO, TINY_REPO, LocalHub

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TIMEOUT = 10
WEIGHTS = "model.safetensors"


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def download(endpoint: str, cache: Path, filename: str = WEIGHTS, revision: str = "main", repo: str = TINY_REPO) -> str:
    """``hf_hub_download`` with everything explicit."""
    return hf_hub_download(repo, filename, revision=revision, endpoint=endpoint, cache_dir=cache, etag_timeout=TIMEOUT)


# --- tiny models -----------------------------------------------------------------------


def test_tiny_models_load_and_differ(tiny_model_dir: Path, tiny_model_dir_v2: Path) -> None:
    from sentence_transformers import SentenceTransformer

    vectors = SentenceTransformer(str(tiny_model_dir), device="cpu").encode(["Hello world", "x"])
    assert vectors.shape == (2, 32)
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-5
    assert not list(tiny_model_dir.rglob("*.bin"))
    assert sha256_of(tiny_model_dir / WEIGHTS) != sha256_of(tiny_model_dir_v2 / WEIGHTS)


# --- the Hub ---------------------------------------------------------------------------


def test_model_info_resolves_branch_tag_and_sha(hub: LocalHub) -> None:
    api, repo = HfApi(endpoint=hub.endpoint), hub.repos[TINY_REPO]
    v1, v2 = (c.sha for c in repo.commits)
    assert v1 != v2
    for revision, expected in (("main", v2), ("v1.0", v1), (v1, v1), (v2[:7], v2)):
        info = api.model_info(TINY_REPO, revision=revision, timeout=TIMEOUT)
        assert info.sha == expected
        assert {s.rfilename for s in info.siblings} == set(repo.files_at(expected))


def test_tree_lists_lfs_hashes(hub: LocalHub) -> None:
    api = HfApi(endpoint=hub.endpoint)
    for repo_id, repo in hub.repos.items():
        expected = repo.files_at("main")
        listed = {
            e.path: e
            for e in api.list_repo_tree(repo_id, revision="main", recursive=True)
            if hasattr(e, "size")
        }
        assert set(listed) == set(expected)
        for path, info in expected.items():
            entry = listed[path]
            assert entry.size == info.size
            if info.is_lfs:
                assert entry.lfs is not None and entry.lfs.sha256 == info.sha256
            else:
                assert entry.lfs is None and entry.blob_id == info.git_sha1
    assert hub.repos[PICKLE_REPO].files_at("main")["pytorch_model.bin"].is_lfs


def test_download_returns_real_lfs_bytes(hub: LocalHub, tmp_path: Path) -> None:
    minilm = download(hub.endpoint, tmp_path, repo=MINILM_REPO)
    assert sha256_of(minilm) == MINILM_SHA256
    assert hub.repos[MINILM_REPO].files_at("main")[WEIGHTS].sha256 == MINILM_SHA256

    repo = hub.repos[TINY_REPO]
    v1 = repo.resolve("v1.0")
    for revision in ("main", "v1.0", v1):
        path = download(hub.endpoint, tmp_path, revision=revision)
        info = repo.files_at(revision)[WEIGHTS]
        assert (Path(path).stat().st_size, sha256_of(path)) == (info.size, info.sha256)
        assert Path(path).resolve().name == info.sha256  # blob named after the LFS etag


def test_snapshot_at_tag_is_a_loadable_model(hub: LocalHub, tmp_path: Path, tiny_model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    folder = snapshot_download(TINY_REPO, revision="v1.0", endpoint=hub.endpoint, cache_dir=tmp_path,
                               etag_timeout=TIMEOUT)
    assert Path(folder).name == hub.repos[TINY_REPO].resolve("v1.0")
    assert sha256_of(Path(folder) / WEIGHTS) == sha256_of(tiny_model_dir / WEIGHTS)
    assert SentenceTransformer(folder, device="cpu").encode(["Hello world"]).shape == (1, 32)


def test_missing_file_or_revision_is_repo_not_found(hub: LocalHub, tmp_path: Path) -> None:
    """olah quirk: 401 RepoNotFound for a missing file or revision, not 404."""
    with pytest.raises(RepositoryNotFoundError):
        download(hub.endpoint, tmp_path, filename="nope.txt")
    with pytest.raises(RepositoryNotFoundError):
        download(hub.endpoint, tmp_path, revision="no-such-branch")


# --- the fault proxy -------------------------------------------------------------------


def test_proxy_passes_through_and_logs(proxy: FaultProxy, hub: LocalHub, tmp_path: Path) -> None:
    api = HfApi(endpoint=proxy.endpoint)
    files = list(api.list_repo_tree(TINY_REPO, revision="main", recursive=True))
    assert len(files) == len(hub.repos[TINY_REPO].files_at("main")) + 2  # + 1_Pooling/, 2_Normalize/
    assert proxy.count("GET", "/tree/main") == 2  # olah's trailing-slash 307 came back through us

    path = download(proxy.endpoint, tmp_path)
    assert sha256_of(path) == hub.repos[TINY_REPO].files_at("main")[WEIGHTS].sha256
    assert ("HEAD", f"/{TINY_REPO}/resolve/main/{WEIGHTS}", 200) in proxy.requests
    assert ("GET", f"/{TINY_REPO}/resolve/main/{WEIGHTS}", 200) in proxy.requests

    proxy.reset()
    assert proxy.requests == []
    head = httpx2.head(f"{proxy.endpoint}/{TINY_REPO}/resolve/v1.0/{WEIGHTS}", timeout=TIMEOUT)
    info = hub.repos[TINY_REPO].files_at("v1.0")[WEIGHTS]
    assert head.headers["x-repo-commit"] == hub.repos[TINY_REPO].resolve("v1.0")
    assert head.headers["etag"].strip('"') == info.sha256
    assert int(head.headers["content-length"]) == info.size


def test_fault_rules_count_and_match(proxy: FaultProxy) -> None:
    url = f"{proxy.endpoint}/api/models/{TINY_REPO}/revision/main"
    unrelated = proxy.add_fault("503", path_contains="/other-repo/")
    fault = proxy.add_fault("503", path_contains=TINY_REPO, times=2)
    assert [httpx2.get(url, timeout=TIMEOUT).status_code for _ in range(3)] == [503, 503, 200]
    assert (fault.hits, unrelated.hits) == (2, 0)
    with pytest.raises(ValueError):
        proxy.add_fault("teapot")


def test_429_is_retried_after_retry_after(proxy: FaultProxy, hub: LocalHub, tmp_path: Path) -> None:
    proxy.add_fault("429", WEIGHTS, retry_after=0)
    path = download(proxy.endpoint, tmp_path)
    assert sha256_of(path) == hub.repos[TINY_REPO].files_at("main")[WEIGHTS].sha256
    assert [s for m, p, s in proxy.requests if m == "GET"] == [429, 200]


def test_503_on_get_is_not_retried(proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.add_fault("503", WEIGHTS)
    with pytest.raises(HfHubHTTPError) as exc_info:
        download(proxy.endpoint, tmp_path)
    assert exc_info.value.response.status_code == 503
    assert proxy.count("GET", WEIGHTS) == 1


def test_503_on_head_is_retried(proxy: FaultProxy, tmp_path: Path) -> None:
    """With nothing cached, hf_hub_download retries the metadata HEAD on 5xx."""
    proxy.add_fault("503", WEIGHTS, method="HEAD")
    download(proxy.endpoint, tmp_path)
    assert [s for m, p, s in proxy.requests if m == "HEAD"] == [503, 200]


def test_reset_mid_body_raises(proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.add_fault("reset", WEIGHTS)
    with pytest.raises(httpx2.TransportError):
        download(proxy.endpoint, tmp_path)
    assert proxy.count("GET", WEIGHTS) == 1
    assert not list(tmp_path.rglob(WEIGHTS))


def test_truncate_raises_on_the_wire_and_is_retried_by_hf(proxy: FaultProxy, hub: LocalHub, tmp_path: Path) -> None:
    url = f"{proxy.endpoint}/{TINY_REPO}/resolve/main/{WEIGHTS}"
    proxy.add_fault("truncate", WEIGHTS, at=1000)
    with pytest.raises(httpx2.RemoteProtocolError):
        httpx2.get(url, timeout=TIMEOUT)

    proxy.add_fault("truncate", WEIGHTS)
    path = download(proxy.endpoint, tmp_path)  # huggingface_hub restarts the GET (file < 10 MiB)
    assert sha256_of(path) == hub.repos[TINY_REPO].files_at("main")[WEIGHTS].sha256
    assert proxy.count("GET", WEIGHTS) == 3


def test_corrupt_body_is_stored_unverified(proxy: FaultProxy, hub: LocalHub, tmp_path: Path) -> None:
    """huggingface_hub does not check sha256: a same-size corrupted file lands in the cache."""
    info = hub.repos[TINY_REPO].files_at("main")[WEIGHTS]
    proxy.add_fault("corrupt", WEIGHTS)
    path = download(proxy.endpoint, tmp_path)
    assert Path(path).stat().st_size == info.size
    assert sha256_of(path) != info.sha256
    assert Path(path).resolve().name == info.sha256  # stored under the expected blob name


def test_wrong_size_fails_consistency_check(proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.add_fault("wrong_size", WEIGHTS, extra=7)
    with pytest.raises(OSError, match="Consistency check failed"):
        download(proxy.endpoint, tmp_path)


def test_down_and_up(proxy: FaultProxy) -> None:
    api = HfApi(endpoint=proxy.endpoint)
    proxy.down()
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.model_info(TINY_REPO, revision="main", timeout=TIMEOUT)
    assert exc_info.value.response.status_code == 503
    proxy.up()
    assert api.model_info(TINY_REPO, revision="main", timeout=TIMEOUT).sha


def test_delay_trips_a_client_timeout(proxy: FaultProxy) -> None:
    proxy.add_fault("delay", "/revision/main", seconds=1.0)
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.get(f"{proxy.endpoint}/api/models/{TINY_REPO}/revision/main", timeout=0.2)


def test_isolated_env_points_caches_at_tmp(isolated_env: Path) -> None:
    assert os.environ["HF_HUB_CACHE"].startswith(str(isolated_env))
    assert os.environ["MODELCACHE_CACHE_DIR"].startswith(str(isolated_env))
    assert not {"HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "MODELCACHE_CONFIG"} & set(os.environ)
