"""R16: a tree listing without end is cut off at a bound, with a clear error naming it.

A small hostile Hub (stdlib ``ThreadingHTTPServer`` on 127.0.0.1) answers the revision and
pages the tree listing with ``Link: <...>; rel="next"``:

- ``self``: the page links to itself (the exact URL asked for): one request, refused as a repeat.
- ``pingpong``: page A links to B, B back to A: three requests (the first page has no cursor).
- ``cursor``: every page links to a fresh ``?cursor=N+1``: stops at ``MAX_LISTING_PAGES``.
- ``fat``: every page adds 2,000 names and a fresh cursor: stops at ``MAX_LISTING_ENTRIES``,
  memory bounded.

The server answers 410 after ``CAP`` requests and the pull runs in a thread joined with a time
bound, so the old code (which followed ``next`` forever) fails the test instead of running on.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import pytest

from modelcache.errors import DownloadError
from modelcache.hub.remote import MAX_LISTING_ENTRIES, MAX_LISTING_PAGES
from tests.reliability import manager, rss_bytes, tiny
from tests.support.loopback import LoopbackServer

COMMIT = "1" * 40
CAP = 400  # the hostile server stops after this many requests (old code: ~1,000 requests a minute)
BOUND_S = 60.0
NAMES_PER_FAT_PAGE = 2_000


class EndlessHub(LoopbackServer):
    """Serves a revision and an endless tree listing; counts the requests."""

    def __init__(self, mode: str):
        self.mode = mode
        self.requests: list[str] = []
        self.lock = threading.Lock()
        super().__init__(_EndlessHandler, "hub")

    def listings(self) -> int:
        return sum("/tree/" in p for p in self.requests)


class _EndlessHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, link: str | None = None) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if link:
            self.send_header("Link", f'<{link}>; rel="next"')
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        hub: EndlessHub = self.server.hub  # type: ignore[attr-defined]
        with hub.lock:
            hub.requests.append(self.path)
            n = len(hub.requests)
        if n > CAP:
            self._send(410, b'{"error": "enough"}')
            return
        url = urlsplit(self.path)
        if "/revision/" in url.path:
            self._send(200, json.dumps({"id": "tiny-org/tiny-st", "sha": COMMIT}).encode())
            return
        if "/tree/" not in url.path:
            self._send(404, b'{"error": "not here"}')
            return
        cursor = int(parse_qs(url.query).get("cursor", ["0"])[0])
        base = f"{hub.endpoint}{url.path}"
        entries = [{"type": "file", "path": f"f{cursor}.json", "size": 2, "oid": "a" * 40}]
        if hub.mode == "self":
            link = f"{hub.endpoint}{self.path}"
        elif hub.mode == "pingpong":
            link = f"{base}?cursor={1 - cursor}"
        else:
            link = f"{base}?cursor={cursor + 1}"
        if hub.mode == "fat":
            entries = [{"type": "file", "path": f"d{cursor}/name-{i:05d}-{'x' * 40}.txt", "size": 2,
                        "oid": f"{cursor * 100_000 + i:040x}"} for i in range(NAMES_PER_FAT_PAGE)]
        self._send(200, json.dumps(entries).encode(), link)


def _pull(endpoints: list[str]):
    box: dict = {}
    mgr = manager(endpoints)

    def run():
        try:
            box["result"] = mgr.pull(tiny())
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t0 = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND_S)
    assert not thread.is_alive(), f"the listing still ran after {BOUND_S:.0f} s"
    return box.get("result"), box.get("error"), time.monotonic() - t0


@pytest.mark.scenario("R16")
@pytest.mark.parametrize(("mode", "bound", "most"), [
    ("self", "no repeated page", 1),
    ("pingpong", "no repeated page", 3),  # first page (no cursor) -> cursor=1 -> cursor=0 -> cursor=1 again
    ("cursor", f"{MAX_LISTING_PAGES} pages", MAX_LISTING_PAGES),
])
def test_a_looping_listing_stops_after_few_requests(mode, bound, most, record_property):
    with EndlessHub(mode) as hostile:
        _, error, took = _pull([hostile.endpoint])
    assert isinstance(error, DownloadError), error
    why = error.failures[hostile.endpoint]
    assert "ListingRefusedError" in why and f"bound: {bound}" in why, why
    assert hostile.listings() == most, hostile.listings()
    assert took < 30, took
    record_property(f"listing_requests_{mode}", hostile.listings())


@pytest.mark.scenario("R16")
def test_fat_pages_stop_at_the_entry_bound_with_bounded_memory(record_property):
    before = rss_bytes()
    with EndlessHub("fat") as hostile:
        _, error, took = _pull([hostile.endpoint])
    grown = rss_bytes() - before
    assert isinstance(error, DownloadError), error
    why = error.failures[hostile.endpoint]
    assert f"bound: {MAX_LISTING_ENTRIES:,} entries" in why, why
    pages = MAX_LISTING_ENTRIES // NAMES_PER_FAT_PAGE + 1  # the first page past the bound is the last asked for
    assert hostile.listings() == pages, hostile.listings()
    assert grown < 400 * 1024 * 1024, grown
    record_property("fat_listing_requests", hostile.listings())
    record_property("fat_listing_rss_growth_mb", round(grown / 1024**2))
    record_property("fat_listing_s", round(took, 2))


@pytest.mark.scenario("R16")
def test_a_looping_listing_fails_over_to_the_next_endpoint(hub):
    with EndlessHub("self") as hostile:
        result, error, _ = _pull([hostile.endpoint, hub.endpoint])
    assert error is None, error
    assert result.endpoint == hub.endpoint
    assert hostile.listings() == 1
