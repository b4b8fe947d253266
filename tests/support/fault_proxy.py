"""A fault-injecting reverse proxy for tests, in front of the local Hub.

huggingface_hub 2.4 talks through httpx2, which respx cannot intercept, so faults are
injected on the wire: ``FaultProxy`` listens on 127.0.0.1, forwards every request to the
upstream (streaming the body, keeping X-Repo-Commit, ETag, X-Linked-*, Content-Length) and
rewrites upstream redirects so that the follow-up request comes back through the proxy.

Fault kinds (``add_fault``), with their options:

- ``"429"`` (``retry_after``): 429 Too Many Requests, upstream not contacted.
- ``"503"``: 503 Service Unavailable; any other 4xx/5xx code given as a string works too.
- ``"reset"`` (``at``): 200, the full Content-Length, part of the body, then a TCP RST.
- ``"truncate"`` (``at``): 200, the full Content-Length, part of the body, then a clean close.
- ``"corrupt"`` (``offset``): 200, the right length, one byte flipped.
- ``"wrong_size"`` (``extra``): 200, the body plus ``extra`` zero bytes (Content-Length says so).
- ``"delay"`` (``seconds``): waits, then passes the request through.
- ``"trickle"`` (``interval``, ``step``, ``max_seconds``): 200, the full Content-Length, then
  ``step`` bytes (default 1) every ``interval`` seconds (default 0.5): a mirror that never trips
  a per-read timeout. Stops when the body is sent, the client goes away, or after
  ``max_seconds`` (default 120).

Like the real Hub's CDN (and unlike olah), the proxy honours ``Range: bytes=N-`` on GET with a
206 answer (``serve_ranges``), and can slow bodies down (``throttle_bps``) so a test can kill a
client mid-download; ``bytes_sent`` counts body bytes sent to clients.

Body faults only fire on 200 answers to non-HEAD requests; ``at`` / ``offset`` default to
the middle of the body. ``down()`` answers 503 to everything until ``up()``.

``add_header(name, value, path_contains)`` adds a header to the answers of matching requests
(e.g. a ``Link: <...>; rel="next"`` on tree listings). ``FaultProxy(upstream, host="127.0.0.2")``
listens on another loopback address (another origin for the same Hub).
"""

from __future__ import annotations

import http.client
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)

BODY_FAULTS = frozenset({"reset", "truncate", "corrupt", "wrong_size", "trickle"})
FAULT_KINDS = frozenset({"429", "503", "delay"}) | BODY_FAULTS
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
CHUNK = 64 * 1024


