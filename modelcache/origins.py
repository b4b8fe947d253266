"""Origins, credentials and what may be shown of a URL.

- :func:`redact_url` / :func:`redact_text`: a URL as it may be shown (logs, warnings, errors,
  ``--json``, metadata): the userinfo of ``http://user:secret@host`` becomes ``***@`` and
  the values of query parameters that carry secrets (``token``, ``signature``…) become ``***``.
  Never raises, even on a URL that does not parse (``http://[::1``).
- :func:`origin` / :func:`same_origin`: scheme, host and port (RFC 6454), default ports made
  explicit, userinfo ignored.
- :func:`token_for`: the token one endpoint may receive. The HF token goes to the Hub only
  (``https://huggingface.co``, or ``HF_ENDPOINT`` when it is set) unless
  ``download.token_endpoints`` names the origins that receive it; every other origin gets no
  ``Authorization`` header at all (``False``: huggingface_hub does not add its stored login
  either). A URL a server names (a listing's ``next`` link) never gets a token of its own.

Pure string handling: nothing here imports the HTTP stack.
"""

from __future__ import annotations

import os
import re
from typing import Any, Protocol
from urllib.parse import quote, urlsplit


class TokenSettings(Protocol):
    """What :func:`token_for` reads of :class:`modelcache.settings.Settings` (no import: settings uses us)."""

    download: Any

    @property
    def token_value(self) -> str | None: ...

HUB_ENDPOINT = "https://huggingface.co"
REDACTED = "***"
#: query parameters whose values are secrets (presigned URLs, token-in-query mirrors)
SECRET_PARAMS = frozenset({
    "token", "access_token", "auth", "api_key", "apikey", "key", "password", "passwd", "secret",
    "signature", "sig", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-goog-signature", "x-goog-credential", "hf_token",
})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact_url(url: object) -> str:
    """``url`` as it may be shown: no userinfo, no secret query values. Never raises."""
    text = "" if url is None else str(url)
    scheme_end = text.find("://")
    if scheme_end < 0:
        return text
    start = scheme_end + 3
    end = len(text)
    for sep in "/?#":
        i = text.find(sep, start)
        if i >= 0:
            end = min(end, i)
    netloc, rest = text[start:end], text[end:]
    if "@" in netloc:  # rpartition: a password may hold a raw '@'
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    return text[:start] + netloc + _redact_query(rest)


def _redact_query(rest: str) -> str:
    q = rest.find("?")
    if q < 0:
        return rest
    fragment = ""
    h = rest.find("#", q)
    if h >= 0:
        rest, fragment = rest[:h], rest[h:]
    path, query = rest[:q], rest[q + 1:]
    parts = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        parts.append(f"{name}={REDACTED}" if eq and name.lower() in SECRET_PARAMS else item)
    return f"{path}?{'&'.join(parts)}{fragment}"


def redact_text(text: object) -> str:
    """``text`` (an error message, a log line) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), "" if text is None else str(text))


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of ``url``, lower-cased, default port explicit; None if it does not parse."""
    try:
        parts = urlsplit(str(url).strip())
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # http://[::1, a port out of range
        return None
    if not scheme or not host or port is None:
        return None
    return scheme, host, port


def same_origin(a: str, b: str) -> bool:
    oa = origin(a)
    return oa is not None and oa == origin(b)


def origin_text(url: str) -> str:
    """The origin of ``url`` as ``scheme://host:port`` (for messages); the redacted URL if it does not parse."""
    o = origin(url)
    if o is None:
        return redact_url(url)
    host = f"[{o[1]}]" if ":" in o[1] else quote(o[1], safe=".-")
    return f"{o[0]}://{host}:{o[2]}"


def token_origins(settings: TokenSettings) -> list[str]:
    """The endpoints whose origin receives the configured token (``download.token_endpoints``;
    unset: the Hub, ``https://huggingface.co`` and ``HF_ENDPOINT`` when set)."""
    configured = settings.download.token_endpoints
    if configured is not None:
        return list(configured)
    hub = [HUB_ENDPOINT]
    if os.environ.get("HF_ENDPOINT", "").strip():
        hub.append(os.environ["HF_ENDPOINT"].strip())
    return hub


def token_for(settings: TokenSettings, endpoint: str) -> str | bool | None:
    """The token to send to ``endpoint``: the configured one, None (a Hub origin with no token
    configured: huggingface_hub may use its stored login), or False (no Authorization at all)."""
    if not any(same_origin(endpoint, allowed) for allowed in token_origins(settings)):
        return False
    return settings.token_value


__all__ = ["HUB_ENDPOINT", "origin", "origin_text", "redact_text", "redact_url", "same_origin", "token_for",
           "token_origins"]
