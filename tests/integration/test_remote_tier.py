"""Remote embedding servers as the head of the chain, against a real server (infinity-emb on 127.0.0.1).

- same model behind the server: the remote tier takes the local copy's fingerprint (probe set,
  cosine >= 0.999), and vectors stay interchangeable when the server is killed mid-run;
- another model behind it: its own fingerprint, and no vector ever reaches a caller under the
  other space's fingerprint while the server flaps (many threads); ``strict`` never uses it;
- faults through tests/support/fault_proxy.py: 503 / 429 (Retry-After), slow (timeout_s), down;
  batching (batch_size per request); the token goes to that URL only; metrics per tier;
- answers that are not vectors (bad JSON, wrong dims or count, NaN, infinity, redirect) from a
  hostile loopback server, which also speaks TEI's ``POST /embed`` computed with the real model.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest

from modelcache import metrics
from modelcache.backends.remote import RemoteEncoder, server_label
from modelcache.serving.service import EmbeddingService
from modelcache.settings import RemoteSection
from tests.support.fault_proxy import FaultProxy
from tests.support.infinity import InfinityServer
from tests.support.loopback import LoopbackServer
from tests.support.tiny_model import build_tiny_st_model, minilm_files_dir

pytestmark = pytest.mark.filterwarnings("ignore::modelcache.errors.EmbeddingSpaceWarning")

TEXTS = [f"memory {i}: the user prefers {topic}" for i, topic in
         enumerate(["tea", "Rust", "hiking", "jazz", "chess", "PostgreSQL", "sushi", "Linux", "cats", "rain"])]


#: the local copy: the bundled package, installed into the cache, is then the preferred model's snapshot too
LOCAL = ("preferred", "bundled")


def remote_entry(url: str, token: str | None = None, **extra) -> dict:
    return {"url": url, "model": "sentence-transformers/all-MiniLM-L6-v2", "token": token, **extra}


def make_service(remote: list[dict], model: str | None = None, strategy: str = "auto",
                 **fallback) -> EmbeddingService:
    settings = {"offline": True, "remote": remote,
                "fallback": {"retry_preferred_after_s": 0.2, "strategy": strategy, **fallback}}
    return EmbeddingService(settings, model, background_recovery=False)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def remote_tier(svc: EmbeddingService):
    return next(t for t in svc.tiers if t.kind == "remote")


@pytest.fixture(scope="module")
def tiny384(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 384-dim sentence-transformers model: same dims as the server's, another space."""
    return build_tiny_st_model(tmp_path_factory.mktemp("tiny384"), seed=3, hidden=384)


@pytest.fixture
def via_proxy(infinity: InfinityServer) -> Iterator[FaultProxy]:
    with FaultProxy(f"http://127.0.0.1:{infinity.port}", timeout=30) as proxy:
        yield proxy


# -- same space ---------------------------------------------------------------------------------
def test_same_model_shares_the_local_fingerprint(infinity: InfinityServer) -> None:
    svc = make_service([remote_entry(infinity.url, infinity.token)])
    vectors, fingerprint = svc.encode(TEXTS)
    tier = remote_tier(svc)
    assert svc.active_tier == tier.name == server_label(RemoteSection(**remote_entry(infinity.url)))
    assert tier.probe["same_space"] and tier.probe["against"] in LOCAL and tier.probe["min_cosine"] >= 0.999
    assert not svc.degraded and svc.in_space(fingerprint)

    local = make_service([])  # the same cache, no server: the bundled copy of the model
    local_vectors, local_fingerprint = local.encode(TEXTS)
    assert local.active_tier in LOCAL
    assert fingerprint == local_fingerprint
    assert cosines(vectors, local_vectors).min() >= 0.999
    assert "token" not in json.dumps(svc.status()["tiers"][0]) and infinity.token not in repr(svc.status())