@dataclass
class Fault:
    """One fault rule; ``hits`` counts the requests it has hit so far."""

    kind: str
    path_contains: str = ""
    times: int = 1
    method: str | None = "GET"
    opts: dict[str, Any] = field(default_factory=dict)
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule still applies to a request."""
        return (
            self.hits < self.times
            and (self.method in (None, "*") or self.method.upper() == method)
            and self.path_contains in path
        )


class FaultProxy:
    """Reverse proxy to ``upstream`` with injectable faults and a request log."""

    def __init__(self, upstream: str, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        if not host.startswith("127."):
            raise ValueError(f"the proxy listens on loopback only, not {host!r}")
        self.host = host
        self.upstream = upstream.rstrip("/")
        self.upstream_netloc = parts.netloc
        self.timeout = timeout
        self.requests: list[tuple[str, str, int]] = []
        #: the request headers of each logged request, in the same order as ``requests``
        self.headers: list[dict[str, str]] = []
        #: when each logged request was answered (``time.monotonic()``), same order as ``requests``
        self.times: list[float] = []
        self.faults: list[Fault] = []
        #: (path_contains, header name, value) added to the answers of matching requests
        self.extra_headers: list[tuple[str, str, str]] = []
        self._down = False
        self.serve_ranges = True
        self.throttle_bps: float = 0.0
        self.bytes_sent = 0
        self.bytes_by_path: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """Base URL of the proxy, e.g. ``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("FaultProxy is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        """Listen on a free port of ``host`` (127.0.0.1) and serve in a daemon thread."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, 0), _Handler)
        server.daemon_threads = True
        server.proxy = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-proxy", daemon=True
        )
        self._thread.start()
        logger.debug("fault proxy %s -> %s", self.endpoint, self.upstream)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_fault(
        self,
        kind: str,
        path_contains: str = "",
        times: int = 1,
        method: str | None = "GET",
        **opts: Any,
    ) -> Fault:
        """Make the next ``times`` matching requests fail with ``kind``; return the rule.

        ``method=None`` or ``"*"`` matches every method. Rules are tried in order.
        """
        kind = str(kind)
        if kind not in FAULT_KINDS and not (kind.isdigit() and 400 <= int(kind) <= 599):
            raise ValueError(f"unknown fault kind {kind!r}; use one of {sorted(FAULT_KINDS)}")
        fault = Fault(kind, path_contains, times, method, dict(opts))
        with self._lock:
            self.faults.append(fault)
        return fault

    def add_header(self, name: str, value: str, path_contains: str = "") -> None:
        """Add ``name: value`` to the answers of requests whose path contains ``path_contains``."""
        with self._lock:
            self.extra_headers.append((path_contains, name, value))

    def headers_for(self, path: str) -> dict[str, str]:
        with self._lock:
            return {name: value for contains, name, value in self.extra_headers if contains in path}

    def down(self) -> None:
        """Answer 503 to every request (the mirror is down) until ``up()``."""
        self._down = True

    def up(self) -> None:
        """Undo ``down()``."""
        self._down = False

    def reset(self) -> None:
        """Forget faults and logged requests, and come back up."""
        with self._lock:
            self.faults.clear()
            self.extra_headers.clear()
            self.requests.clear()
            self.headers.clear()
            self.times.clear()
            self.bytes_sent = 0
            self.bytes_by_path.clear()
        self._down = False
        self.throttle_bps = 0.0

    def count(self, method: str | None = None, path_contains: str = "") -> int:
        """How many logged requests match ``method`` (any if None) and ``path_contains``."""
        with self._lock:
            return sum(
                1
                for m, p, _ in self.requests
                if (method is None or m == method) and path_contains in p
            )

    def _take_fault(self, method: str, path: str, body_fault: bool) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if (fault.kind in BODY_FAULTS) == body_fault and fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _log(self, method: str, path: str, status: int, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self.requests.append((method, path, status))
            self.headers.append(dict(headers or {}))
            self.times.append(time.monotonic())

    def _rewrite_location(self, location: str) -> str:
        parts = urlsplit(location)
        if parts.netloc != self.upstream_netloc:
            return location
        return urlunsplit(parts._replace(netloc=urlsplit(self.endpoint).netloc))


class _Handler(BaseHTTPRequestHandler):
    """Forwards one request to the upstream, applying the proxy's fault rules."""

    protocol_version = "HTTP/1.1"
    server_version = "FaultProxy"

    @property
    def proxy(self) -> FaultProxy:
        return self.server.proxy  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("proxy: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET  # noqa: N815

    def _handle(self) -> None:
        self.close_connection = True
        proxy, method, path = self.proxy, self.command, self.path
        try:
            if proxy._down:
                self._send_error(503, "mirror down (FaultProxy.down())")
                return
            fault = proxy._take_fault(method, path, body_fault=False)
            if fault is not None and fault.kind == "delay":
                time.sleep(float(fault.opts.get("seconds", 1.0)))
            elif fault is not None:
                self._send_status_fault(fault)
                return
            self._forward(method, path)
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("client went away during %s %s", method, path)

    def _send_status_fault(self, fault: Fault) -> None:
        headers = {}
        if "retry_after" in fault.opts:
            headers["Retry-After"] = str(fault.opts["retry_after"])
        self._send_error(int(fault.kind), f"injected {fault.kind}", headers)

    def _send_error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = f'{{"error": "{message}"}}'.encode()
        self.proxy._log(self.command, self.path, status, dict(self.headers))
        self.send_response_only(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, method: str, path: str) -> None:
        proxy = self.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = urlsplit(proxy.upstream)
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=proxy.timeout)
        try:
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
            except OSError as exc:
                self._send_error(502, f"upstream unreachable: {exc}")
                return
            out_headers = [
                (k, proxy._rewrite_location(v) if k.lower() == "location" else v)
                for k, v in resp.getheaders()
                if k.lower() not in HOP_BY_HOP
            ]
            fault = None
            if resp.status == 200 and method != "HEAD":
                fault = proxy._take_fault(method, path, body_fault=True)
            if fault is not None:
                self._send_body_fault(fault, resp, out_headers)
            else:
                self._pass_through(resp, out_headers)
        finally:
            conn.close()

    def _start(self, status: int, reason: str, headers: list[tuple[str, str]], extra: dict[str, str]) -> None:
        self.proxy._log(self.command, self.path, status, dict(self.headers))
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        for name, value in extra.items():
            self.send_header(name, value)
        for name, value in self.proxy.headers_for(self.path).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()

    def _write_body(self, data: bytes) -> None:
        """Send body bytes, throttled if asked, counting them."""
        proxy = self.proxy
        for i in range(0, len(data), CHUNK):
            piece = data[i : i + CHUNK]
            self.wfile.write(piece)
            with proxy._lock:
                proxy.bytes_sent += len(piece)
                proxy.bytes_by_path[self.path] = proxy.bytes_by_path.get(self.path, 0) + len(piece)
            if proxy.throttle_bps:
                time.sleep(len(piece) / proxy.throttle_bps)

    def _range_start(self) -> int | None:
        value = self.headers.get("Range", "")
        if not (self.proxy.serve_ranges and value.startswith("bytes=") and value.endswith("-")):
            return None
        try:
            return int(value[len("bytes=") : -1])
        except ValueError:
            return None

    def _pass_through(self, resp: http.client.HTTPResponse, headers: list[tuple[str, str]]) -> None:
        length = resp.getheader("Content-Length")
        if self.command == "HEAD" or resp.status in (204, 304):
            self._start(resp.status, resp.reason, headers, {"Content-Length": length} if length else {})
            return
        start = self._range_start() if resp.status == 200 and self.command == "GET" else None
        if start is not None or self.proxy.throttle_bps:
            body = resp.read()
            if start is not None and 0 < start < len(body):
                extra = {"Content-Length": str(len(body) - start),
                         "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
                self._start(206, "Partial Content", headers, extra)
                self._write_body(body[start:])
                return
            self._start(resp.status, resp.reason, headers, {"Content-Length": str(len(body))})
            self._write_body(body)
            return
        if length is not None:
            self._start(resp.status, resp.reason, headers, {"Content-Length": length})
            while chunk := resp.read(CHUNK):
                self._write_body(chunk)
            return
        self._start(resp.status, resp.reason, headers, {"Transfer-Encoding": "chunked"})
        while chunk := resp.read(CHUNK):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            with self.proxy._lock:
                self.proxy.bytes_sent += len(chunk)
        self.wfile.write(b"0\r\n\r\n")

    def _send_body_fault(
        self, fault: Fault, resp: http.client.HTTPResponse, headers: list[tuple[str, str]]
    ) -> None:
        body = resp.read()
        size, opts = len(body), fault.opts
        logger.info("injecting %s into %s %s (%d bytes)", fault.kind, self.command, self.path, size)
        if fault.kind == "corrupt":
            offset = int(opts.get("offset", size // 2))
            body = body[:offset] + bytes([body[offset] ^ 0xFF]) + body[offset + 1 :]
        elif fault.kind == "wrong_size":
            body += b"\0" * int(opts.get("extra", 16))
        self._start(resp.status, resp.reason, headers, {"Content-Length": str(len(body))})
        if fault.kind in ("corrupt", "wrong_size"):
            self.wfile.write(body)
            return
        if fault.kind == "trickle":
            self._trickle(body, float(opts.get("interval", 0.5)), max(1, int(opts.get("step", 1))),
                          float(opts.get("max_seconds", 120.0)))
            return
        self.wfile.write(body[: int(opts.get("at", size // 2))])
        if fault.kind == "reset":
            time.sleep(float(opts.get("delay", 0.05)))  # let the client read the headers first
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        else:
            self.connection.shutdown(socket.SHUT_WR)

    def _trickle(self, body: bytes, interval: float, step: int, max_seconds: float) -> None:
        """``step`` bytes every ``interval`` s (bounded by ``max_seconds``); ends when the client leaves."""
        proxy, stop_at = self.proxy, time.monotonic() + max_seconds
        for i in range(0, len(body), step):
            if time.monotonic() > stop_at:
                break
            self.wfile.write(body[i : i + step])
            self.wfile.flush()
            with proxy._lock:
                proxy.bytes_sent += len(body[i : i + step])
                proxy.bytes_by_path[self.path] = proxy.bytes_by_path.get(self.path, 0) + len(body[i : i + step])
            time.sleep(interval)
