"""R15: a slow mirror or no network never hangs a pull, and ends in one clean error.

- A mirror that trickles (one byte every 0.5 s: no per-read timeout ever trips) on the file
  bodies, the revision answer or the tree listing: the pull gives it up at its deadline
  (per file: max(``download.file_deadline_min_s``, size / ``download.min_rate_kbps``); per
  metadata request: ``file_deadline_min_s``) and succeeds from the next endpoint. The failover
  time is recorded.
- The pull's own deadline (``download.pull_deadline_s``): spent on a trickling first endpoint,
  the next is not tried, ``DownloadError`` names the setting.
- No network: a host that does not resolve (``.invalid`` never does: no traffic leaves the
  machine) and a refused connection are retried like other transient errors and end in one
  ``DownloadError`` that says which (DNS / refused), valid JSON with ``pull --json``.

Each pull runs in a thread joined with a time bound: on the old code (no deadline) the test
fails at that bound instead of hanging; the trickle itself stops after ``max_seconds``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest
from typer.testing import CliRunner

from modelcache.errors import DownloadError
from tests.reliability import manager, tiny
from tests.support.fault_proxy import FaultProxy
from tests.support.hub import TINY_REPO

TRICKLE = {"interval": 0.5, "step": 1, "max_seconds": 40}
#: fast deadlines for the tiny model: every file gets file_deadline_min_s (10 MB/s minimum rate)
FAST = {"file_deadline_min_s": 1.5, "min_rate_kbps": 80_000}
BOUND_S = 30.0  # a pull that is still running after this has no working deadline


def _bounded(fn, seconds: float = BOUND_S):
    """Run ``fn`` in a thread; (result, exception, seconds). Fails the test if it outlives ``seconds``."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t0 = time.monotonic()
    thread = threading.Thread(target=run, daemon=True, name="r15-pull")
    thread.start()
    thread.join(seconds)
    took = time.monotonic() - t0
    assert not thread.is_alive(), f"the pull was still running after {seconds:.0f} s: no deadline"
    return box.get("result"), box.get("error"), took


@pytest.fixture
def second(hub):
    """A clean proxy in front of the Hub: the good second endpoint, with request times."""
    with FaultProxy(hub.endpoint) as good:
        yield good


@pytest.mark.scenario("R15")
@pytest.mark.parametrize("where", ["/resolve/", "/revision/", "/tree/"], ids=["file", "resolve", "listing"])
def test_a_trickling_mirror_is_given_up_and_the_next_endpoint_serves(where, proxy, second, record_property):
    proxy.add_fault("trickle", path_contains=where, times=50, **TRICKLE)
    mgr = manager([proxy.endpoint, second.endpoint], **FAST)
    t0 = time.monotonic()
    result, error, took = _bounded(lambda: mgr.pull(tiny()))
    assert error is None, error
    assert result.endpoint == second.endpoint and result.commit
    assert mgr.verify(tiny(), full=False).ok
    failover_s = second.times[0] - t0  # the first request that reached the good endpoint
    assert failover_s < 10, failover_s
    assert took < 20, took
    trickled = sum(n for path, n in proxy.bytes_by_path.items() if where in path)
    assert 0 < trickled < 200, trickled  # the trickle was cut off, not waited out
    name = {"/resolve/": "file", "/revision/": "resolve", "/tree/": "listing"}[where]
    record_property(f"failover_s_{name}", round(failover_s, 2))


@pytest.mark.scenario("R15")
def test_a_trickling_file_stops_at_its_deadline_and_the_error_says_so(proxy, record_property):
    proxy.add_fault("trickle", path_contains="/resolve/", times=50, **TRICKLE)
    mgr = manager([proxy.endpoint], **FAST)
    _, error, took = _bounded(lambda: mgr.pull(tiny()))
    assert isinstance(error, DownloadError), error
    why = error.failures[proxy.endpoint]
    assert "DeadlineExceededError" in why and "download.file_deadline_min_s" in why, why
    assert "\n" not in str(error)
    assert took < 1.5 + 8, took  # one file deadline, not retried on the same endpoint (+ the metadata)
    files = [p for m, p, _ in proxy.requests if m == "GET" and "/resolve/" in p]
    assert files and len(files) == len(set(files)), files  # a slow file is not retried on the same endpoint
    record_property("file_deadline_1.5s_gave_up_s", round(took, 2))


