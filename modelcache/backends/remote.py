"""An :class:`~modelcache.backends.base.Encoder` over a remote embedding server (a ``remote:`` entry).

Two wire formats:

- ``api: openai``: ``POST {url}/embeddings`` with ``{"model", "input", "encoding_format": "float"}``,
  the OpenAI-compatible route of infinity, vLLM, text-embeddings-inference, Ollama, LiteLLM...;
  ``url`` is what the OpenAI SDK calls ``base_url`` (``http://host:8000/v1``).
- ``api: tei``: text-embeddings-inference's native ``POST {url}/embed`` with ``{"inputs", "truncate": true}``.

What the client guarantees:

- the entry's token goes as ``Authorization: Bearer`` to that URL only: redirects are not followed
  (a 3xx is a failure), and no other credential (the Hub token) is ever sent;
- at most ``batch_size`` texts per request; ``timeout_s`` bounds each request as a whole (connect,
  every read, and the full answer, checked between reads: a server that trickles is cut off);
- 429 / 503: a ``Retry-After`` that fits in what is left of ``timeout_s`` is waited for and the request
  sent once more; otherwise :class:`~modelcache.errors.RemoteEmbeddingError` carries the wait
  (``retry_after``), so the chain moves on and does not come back before it;
- the answer must be exactly one finite vector of ``dims`` numbers per text (dims learnt from the
  first answer when not given): bad JSON, a wrong count, wrong dims, NaN or infinite values raise
  :class:`~modelcache.errors.RemoteEmbeddingError`. Vectors are L2-normalised when ``normalize``.

Every request is counted in :func:`modelcache.metrics.observe_remote` (by tier and outcome).
"""

from __future__ import annotations

import email.utils
import json
import math
import threading
import time
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from modelcache import metrics
from modelcache.errors import RemoteEmbeddingError
from modelcache.origins import redact_url
from modelcache.settings import RemoteSection

#: the most bytes one answer may have (a hostile server that never stops is cut off)
MAX_ANSWER_BYTES = 256 * 1024 * 1024
#: the longest Retry-After honoured as a cool-down (a server asking for a day gets an hour)
MAX_RETRY_AFTER_S = 3600.0


def _httpx() -> ModuleType:
    """The httpx module huggingface_hub is built on (``httpx2`` for 2.x, ``httpx`` for 1.x): the one
    that is surely installed (see ``modelcache.hub.http``; serving and backends do not import hub)."""
    try:
        from huggingface_hub.utils import httpx as alias
    except ImportError:
        import httpx

        return httpx
    return alias


def server_label(cfg: RemoteSection) -> str:
    """``remote:<host[:port]>/<model>``: the tier's name, and its fingerprint when it is its own space."""
    parts = urlsplit(cfg.url)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    return f"remote:{host}{f':{parts.port}' if parts.port else ''}/{cfg.model}"


