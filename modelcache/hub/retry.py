"""Retries with exponential backoff that honour Retry-After (tenacity underneath).

huggingface_hub retries a GET only on 408/429; we also retry 5xx, connection resets and
truncated bodies, and give up at once on answers that will not change (404, 401, 403).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from modelcache.errors import TruncatedBodyError

if TYPE_CHECKING:  # the HTTP stack is imported on first use: a cached load never needs it
    from tenacity import RetryCallState

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

    exc = root_http_error(exc)
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

    def call(self, fn: Callable[[], T], what: str, stats: RetryStats | None = None) -> T:
        from tenacity import Retrying, retry_if_exception, stop_after_attempt

        stats = stats if stats is not None else RetryStats()

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            stats.retries += 1
            stats.waited_s += state.upcoming_sleep
            if status_of(exc) == 429:
                stats.rate_limited += 1
            stats.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            log.warning("%s failed (%s: %s); retry %d/%d in %.1fs", what, type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "", state.attempt_number,
                        self.retries, state.upcoming_sleep)

        def counted() -> T:
            stats.attempts += 1
            return fn()

        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=self._wait,
            retry=retry_if_exception(is_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(counted)
