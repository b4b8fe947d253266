"""Deadlines for network work: a slow server must not hold a pull forever.

httpx timeouts are per read: a server that sends one byte every half second never trips them.
So every request of a pull runs under a :class:`Deadline` checked between reads:

    pull            download.pull_deadline_s, the whole pull over every endpoint
    └── endpoint    one endpoint's try (aborted when a parallel file of it failed)
        ├── request each metadata request (resolve, one listing page): download.file_deadline_min_s
        └── file    each file: max(download.file_deadline_min_s, size / download.min_rate_kbps)

A deadline passed raises :class:`DeadlineExceededError` (a ``TimeoutError``, so an ``OSError``),
which the retry policy does **not** retry: the pull records it for this endpoint and moves on
to the next one (or, once the pull's own deadline is spent, stops with ``DownloadError``).
The overshoot past a deadline is at most one read timeout (a server silent for that long).
"""

from __future__ import annotations

import math
import threading
import time

from modelcache.errors import DeadlineExceededError, ModelCacheError

#: the most of an error answer's body read (for its message): a hostile 503 may never end
MAX_ERROR_BODY = 64 * 1024


class TransferAbortedError(DeadlineExceededError):
    """Another file of the same try failed: this one stops too (the endpoint is given up)."""

    def __init__(self, what: str, reason: str):
        ModelCacheError.__init__(self, f"{what}: stopped, {reason}")
        self.what, self.seconds, self.setting, self.detail = what, 0.0, "", reason


class Deadline:
    """A point in time (monotonic) by which some work must be done, nested in a parent's."""

    def __init__(self, seconds: float | None, what: str, setting: str = "", parent: Deadline | None = None,
                 hint: str | None = None):
        self.seconds = math.inf if seconds is None else max(0.0, float(seconds))
        self.what, self.setting, self.parent, self.hint = what, setting, parent, hint
        self.started = time.monotonic()
        self.at = self.started + self.seconds
        self._aborted: str | None = None
        self._lock = threading.Lock()

    def child(self, seconds: float | None, what: str, setting: str = "", hint: str | None = None) -> Deadline:
        return Deadline(seconds, what, setting, parent=self, hint=hint)

    def remaining(self) -> float:
        """Seconds left on this deadline and every enclosing one (0 when passed; inf when none)."""
        now, left = time.monotonic(), math.inf
        node: Deadline | None = self
        while node is not None:
            left = min(left, node.at - now)
            node = node.parent
        return max(0.0, left)

    def expired(self) -> bool:
        try:
            self.check()
        except DeadlineExceededError:
            return True
        return False

    def abort(self, reason: str) -> None:
        """Make every later :meth:`check` of this deadline (and its children) raise."""
        with self._lock:
            self._aborted = self._aborted or reason

    def check(self, detail: str = "") -> None:
        """Raise :class:`DeadlineExceededError` for the first deadline of the chain that passed
        (the innermost first), or :class:`TransferAbortedError` if one was aborted."""
        now = time.monotonic()
        node: Deadline | None = self
        while node is not None:
            if node._aborted:
                raise TransferAbortedError(self.what, node._aborted)
            if now >= node.at:
                raise DeadlineExceededError(node.what if node is self else f"{self.what} ({node.what})",
                                            node.seconds, node.setting, detail, node.hint)
            node = node.parent


def read_timeout(deadline: Deadline | None, configured: float) -> float:
    """The per-read timeout of a request: never longer than what is left of its deadline."""
    if deadline is None:
        return configured
    return max(0.05, min(configured, deadline.remaining()))


def raise_for_status(response, deadline: Deadline | None) -> None:
    """``hf_raise_for_status`` for a streamed response, reading at most :data:`MAX_ERROR_BODY`
    bytes of an error body and never past ``deadline`` (huggingface_hub reads it all)."""
    from huggingface_hub.utils import hf_raise_for_status

    if response.status_code < 400:
        hf_raise_for_status(response)
        return
    body = bytearray()
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= MAX_ERROR_BODY or (deadline is not None and deadline.expired()):
                break
    except Exception:  # noqa: BLE001 - the status is what matters; the body only adds detail
        pass
    response._content = bytes(body[:MAX_ERROR_BODY])  # what .read() would have set: hf's message reads it
    hf_raise_for_status(response)


__all__ = ["Deadline", "DeadlineExceededError", "TransferAbortedError", "raise_for_status", "read_timeout"]
