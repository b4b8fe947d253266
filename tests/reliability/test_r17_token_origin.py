"""R17: tokens stay home, and credentials in an endpoint URL are never shown.

"Another origin" is a second loopback address: a ``FaultProxy`` on 127.0.0.2 in front of the
same Hub, which records the headers of every request it gets.

- A tree listing whose ``Link: rel="next"`` names another origin: refused (not followed without
  the token: refusing is simpler and safer); the other origin gets no request at all, so no
  ``Authorization``; the pull fails over to the next endpoint.
- The token goes only to the Hub endpoint (``HF_ENDPOINT`` here, ``https://huggingface.co``
  by default) unless ``download.token_endpoints`` names the origins that get it; a mirror in
  the endpoint list gets no ``Authorization`` header.
- ``http://user:secret@host`` endpoints: the secret is in no error, warning, log record,
  ``PullResult`` / ``pull --json`` output, or file of the cache.
"""

from __future__ import annotations

import json
import logging
import socket

import pytest
from typer.testing import CliRunner

from modelcache.errors import DownloadError
from modelcache.origins import redact_text, redact_url, token_for
from modelcache.settings import load_settings
from tests.reliability import manager, tiny
from tests.support.fault_proxy import FaultProxy
from tests.support.hub import TINY_REPO

TOKEN = "hf_R17fakeTOKENstaysHOME0123456789abcdef"
SECRET = "pw-R17-s3cr3t"


def _auth(headers: dict[str, str]) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == "authorization"), None)


def _with_token(p: FaultProxy) -> int:
    return sum(1 for h in p.headers if _auth(h))


@pytest.fixture
def foreign(hub):
    """The same Hub on another origin (127.0.0.2)."""
    with FaultProxy(hub.endpoint, host="127.0.0.2") as other:
        yield other


@pytest.mark.scenario("R17")
def test_a_next_link_to_another_origin_is_refused_and_gets_no_token(hub, proxy, foreign, monkeypatch,
                                                                      record_property):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", proxy.endpoint)  # the proxy is "the Hub": it may get the token
    commit = hub.repos[TINY_REPO].head()
    link = f"{foreign.endpoint}/api/models/{TINY_REPO}/tree/{commit}/?cursor=2"
    proxy.add_header("Link", f'<{link}>; rel="next"', path_contains="/tree/")
    with pytest.raises(DownloadError) as err:
        manager([proxy.endpoint]).pull(tiny())
    why = err.value.failures[proxy.endpoint]
    assert "another origin" in why and "127.0.0.2" in why and "bound: same origin" in why, why
    assert TOKEN not in str(err.value)
    assert _with_token(proxy) == len(proxy.requests) > 0  # the token did go home
    assert foreign.requests == []  # refused: not a single request, so no token either

    result = manager([proxy.endpoint, hub.endpoint]).pull(tiny())  # the next endpoint serves
    assert result.endpoint == hub.endpoint
    assert _with_token(foreign) == 0
    record_property("foreign_origin_requests_with_token", _with_token(foreign))
    record_property("foreign_origin_requests", len(foreign.requests))


@pytest.mark.scenario("R17")
@pytest.mark.parametrize("who", ["hf_endpoint", "token_endpoints", "default"])
def test_the_token_goes_only_to_its_endpoint(who, proxy, foreign, monkeypatch, record_property):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    extra = {}
    if who == "hf_endpoint":
        monkeypatch.setenv("HF_ENDPOINT", proxy.endpoint)
    elif who == "token_endpoints":
        extra["token_endpoints"] = [foreign.endpoint]
    foreign.add_fault("503", path_contains="/api/", times=100)  # the mirror is down: retried, then the next
    result = manager([foreign.endpoint, proxy.endpoint], **extra).pull(tiny())
    assert result.endpoint == proxy.endpoint
    home, away = _with_token(proxy), _with_token(foreign)
    assert foreign.requests and proxy.requests
    if who == "hf_endpoint":
        assert (home, away) == (len(proxy.requests), 0)
        assert all(_auth(h) == f"Bearer {TOKEN}" for h in proxy.headers)
    elif who == "token_endpoints":  # the user named the mirror: it gets the token, the unnamed one does not
        assert (home, away) == (0, len(foreign.requests))
    else:  # neither is https://huggingface.co: nobody gets it
        assert (home, away) == (0, 0)
    record_property(f"unlisted_requests_with_token_{who}", away if who != "token_endpoints" else home)


@pytest.mark.scenario("R17")
def test_token_for_and_redaction_units(monkeypatch):
    s = load_settings({"token": TOKEN, "download": {"endpoints": ["http://127.0.0.1:1", "https://huggingface.co"]}})
    assert token_for(s, "https://huggingface.co") == TOKEN
    assert token_for(s, "https://HuggingFace.co:443/") == TOKEN
    assert token_for(s, "http://huggingface.co") is False  # another scheme is another origin
    assert token_for(s, "https://huggingface.co.evil.example") is False
    assert token_for(s, "http://127.0.0.1:1") is False
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    assert token_for(s, "http://127.0.0.1:1") == TOKEN
    assert token_for(load_settings({"token": TOKEN, "download": {"token_endpoints": []}}),
                     "https://huggingface.co") is False
    assert redact_url(f"http://user:{SECRET}@h:1/p?token=abc&x=1") == "http://***@h:1/p?token=***&x=1"
    assert redact_url("http://[::1") == "http://[::1"  # unparseable: shown as is, never raises
    assert redact_url(f"https://a@b:{SECRET}@host/x") == "https://***@host/x"
    assert SECRET not in redact_text(f"failed for url 'http://u:{SECRET}@h/x' and http://v:{SECRET}@k")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.scenario("R17")
def test_credentials_in_an_endpoint_url_are_shown_nowhere(proxy, caplog, monkeypatch, tmp_path, record_property):
    dead = f"http://user:{SECRET}@127.0.0.1:{_closed_port()}"
    good = proxy.endpoint.replace("http://", f"http://user:{SECRET}@")
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG, logger="modelcache"):
        with pytest.raises(DownloadError) as err:
            manager([dead], retries=1).pull(tiny())
        seen += [str(err.value), repr(err.value), json.dumps(err.value.failures)]
        result = manager([dead, good], retries=1).pull(tiny())
        seen += [result.endpoint or "", json.dumps(result.to_dict())]
    assert result.endpoint == redact_url(good) and "***@" in result.endpoint

    from modelcache.ops.cli.common import app

    config = tmp_path / "fast.yaml"
    config.write_text("download: {retries: 1, backoff_base: 0.05, backoff_max: 0.2}\n")
    runner = CliRunner()
    for endpoints in (dead, f"{dead},{good}"):
        monkeypatch.setenv("MODELCACHE_ENDPOINTS", endpoints)
        out = runner.invoke(app, ["pull", TINY_REPO, "--upgrade", "--json", "--config", str(config)])
        json.loads(out.stdout)  # valid JSON either way
        seen.append(out.output)
    seen += [r.getMessage() for r in caplog.records]
    leaks = [text for text in seen if SECRET in text]
    assert leaks == [], leaks[:3]
    store_root = manager([good]).store.root
    files = [p for p in store_root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert files == []
    assert any("***@" in r.getMessage() for r in caplog.records)  # the endpoint was shown, redacted
    record_property("texts_checked_for_url_credentials", len(seen))
