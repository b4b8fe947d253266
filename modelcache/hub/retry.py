"""Retries with exponential backoff that honour Retry-After (tenacity underneath).

huggingface_hub retries a GET only on 408/429; we also retry 5xx, connection resets and
truncated bodies, and network failures (DNS, connection refused), and give up at once on
answers that will not change (404, 401, 403) and on a deadline passed (the endpoint is too slow:
the pull moves on to the next one, see :mod:`modelcache.hub.deadline`). With a deadline, no retry
waits past it.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from modelcache.errors import TruncatedBodyError
from modelcache.hub.deadline import DeadlineExceededError
from modelcache.origins import redact_text

if TYPE_CHECKING:  # the HTTP stack is imported on first use: a cached load never needs it
    from tenacity import RetryCallState

    from modelcache.hub.deadline import Deadline

log = logging.getLogger("modelcache")
T = TypeVar("T")

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 300.0


def root_http_error(exc: BaseException) -> BaseException:
    """huggingface_hub wraps a failed HEAD in ValueError/FileMetadataError: find the HTTP cause."""
    from modelcache.hub.http import httpx

    http = httpx()

    seen = 0
    while (exc is not None and seen < 5 and getattr(exc, "response", None) is None
           and not isinstance(exc, (http.HTTPError, ConnectionError, TimeoutError))):
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc, seen = nxt, seen + 1
    return exc


def status_of(exc: BaseException | None) -> int | None:
    if exc is None:
        return None
    response = getattr(root_http_error(exc), "response", None)
    return getattr(response, "status_code", None)


def retry_after_of(exc: BaseException) -> float | None:
    response = getattr(root_http_error(exc), "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:  # the other form RFC 9110 allows: an HTTP date
        import email.utils
        import time

        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None  # unparseable: fall back to our own backoff
    if seconds != seconds:  # NaN from a hostile or broken server: our own backoff
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def is_retryable(exc: BaseException) -> bool:
    from modelcache.hub.http import httpx

    http = httpx()
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, DeadlineExceededError):
        return False  # too slow: the next endpoint, not the same one again
    exc = root_http_error(exc)
    if isinstance(exc, DeadlineExceededError):
        return False
    if isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError, OfflineModeIsEnabled)):
        return False
    if isinstance(exc, HfHubHTTPError):
        status = status_of(exc)
        return status is None or status in RETRY_STATUS
    if isinstance(exc, (http.TransportError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, TruncatedBodyError):
        return True
    # huggingface_hub's own downloads raise a plain OSError when a body ends short of its Content-Length
    return isinstance(exc, OSError) and "Consistency check failed" in str(exc)


def describe(exc: BaseException) -> str:
    """One line for a failure, URLs redacted; a DNS failure or a refused connection says so."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 8:
        if isinstance(cause, socket.gaierror):
            text = f"DNS lookup failed, the host name does not resolve ({text or cause})"
            break
        if isinstance(cause, ConnectionRefusedError):
            text = f"connection refused, nothing listens there ({text or cause})"
            break
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return redact_text(f"{type(exc).__name__}: {text}")[:300]


@dataclass
class RetryStats:
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    waited_s: float = 0.0
    bytes_received: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class RetryPolicy:
    retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        told = retry_after_of(exc) if exc else None
        if told is not None:
            return told
        delay = min(self.backoff_max, self.backoff_base * 2 ** (state.attempt_number - 1))
        return delay * (0.5 + random.random() / 2)  # jitter: never all clients at once

    def call(self, fn: Callable[[], T], what: str, stats: RetryStats | None = None,
             deadline: Deadline | None = None) -> T:
        """``fn()`` with retries; with ``deadline``, a retry that would wait past it is not made
        (the last error is raised)."""
        from tenacity import Retrying, retry_if_exception

        what = redact_text(what)
        stats = stats if stats is not None else RetryStats()

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            stats.retries += 1
            stats.waited_s += state.upcoming_sleep
            if status_of(exc) == 429:
                stats.rate_limited += 1
            stats.errors.append(redact_text(f"{type(exc).__name__}: {exc}")[:300])
            log.warning("%s failed (%s); retry %d/%d in %.1fs", what, describe(exc)[:240] if exc else "",
                        state.attempt_number, self.retries, state.upcoming_sleep)

        def stop(state: RetryCallState) -> bool:  # out of attempts, or the wait would pass the deadline
            return state.attempt_number >= self.retries + 1 or (
                deadline is not None and deadline.remaining() <= state.upcoming_sleep)

        def counted() -> T:
            stats.attempts += 1
            return fn()

        retrying = Retrying(
            stop=stop,
            wait=self._wait,
            retry=retry_if_exception(is_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(counted)
