"""R1 (the forms test_pull.py does not cover): Retry-After as an HTTP date is honoured; a
malformed or NaN Retry-After falls back to our own backoff instead of crashing the retry loop."""

from __future__ import annotations

import email.utils
import time
from types import SimpleNamespace

import pytest

from modelcache.hub.retry import MAX_RETRY_AFTER_S, retry_after_of
from tests.reliability import manager, tiny


def _answer(value: str) -> Exception:
    exc = Exception("429")
    exc.response = SimpleNamespace(headers={"Retry-After": value}, status_code=429)  # type: ignore[attr-defined]
    return exc


@pytest.mark.scenario("R1")
def test_retry_after_forms():
    assert retry_after_of(_answer("3")) == 3.0
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_of(_answer(soon)) <= 30
    assert retry_after_of(_answer("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0  # in the past: go now
    assert retry_after_of(_answer("999999")) == MAX_RETRY_AFTER_S  # capped
    assert retry_after_of(_answer("-4")) == 0.0
    for junk in ("nan", "soon", "", "Mon, 99 Foo 9999 99:99:99 GMT"):
        assert retry_after_of(_answer(junk)) is None, junk  # our own backoff


@pytest.mark.scenario("R1")
def test_http_date_retry_after_is_waited_for_and_nan_does_not_crash(proxy, record_property):
    when = email.utils.formatdate(time.time() + 2.5, usegmt=True)  # second resolution: 1.5-2.5 s away
    proxy.add_fault("429", path_contains="/tree/", times=1, retry_after=when)
    proxy.add_fault("429", path_contains="/revision/", times=1, retry_after="nan")
    t0 = time.perf_counter()
    result = manager([proxy.endpoint]).pull(tiny())
    seconds = time.perf_counter() - t0
    assert result.stats.rate_limited == 2
    assert result.stats.waited_s >= 1.4 and seconds >= 1.4
    record_property("rate_limited", result.stats.rate_limited)
    record_property("waited_s", round(result.stats.waited_s, 2))
