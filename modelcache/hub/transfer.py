"""Resumable file transfer: GET a Hub file into a ``.part`` file that survives the process.

huggingface_hub deletes its ``.incomplete`` file on failure and keeps no partial data across
processes, and its ``http_get`` buffers 10 MiB chunks in memory. Here the partial file lives
under the cache's state dir, keyed by repo and blob, so the next attempt (same process or a new
one after ``kill -9``) asks for ``Range: bytes=<have>-`` and re-sends nothing already on disk.
HTTP goes through huggingface_hub's session, headers and error mapping.

A transfer runs under a :class:`~modelcache.hub.deadline.Deadline` checked after every read
(chunks are taken as they arrive, never buffered to 1 MiB first): a server that trickles is cut
off at the deadline with ``DeadlineExceededError``, the bytes received so far stay in the
``.part`` file for the next endpoint to resume from.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from huggingface_hub import hf_hub_url
from huggingface_hub.utils import build_hf_headers, get_session
from tqdm.auto import tqdm

from modelcache.errors import TruncatedBodyError
from modelcache.hub.deadline import Deadline, raise_for_status
from modelcache.hub.deadline import read_timeout as _read_timeout
from modelcache.hub.http import httpx


def fetch_to_part(repo_id: str, filename: str, commit: str, part: Path, *, endpoint: str,
                  token: str | bool | None, expected_size: int | None, timeout: float,
                  read_timeout: float = 60.0, deadline: Deadline | None = None, compression: bool = True,
                  chunk_size: int | None = None) -> int:
    """Append the rest of ``filename`` to ``part``. Returns the bytes received in this call.

    ``token``: as ``build_hf_headers`` takes it (``False``: no Authorization header at all).
    Raises :class:`~modelcache.errors.TruncatedBodyError` (an ``OSError``, retried) when the body
    ends short or long, and :class:`~modelcache.hub.deadline.DeadlineExceededError` (not
    retried) when ``deadline`` passes first. ``compression`` False (and every resumed GET: a Range
    counts bytes of the file itself) asks for ``Accept-Encoding: identity``; a compressed body is
    decoded as it arrives. ``chunk_size``: the write buffer of the ``.part`` file, in bytes.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    if expected_size is not None and have == expected_size:
        return 0
    url = hf_hub_url(repo_id, filename, revision=commit, endpoint=endpoint)
    headers = build_hf_headers(token=token)
    if have:
        headers["Range"] = f"bytes={have}-"
    if have or not compression:
        headers["Accept-Encoding"] = "identity"
    received = 0
    if deadline is not None:
        deadline.check(f"{have} of {expected_size} bytes on disk")
    limits = httpx().Timeout(_read_timeout(deadline, read_timeout), connect=_read_timeout(deadline, timeout))
    with get_session().stream("GET", url, headers=headers, timeout=limits, follow_redirects=True) as response:
        raise_for_status(response, deadline)
        mode = "ab"
        if have and response.status_code != 206:  # the server ignored Range: start over
            have, mode = 0, "wb"
        with open(part, mode, buffering=chunk_size or -1) as fh, tqdm(
                total=expected_size, initial=have, unit="B", unit_scale=True, desc=filename[-40:],
                disable=not sys.stderr.isatty(), leave=False) as bar:
            for chunk in response.iter_bytes():  # as it arrives: a trickle must reach the deadline check
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if expected_size is not None and have + received > expected_size:
                    break  # longer than the Hub said: stop reading (never fill the disk); refused below
                if deadline is not None:
                    deadline.check(f"{have + received} of {expected_size} bytes received")
            fh.flush()
            os.fsync(fh.fileno())
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        if size > expected_size:
            part.unlink()
        raise TruncatedBodyError(filename, expected_size, size)
    return received
