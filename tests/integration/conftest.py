"""Fixtures of the integration tests beyond tests/conftest.py."""

import pytest

from tests.support.hub import LocalHub
from tests.support.infinity import infinity, infinity_server  # noqa: F401 - session fixture: a real server


@pytest.fixture
def online(hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> LocalHub:
    """The local Hub, as the CLI's endpoint (MODELCACHE_ENDPOINTS)."""
    monkeypatch.setenv("MODELCACHE_ENDPOINTS", hub.endpoint)
    return hub
