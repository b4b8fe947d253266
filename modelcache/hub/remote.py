"""What a Hub (or mirror) says about a repo: the commit of a revision and its files' hashes.

Both calls go through huggingface_hub's HTTP session, headers and error mapping, retry per
:mod:`modelcache.hub.retry`, and are bounded (a hostile or broken server must not hold a pull):

- time: each request runs under a deadline (``request_deadline_s``, from
  ``download.file_deadline_min_s``) inside the pull's, checked between reads (httpx timeouts are
  per read: a trickle never trips them); a body is read up to a size bound.
- listings: the tree listing follows ``Link: rel="next"`` for at most :data:`MAX_LISTING_PAGES`
  pages and :data:`MAX_LISTING_ENTRIES` entries, never to a URL it has already asked for, and
  never to another origin than the endpoint's: a server cannot make us send the token elsewhere
  (such a link is refused, not followed without the token). Each bound passed raises
  :class:`ListingRefusedError` naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin

from huggingface_hub.utils import build_hf_headers, get_session

from modelcache.cache.integrity import FileExpectation
from modelcache.errors import ListingRefusedError
from modelcache.hub.deadline import Deadline, raise_for_status, read_timeout
from modelcache.hub.retry import RetryPolicy, RetryStats
from modelcache.origins import origin_text, redact_url, same_origin

#: pages of one tree listing (the Hub pages 1,000 files at a time: 100k files)
MAX_LISTING_PAGES = 100
#: entries (files and folders) of one tree listing, over all its pages
MAX_LISTING_ENTRIES = 100_000
#: bytes of one listing page
MAX_PAGE_BYTES = 32 * 1024 * 1024
#: bytes of one revision answer (model info)
MAX_INFO_BYTES = 8 * 1024 * 1024
#: deadline of one metadata request when no settings say (``download.file_deadline_min_s``)
REQUEST_DEADLINE_S = 30.0


def _entry(item: dict, what: str) -> FileExpectation:
    """One file of a listing (FileExpectation refuses unsafe names, hashes and sizes)."""
    lfs = item.get("lfs") or {}
    try:
        size = int(lfs.get("size", item.get("size", 0)) if isinstance(lfs, dict) else -1)
        path = item["path"]
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{what}: a listing entry has no usable path or size: {str(item)[:200]}") from None
    if not isinstance(lfs, dict) or not isinstance(path, str):
        raise ValueError(f"{what}: a listing entry is malformed: {str(item)[:200]}")
    return FileExpectation(path=path, size=size, sha256=lfs.get("oid") or lfs.get("sha256"),
                           blob_id=None if lfs else item.get("oid"))


@dataclass
class RemoteRepo:
    endpoint: str
    token: str | bool | None
    """As ``build_hf_headers`` takes it: the token, None (huggingface_hub's stored login, for the
    Hub only) or False (no Authorization). See :func:`modelcache.origins.token_for`."""
    timeout: float
    policy: RetryPolicy
    stats: RetryStats
    deadline: Deadline | None = None
    """The enclosing deadline (the pull's, this endpoint's try); None: only ``request_deadline_s``."""
    request_deadline_s: float = REQUEST_DEADLINE_S
    read_timeout: float | None = None
    """Per-read timeout of metadata requests (None: ``timeout``)."""
    compression: bool = True
    """``download.compression``: False asks for ``Accept-Encoding: identity`` (else the HTTP client's
    gzip / deflate / br / zstd)."""

    @property
    def shown(self) -> str:
        """The endpoint as it may be shown (credentials redacted)."""
        return redact_url(self.endpoint)

    # -- one bounded JSON request ---------------------------------------------------------
    def _get_json(self, url: str, params: dict | None, what: str, limit: int) -> tuple[Any, Any]:
        """GET ``url`` and parse its JSON body: retried, under a deadline, at most ``limit`` bytes.
        Returns (data, response) (the response's headers, links and final URL; its body is read)."""
        headers = build_hf_headers(token=self.token)
        if not self.compression:
            headers["Accept-Encoding"] = "identity"
        http_timeout = self.read_timeout or self.timeout

        def fetch():
            deadline = Deadline(self.request_deadline_s, what, "download.file_deadline_min_s", parent=self.deadline)
            deadline.check()
            from modelcache.hub.http import httpx

            limits = httpx().Timeout(read_timeout(deadline, http_timeout),
                                     connect=read_timeout(deadline, self.timeout))
            with get_session().stream("GET", url, params=params, headers=headers, timeout=limits,
                                      follow_redirects=True) as response:
                raise_for_status(response, deadline)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise ListingRefusedError(what, f"{limit:,} bytes per answer",
                                                  f"the answer is longer than {limit:,} bytes")
                    deadline.check(f"{len(body):,} bytes received")
            return response, bytes(body)

        response, body = self.policy.call(fetch, what, self.stats, deadline=self.deadline)
        try:
            return json.loads(body), response
        except ValueError as exc:  # UnicodeDecodeError too
            raise ValueError(f"{what}: the answer is not JSON ({exc})") from None

    def resolve(self, repo_id: str, revision: str) -> str:
        """The commit sha a branch, tag or sha points to."""
        url = f"{self.endpoint}/api/models/{repo_id}/revision/{quote(revision, safe='')}"
        info, _ = self._get_json(url, None, f"resolve {repo_id}@{revision} on {self.shown}", MAX_INFO_BYTES)
        sha = info.get("sha") if isinstance(info, dict) else None
        if not sha or not isinstance(sha, str):
            raise ValueError(f"{self.shown} gave no commit for {repo_id}@{revision}")
        return sha

    def refs(self, repo_id: str) -> list[dict[str, str]]:
        """Every branch and tag of the repo: ``[{"name", "kind": "branch" | "tag", "commit"}]``
        (``/api/models/<id>/refs``); malformed items are skipped."""
        url = f"{self.endpoint}/api/models/{repo_id}/refs"
        data, _ = self._get_json(url, None, f"list the revisions of {repo_id} on {self.shown}", MAX_INFO_BYTES)
        out: list[dict[str, str]] = []
        for group, kind in (("branches", "branch"), ("tags", "tag")):
            items = data.get(group, []) if isinstance(data, dict) else []
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(
                        item.get("targetCommit"), str):
                    out.append({"name": item["name"][:200], "kind": kind, "commit": item["targetCommit"][:64]})
        return out

    def files(self, repo_id: str, commit: str) -> dict[str, FileExpectation]:
        """Every file at ``commit`` with its size and sha256 (LFS) or git blob sha1."""
        what = f"list {repo_id}@{commit[:12]} on {self.shown}"
        url: str | None = f"{self.endpoint}/api/models/{repo_id}/tree/{quote(commit, safe='')}"
        params: dict | None = {"recursive": "true", "expand": "false"}
        out: dict[str, FileExpectation] = {}
        seen: set[str] = set()
        pages = entries = 0
        while url:
            pages += 1
            data, response = self._get_json(url, params, f"{what} (page {pages})", MAX_PAGE_BYTES)
            seen.update({url, str(response.url), str(response.request.url)})
            if not isinstance(data, list):
                raise ValueError(f"{what}: the listing is not a list of entries")
            entries += len(data)
            if entries > MAX_LISTING_ENTRIES:
                raise ListingRefusedError(what, f"{MAX_LISTING_ENTRIES:,} entries",
                                          f"more than {MAX_LISTING_ENTRIES:,} entries after {pages} pages")
            for item in data:
                if not isinstance(item, dict) or item.get("type") != "file":
                    continue
                exp = _entry(item, what)
                out[exp.path] = exp
            url = self._next_page(response, what, seen, pages)
            params = None
        return out

    def _next_page(self, response: Any, what: str, seen: set[str], pages: int) -> str | None:
        link = (getattr(response, "links", None) or {}).get("next", {}).get("url")
        if not link:
            return None
        nxt = urljoin(str(response.url), link)
        if not same_origin(nxt, self.endpoint):
            raise ListingRefusedError(
                what, "same origin", f"the next page is on another origin ({origin_text(nxt)}, the endpoint is "
                f"{origin_text(self.endpoint)}); a server may not send our requests (and token) elsewhere")
        if nxt in seen:
            raise ListingRefusedError(what, "no repeated page",
                                      f"page {pages} links to a page already fetched ({redact_url(nxt)})")
        if pages >= MAX_LISTING_PAGES:
            raise ListingRefusedError(what, f"{MAX_LISTING_PAGES} pages",
                                      f"still a next page after {MAX_LISTING_PAGES} pages")
        return nxt