def endpoint_of(cfg: RemoteSection) -> str:
    """The URL the vectors are POSTed to."""
    route = "/embeddings" if cfg.api == "openai" else "/embed"
    return cfg.url if cfg.url.endswith(route) else cfg.url + route


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class RemoteEncoder:
    """Vectors from one remote server (see the module docstring); thread-safe (one pooled client)."""

    backend = "remote"
    degraded = False

    def __init__(self, cfg: RemoteSection, *, dims: int | None = None, fingerprint: str | None = None,
                 normalize: bool = True, query_prompt: str | None = None, document_prompt: str | None = None):
        self.cfg = cfg
        self.name = server_label(cfg)
        self.url = endpoint_of(cfg)
        self.shown_url = redact_url(self.url)
        self.dims = dims or 0
        self.fingerprint = fingerprint or self.name
        self.normalize = normalize
        self.prompts = {"query": query_prompt or "", "document": document_prompt or ""}
        http = self._http = _httpx()
        self._client = http.Client(timeout=http.Timeout(cfg.timeout_s), follow_redirects=False)
        self._lock = threading.Lock()
        self.requests = 0

    def close(self) -> None:
        self._client.close()

    # -- the Encoder protocol ---------------------------------------------------------------
    def encode(self, texts: list[str], kind: str = "document") -> np.ndarray:
        prompt = self.prompts.get(kind, "")
        batch = self.cfg.batch_size
        parts = [self._request([prompt + t for t in texts[i:i + batch]]) for i in range(0, len(texts), batch)]
        if not parts:
            return np.zeros((0, self.dims), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    # -- one request ------------------------------------------------------------------------
    def _payload(self, texts: list[str]) -> dict[str, Any]:
        if self.cfg.api == "openai":
            return {"model": self.cfg.model, "input": texts, "encoding_format": "float"}
        return {"inputs": texts, "truncate": True}

    def _request(self, texts: list[str]) -> np.ndarray:
        deadline = time.monotonic() + self.cfg.timeout_s
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.cfg.token is not None:
            headers["Authorization"] = f"Bearer {self.cfg.token.get_secret_value()}"
        body = json.dumps(self._payload(texts)).encode("utf-8")
        for attempt in (0, 1):
            started = time.monotonic()
            status, raw, retry_after = self._post(body, headers, deadline, started)
            if status in (429, 503) and attempt == 0 and retry_after is not None \
                    and time.monotonic() + retry_after < deadline:
                self._observe(f"http_{status}", started)
                time.sleep(retry_after)  # the server asked for a short wait that fits in the deadline
                continue
            if status != 200:
                self._observe(f"http_{status}", started)
                detail = raw[:200].decode("utf-8", "replace").strip()
                wait = f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""
                raise RemoteEmbeddingError(self.shown_url, f"HTTP {status}{wait}: {detail}", retry_after)
            try:
                vectors = self._vectors(raw, len(texts))
            except RemoteEmbeddingError:
                self._observe("invalid", started)
                raise
            self._observe("ok", started)
            return vectors
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _observe(self, outcome: str, started: float) -> None:
        with self._lock:
            self.requests += 1
        metrics.observe_remote(self.name, outcome, time.monotonic() - started)

    def _post(self, body: bytes, headers: dict[str, str], deadline: float,
              started: float) -> tuple[int, bytes, float | None]:
        http = self._http
        try:
            with self._client.stream("POST", self.url, content=body, headers=headers) as response:
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        self._observe("invalid", started)
                        raise RemoteEmbeddingError(self.shown_url, f"answer over {MAX_ANSWER_BYTES:,} bytes")
                    if time.monotonic() > deadline:
                        raise http.ReadTimeout("the answer did not arrive within timeout_s")
                return (response.status_code, b"".join(chunks),
                        parse_retry_after(response.headers.get("Retry-After")))
        except http.TimeoutException as exc:
            self._observe("timeout", started)
            raise RemoteEmbeddingError(self.shown_url, f"no answer within {self.cfg.timeout_s:g} s "
                                       f"(timeout_s; {type(exc).__name__})") from None
        except http.HTTPError as exc:
            self._observe("unreachable", started)
            raise RemoteEmbeddingError(self.shown_url, f"unreachable ({type(exc).__name__}: {exc})") from None

    def _vectors(self, raw: bytes, count: int) -> np.ndarray:
        def bad(problem: str) -> RemoteEmbeddingError:
            return RemoteEmbeddingError(self.shown_url, problem)

        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise bad("the answer is not JSON") from None
        if self.cfg.api == "openai":
            items = data.get("data") if isinstance(data, dict) else None
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise bad("the answer has no 'data' list of embeddings (is api: openai right?)")
            if all(isinstance(i.get("index"), int) for i in items):
                items = sorted(items, key=lambda i: i["index"])
            rows = [i.get("embedding") for i in items]
        else:
            if not isinstance(data, list):
                raise bad("the answer is not a list of vectors (is api: tei right?)")
            rows = data
        if len(rows) != count:
            raise bad(f"{len(rows)} vectors for {count} texts")
        try:
            vectors = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            raise bad("the vectors are not lists of numbers of one length") from None
        if vectors.ndim != 2 or vectors.shape[1] == 0:
            raise bad(f"the vectors have shape {vectors.shape}")
        if self.dims and vectors.shape[1] != self.dims:
            raise bad(f"{vectors.shape[1]} dims, expected {self.dims} (another model behind the URL?)")
        if not np.isfinite(vectors).all():
            raise bad("the vectors hold NaN or infinite values")
        if self.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            if (norms == 0).any():
                raise bad("a vector is all zeros")
            vectors = vectors / norms
        self.dims = self.dims or int(vectors.shape[1])
        return vectors

    def __repr__(self) -> str:
        return f"RemoteEncoder({self.name!r}, api={self.cfg.api!r}, url={self.shown_url!r})"
