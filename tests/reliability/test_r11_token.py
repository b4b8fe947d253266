"""R11: an HF token is sent to the Hub and shown nowhere else.

With ``HF_TOKEN`` / ``MODELCACHE_TOKEN`` set to a recognisable fake secret, pulls meet 503, 401
and a missing repo through the fault proxy. The token must be in the ``Authorization`` header of
the requests, and in none of: every log record (all loggers at DEBUG), every exception (message,
repr, chained traceback), stdout/stderr, ``config show``, ``doctor``, ``status``, the metrics
exposition, an exported bundle, or any file of the cache.
"""

from __future__ import annotations

import gzip
import logging
import traceback
import warnings

import pytest
from typer.testing import CliRunner

from modelcache.errors import ModelCacheError
from modelcache.settings import load_settings
from tests.reliability import manager, tiny

TOKEN = "hf_R11fakeSECRETtokenDoNotLeak0123456789"
LOGGERS = ("", "modelcache", "huggingface_hub", "httpx", "httpx2", "httpcore", "urllib3", "filelock", "tests")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.records.append(f"{record.name}: {text}")


@pytest.fixture
def all_logs():
    handler = _Capture()
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    root = logging.getLogger()
    root.addHandler(handler)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _exception_text(exc: BaseException) -> str:
    return str(exc) + "\n" + repr(exc) + "\n" + "".join(traceback.format_exception(exc))


def _authorization(headers: dict[str, str]) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == "authorization"), None)


@pytest.mark.scenario("R11")
@pytest.mark.parametrize("variable", ["HF_TOKEN", "MODELCACHE_TOKEN"])
def test_token_is_sent_and_appears_nowhere_else(variable, proxy, hub, all_logs, monkeypatch, tmp_path, capsys,
                                                record_property, request):
    monkeypatch.setenv(variable, TOKEN)
    monkeypatch.setenv("MODELCACHE_ENDPOINTS", proxy.endpoint)
    monkeypatch.setenv("HF_ENDPOINT", proxy.endpoint)  # the token goes to the Hub endpoint only
    seen: list[str] = []
    metrics = pytest.importorskip("modelcache.metrics")
    try:
        m = metrics.enable()
    except ModelCacheError:
        m = None  # prometheus_client missing: BackendUnavailableError, nothing to expose
    else:
        request.addfinalizer(metrics.disable)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # 503s (retried), then a 401 on the listing: this endpoint fails
        proxy.add_fault("503", path_contains="/api/models/", times=2)
        proxy.add_fault("401", path_contains="/tree/", times=1)
        mgr = manager([proxy.endpoint])
        assert mgr.settings.token_value == TOKEN
        with pytest.raises(ModelCacheError) as failed:
            mgr.pull(tiny())
        seen.append(_exception_text(failed.value))
        # a repo the Hub does not have (olah answers 401), and a 401 on the weights
        with pytest.raises(ModelCacheError) as missing:
            mgr.pull(tiny(repo_id="nobody/nothing-here"))
        seen.append(_exception_text(missing.value))
        proxy.add_fault("401", path_contains="model.safetensors", times=1)
        with pytest.raises(ModelCacheError) as weights:
            mgr.pull(tiny())
        seen.append(_exception_text(weights.value))
        result = mgr.pull(tiny())  # and finally a good pull
        assert mgr.verify(tiny(), full=True).ok
    seen += [str(w.message) for w in caught]

    # the token did go to the server, on metadata and on the file downloads
    sent = [(p, _authorization(h)) for (m_, p, _), h in zip(proxy.requests, proxy.headers)]
    assert sent and all(auth == f"Bearer {TOKEN}" for _, auth in sent), [a for a in sent if a[1] != f"Bearer {TOKEN}"]
    assert any("model.safetensors" in p for p, _ in sent) and any("/tree/" in p for p, _ in sent)

    # command line: config show, doctor (with the endpoint answering 401 once), status
    from modelcache.ops.cli.common import app

    runner = CliRunner()
    proxy.add_fault("401", path_contains="/api/models/", times=1)
    outputs = {}
    for args in (["config", "show", "--json"], ["config", "show"], ["doctor", "--json", "--no-load"],
                 ["doctor", "--no-load"], ["status", "--json"], ["info", "tiny-org/tiny-st", "--json"]):
        out = runner.invoke(app, args)
        outputs[" ".join(args)] = out.output
        seen.append(out.output + (_exception_text(out.exception) if out.exception and not isinstance(
            out.exception, SystemExit) else ""))
    assert '"token": "***"' in outputs["config show --json"]
    assert "present" in outputs["doctor --json --no-load"]

    if m is not None:
        seen.append(m.exposition().decode())
    bundle_mod = pytest.importorskip("modelcache.ops.bundle")
    bundle = tmp_path / "tiny.tar.gz"
    bundle_mod.export_bundle(mgr, tiny(), bundle)
    bundle_bytes = gzip.decompress(bundle.read_bytes())

    settings = load_settings()
    seen += [repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump()),
             str(settings.redacted())]
    captured = capsys.readouterr()
    seen += [captured.out, captured.err]
    seen += all_logs
    assert any("503" in r for r in all_logs) and any("401" in r for r in all_logs)  # the failures were logged
    assert any(r.startswith(("httpx", "httpcore", "huggingface_hub", "filelock")) for r in all_logs)  # DEBUG too
    leaks = [text for text in seen if TOKEN in text]
    assert leaks == [], leaks[:3]
    assert TOKEN.encode() not in bundle_bytes
    cache_files = [p for p in mgr.store.root.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert cache_files == []
    assert result.commit
    record_property("requests_with_token", len(sent))
    record_property("log_records_checked", len(all_logs))
    record_property("texts_checked", len(seen))


@pytest.mark.scenario("R11")
def test_a_bad_token_setting_is_reported_without_its_value(monkeypatch):
    from modelcache.errors import ConfigError

    for bad in ([TOKEN], {"value": TOKEN}, 12345):
        with pytest.raises(ConfigError) as err:
            load_settings({"token": bad})
        assert err.value.key == "token" and TOKEN not in str(err.value) and "12345" not in str(err.value)
