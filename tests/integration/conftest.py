"""Fixtures of the integration tests beyond tests/conftest.py."""

from tests.support.infinity import infinity, infinity_server  # noqa: F401 - session fixture: a real server