@pytest.mark.scenario("R15")
def test_the_pull_deadline_bounds_the_whole_pull(proxy, second, record_property):
    proxy.add_fault("trickle", path_contains="/resolve/", times=50, **TRICKLE)
    # each file would get 60 s; the pull has 2 s in all: the second endpoint is never reached
    mgr = manager([proxy.endpoint, second.endpoint], file_deadline_min_s=60, min_rate_kbps=80_000, pull_deadline_s=2)
    _, error, took = _bounded(lambda: mgr.pull(tiny()))
    assert isinstance(error, DownloadError), error
    assert "download.pull_deadline_s" in error.failures[proxy.endpoint], error.failures
    assert "not tried" in error.failures[second.endpoint], error.failures
    assert second.requests == []
    assert 1.9 < took < 8, took
    record_property("pull_deadline_2s_ended_s", round(took, 2))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on exit: connecting is refused


@pytest.mark.scenario("R15")
def test_no_network_is_retried_and_ends_in_one_clean_error(caplog, record_property):
    dns, refused = "http://nonexistent.invalid", f"http://127.0.0.1:{_closed_port()}"
    mgr = manager([dns, refused], retries=2)
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        _, error, took = _bounded(lambda: mgr.pull(tiny()))
    assert isinstance(error, DownloadError), error
    assert set(error.failures) == {dns, refused}
    assert "DNS" in error.failures[dns] and "refused" in error.failures[refused], error.failures
    assert "\n" not in str(error) and "Traceback" not in str(error)
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert sum(dns in m for m in retries) == 2 and sum(refused in m for m in retries) == 2, retries
    record_property("no_network_fail_s", round(took, 2))


@pytest.mark.scenario("R15")
def test_no_network_then_a_good_endpoint_and_the_cli_json(hub, monkeypatch, tmp_path):
    mgr = manager(["http://nonexistent.invalid", hub.endpoint], retries=1)
    result, error, _ = _bounded(lambda: mgr.pull(tiny()))
    assert error is None and result.endpoint == hub.endpoint

    from modelcache.ops.cli.common import app

    config = tmp_path / "fast.yaml"
    config.write_text("download: {retries: 1, backoff_base: 0.05, backoff_max: 0.2}\n")
    monkeypatch.setenv("MODELCACHE_ENDPOINTS", "http://nonexistent.invalid")
    out = CliRunner().invoke(app, ["pull", TINY_REPO, "--revision", "v1.0", "--json", "--config", str(config)])
    assert out.exit_code == 1, out.output
    data = json.loads(out.stdout)
    assert data["ok"] is False and data["error"] == "DownloadError" and "DNS" in data["message"], data
    assert "Traceback" not in out.output


@pytest.mark.scenario("R15")
def test_the_first_embed_never_waits_on_a_trickling_mirror(proxy, record_property):
    """The caller's thread waits at most fallback.first_load_deadline_s, then the next tier serves; the
    slow load goes on in the background (bounded by its own deadlines)."""
    from modelcache.registry import ModelSpec, Registry
    from modelcache.serving.service import EmbeddingService
    from tests.reliability import settings

    proxy.add_fault("trickle", path_contains="/resolve/", times=50, **TRICKLE)
    cfg = settings([proxy.endpoint], {"fallback": {"first_load_deadline_s": 2.0, "first_try_retries": 0,
                                                   "models": ["keyword"], "strategy": "manual"}},
                   file_deadline_min_s=60, min_rate_kbps=0.001)  # the pull itself would wait a minute
    registry = Registry([ModelSpec(name="tiny", repo_id=TINY_REPO, dims=32, custom=True)])
    service = EmbeddingService(cfg, "tiny", registry=registry, background_recovery=False)
    t0 = time.monotonic()
    vectors, fingerprint = service.encode(["hello"], "query")
    took = time.monotonic() - t0
    record_property("first_embed_s", round(took, 2))
    assert took < 10, f"the first embed waited {took:.1f} s on a trickling mirror"
    assert vectors.shape == (1, 32) and service.active_tier == "keyword"
    preferred = service.status()["tiers"][0]
    assert preferred["ok"] is False and "first_load_deadline_s" in preferred["reason"]