def test_server_killed_mid_run_moves_on_with_the_same_space_and_comes_back(infinity: InfinityServer) -> None:
    svc = make_service([remote_entry(infinity.url, infinity.token)])
    reference, fingerprint = make_service([]).encode(TEXTS)
    assert svc.encode(TEXTS[:1])[1] == fingerprint and svc.active_tier.startswith("remote:")
    results: list[tuple[int, np.ndarray, str | None, str | None]] = []
    errors: list[BaseException] = []
    killed = threading.Event()

    def caller(worker: int) -> None:
        for step in range(30):
            i = (worker + step) % len(TEXTS)
            try:
                vectors, fp = svc.encode([TEXTS[i]])
            except BaseException as exc:  # noqa: BLE001 - collected: no caller may see an error
                errors.append(exc)
                return
            results.append((i, vectors[0], fp, svc.active_tier))
            if worker == 0 and step == 5:
                infinity.kill()
                killed.set()

    threads = [threading.Thread(target=caller, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert killed.is_set() and not errors
    assert {fp for _, _, fp, _ in results} == {fingerprint}  # interchangeable: one space throughout
    for i, vector, _, _ in results:
        assert cosines(vector[None], reference[i][None])[0] >= 0.999
    assert svc.active_tier in LOCAL and remote_tier(svc).ok is False

    infinity.start()
    time.sleep(0.3)  # past fallback.retry_preferred_after_s
    assert svc.encode(TEXTS[:2])[1] == fingerprint
    assert svc.active_tier.startswith("remote:") and svc.counters["recoveries"] >= 1


# -- another space ------------------------------------------------------------------------------
def test_another_model_has_its_own_fingerprint_and_is_never_mixed(infinity: InfinityServer, via_proxy: FaultProxy,
                                                                 tiny384: Path) -> None:
    entry = remote_entry(via_proxy.endpoint + "/v1", infinity.token)
    svc = make_service([entry], model=str(tiny384))
    first, remote_fp = svc.encode(TEXTS[:1])
    tier = remote_tier(svc)
    assert remote_fp == tier.name == server_label(RemoteSection(**entry)) and svc.active_tier == tier.name
    assert tier.probe["against"] == "preferred" and not tier.probe["same_space"]
    assert svc.degraded and not svc.in_space(remote_fp)

    remote_ref = RemoteEncoder(RemoteSection(**remote_entry(infinity.url, infinity.token))).encode(TEXTS)
    local_ref, local_fp = make_service([], model=str(tiny384)).encode(TEXTS)
    assert local_fp != remote_fp
    assert cosines(remote_ref, local_ref).max() < 0.9  # a mislabelled vector would be caught below
    results: list[tuple[int, np.ndarray, str | None]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def caller(worker: int) -> None:
        step = 0
        while not stop.is_set():
            i = (worker * 3 + step) % len(TEXTS)
            try:
                vectors, fp = svc.encode([TEXTS[i], TEXTS[(i + 1) % len(TEXTS)]])
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return
            results.extend([(i, vectors[0], fp), ((i + 1) % len(TEXTS), vectors[1], fp)])
            step += 1

    threads = [threading.Thread(target=caller, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for _ in range(3):  # the server flaps: down (503 to everything), then back
        time.sleep(0.5)
        via_proxy.down()
        time.sleep(0.5)
        via_proxy.up()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors
    seen = {fp for _, _, fp in results}
    assert seen == {remote_fp, local_fp}  # both spaces served...
    for i, vector, fp in results:  # ...and each vector under its own space's fingerprint only
        reference = remote_ref if fp == remote_fp else local_ref
        assert cosines(vector[None], reference[i][None])[0] >= 0.999, (fp, i)

    strict = make_service([entry], model=str(tiny384), strategy="strict")
    assert strict.encode(TEXTS[:1])[1] == local_fp and strict.active_tier == "preferred"
    assert "strict" in remote_tier(strict).reason


# -- faults through the proxy ---------------------------------------------------------------------
def test_faults_move_the_chain_on_and_back(infinity: InfinityServer, via_proxy: FaultProxy) -> None:
    sink = metrics.enable()
    try:
        svc = make_service([remote_entry(via_proxy.endpoint + "/v1", infinity.token, batch_size=4, timeout_s=1.5)])
        svc.encode(TEXTS[:1])
        tier = remote_tier(svc)
        assert svc.active_tier == tier.name
        before = via_proxy.count("POST", "/v1/embeddings")
        assert svc.encode(TEXTS)[0].shape == (10, 384)
        assert via_proxy.count("POST", "/v1/embeddings") - before == 3  # batch_size 4: 4 + 4 + 2

        # 429 with a short Retry-After: waited for, sent again, still served remotely
        via_proxy.add_fault("429", "/v1/embeddings", method="POST", retry_after="0.2")
        assert svc.encode(TEXTS[:2])[1] == tier.fingerprint and svc.active_tier == tier.name
        assert [s for m, p, s in via_proxy.requests[-2:]] == [429, 200]

        # 503 with a long Retry-After: the chain moves on and keeps away for that long
        via_proxy.add_fault("503", "/v1/embeddings", method="POST", retry_after="120")
        assert svc.encode(TEXTS[:2])[1] == tier.fingerprint  # same space: the caller sees no change
        assert svc.active_tier in LOCAL and tier.retry_after == 120 and "HTTP 503" in tier.reason
        posts = via_proxy.count("POST")
        time.sleep(0.3)  # past retry_preferred_after_s, not past Retry-After
        svc.encode(TEXTS[:2])
        assert via_proxy.count("POST") == posts and svc.active_tier in LOCAL
        tier._failed_at = time.monotonic() - 121  # as if the two minutes had passed
        svc.encode(TEXTS[:2])
        assert svc.active_tier == tier.name

        # slow: past timeout_s, the next tier serves; back after the cool-down
        via_proxy.add_fault("delay", "/v1/embeddings", method="POST", seconds=4)
        svc.encode(TEXTS[:2])
        assert svc.active_tier in LOCAL and "no answer within 1.5 s" in tier.reason
        time.sleep(0.3)
        svc.encode(TEXTS[:2])
        assert svc.active_tier == tier.name

        # down: 503 without Retry-After, then up
        via_proxy.down()
        svc.encode(TEXTS[:2])
        assert svc.active_tier in LOCAL
        via_proxy.up()
        time.sleep(0.3)
        svc.encode(TEXTS[:2])
        assert svc.active_tier == tier.name and svc.counters["recoveries"] >= 3

        text = sink.exposition().decode()
        for outcome in ("ok", "http_429", "http_503", "timeout"):
            assert f'modelcache_remote_requests_total{{outcome="{outcome}",tier="{tier.name}"}}' in text, outcome
        assert f'modelcache_remote_request_duration_seconds_count{{tier="{tier.name}"}}' in text
    finally:
        metrics.disable()


def test_the_token_goes_to_its_url_only(infinity: InfinityServer, via_proxy: FaultProxy,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    hub_token = "hf_HubTokenMustNotLeave123"
    monkeypatch.setenv("MODELCACHE_TOKEN", hub_token)
    svc = make_service([remote_entry(via_proxy.endpoint + "/v1", infinity.token)])
    svc.encode(TEXTS[:3])
    assert svc.active_tier.startswith("remote:")
    assert via_proxy.headers and all(h.get("Authorization") == f"Bearer {infinity.token}" for h in via_proxy.headers)
    assert hub_token not in json.dumps(via_proxy.headers)
    assert infinity.token not in json.dumps(svc.status()) + repr(svc.settings) + json.dumps(svc.settings.redacted())

    anonymous = make_service([remote_entry(infinity.url)])  # the server wants a key: 401, next tier
    anonymous.encode(TEXTS[:1])
    assert anonymous.active_tier in LOCAL and "HTTP 401" in remote_tier(anonymous).reason


def test_adapters_take_remote(infinity: InfinityServer) -> None:
    from langchain_modelcache import ManagedEmbeddings
    from llamaindex_modelcache import ManagedEmbedding

    entry = remote_entry(infinity.url, infinity.token)
    lc = ManagedEmbeddings(remote=[entry], offline=True)
    assert infinity.token not in repr(lc)
    assert len(lc.embed_documents(TEXTS[:3])) == 3 and lc.service.active_tier.startswith("remote:")
    li = ManagedEmbedding(remote=[entry], offline=True)
    assert len(li.get_text_embedding(TEXTS[0])) == 384 and li.service.active_tier.startswith("remote:")


# -- answers that are not vectors; TEI's /embed ----------------------------------------------------
class _Stub(LoopbackServer):
    """Speaks /v1/embeddings and /embed with the real bundled model, or a chosen bad answer."""

    def __init__(self, model) -> None:
        super().__init__(_StubHandler, "stub")
        self.model, self.mode, self.requests = model, "good", 0
        self.redirect_to = ""


class _StubHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        stub: _Stub = self.server.stub  # type: ignore[attr-defined]
        stub.requests += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        texts = body["input"] if "input" in body else body["inputs"]
        vectors = stub.model.encode(texts, normalize_embeddings=True).tolist()
        mode = stub.mode
        if mode == "redirect":
            self.send_response(307)
            self.send_header("Location", stub.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "wrong_dims":
            vectors = [v[:100] for v in vectors]
        elif mode == "count":
            vectors = vectors[:-1]
        elif mode in ("nan", "inf"):
            vectors[0][7] = float(mode)
        elif mode == "ragged":
            vectors[-1] = vectors[-1][:5]
        answer = ({"object": "list", "data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)]}
                  if self.path.endswith("/embeddings") else vectors)
        raw = b'{"data": [' if mode == "bad_json" else json.dumps(answer).encode()  # json writes NaN / Infinity
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_files_dir()), device="cpu")


def test_tei_embed_route_with_the_same_model(st_model) -> None:
    with _Stub(st_model) as stub:
        svc = make_service([{"url": stub.endpoint, "model": "all-MiniLM-L6-v2", "api": "tei"}])
        vectors, fingerprint = svc.encode(TEXTS)
        local, local_fp = make_service([]).encode(TEXTS)
        assert svc.active_tier.startswith("remote:") and fingerprint == local_fp
        assert cosines(vectors, local).min() >= 0.999


@pytest.mark.parametrize("mode, reason", [
    ("bad_json", "not JSON"), ("wrong_dims", "100 dims"), ("count", "vectors for"), ("nan", "NaN"),
    ("inf", "NaN or infinite"), ("ragged", "not lists of numbers"), ("redirect", "HTTP 307"),
])
def test_bad_answers_fail_the_tier_cleanly_and_it_recovers(st_model, mode: str, reason: str) -> None:
    with _Stub(st_model) as stub, _Stub(st_model) as elsewhere:
        stub.redirect_to = elsewhere.endpoint
        svc = make_service([remote_entry(stub.endpoint + "/v1", "stub-token")])
        svc.encode(TEXTS[:3])
        fingerprint = svc.fingerprint
        assert svc.active_tier.startswith("remote:")
        stub.mode = mode
        vectors, fp = svc.encode(TEXTS[:3])  # the vectors the caller gets are the next tier's, labelled so
        assert svc.active_tier in LOCAL and fp == fingerprint and np.isfinite(vectors).all()
        assert reason in remote_tier(svc).reason
        assert elsewhere.requests == 0  # a redirect is not followed: the token never goes elsewhere
        stub.mode = "good"
        time.sleep(0.3)
        svc.encode(TEXTS[:3])
        assert svc.active_tier.startswith("remote:")
