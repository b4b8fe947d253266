"""The HTTP client module huggingface_hub is built on, whichever major version is installed.

huggingface_hub 2.x talks HTTP through ``httpx2`` and keeps ``huggingface_hub.utils.httpx`` as
an alias for downstream libraries; 1.x (pinned by langchain-huggingface and fastembed) is
built on ``httpx``. Importing either directly breaks every pull next to the other version
(measured: ``TypeError: 'Timeout' object cannot be interpreted as an integer``).
"""

from __future__ import annotations

from types import ModuleType


def httpx() -> ModuleType:
    """The ``httpx``-compatible module of the installed huggingface_hub (``httpx2`` or ``httpx``)."""
    try:
        from huggingface_hub.utils import (
            httpx as alias,  # 2.x keeps this alias for downstream libraries
        )
    except ImportError:
        import httpx  # 1.x is built on httpx itself

        return httpx
    return alias


__all__ = ["httpx"]
