"""Fixtures shared by every test: an isolated environment, tiny models, a local Hub.

- ``isolated_env`` (autouse): every cache and config location points into a temp dir, and
  no HF token / endpoint / offline switch leaks in from the developer's shell.
- ``tiny_model_dir`` / ``tiny_model_dir_v2``: tiny sentence-transformers models (seeds 0, 1).
- ``hub``: olah serving ``tests.support.hub.build_standard_repos`` on 127.0.0.1 for the
  whole session; tests using it get the ``hub`` marker.
- ``proxy``: a fresh ``FaultProxy`` in front of ``hub.endpoint`` for one test.
- ``postgres``: a real PostgreSQL on 127.0.0.1 for the session (``.url()``: a fresh schema).

Tests import helpers as ``tests.support...``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) lacks the repo root
    sys.path.insert(0, str(ROOT))

from tests.support.fault_proxy import FaultProxy  # noqa: E402
from tests.support.hub import LocalHub, OlahServer, build_standard_repos  # noqa: E402
from tests.support.postgres import PostgresServer, require_bindir  # noqa: E402
from tests.support.tiny_model import build_tiny_st_model  # noqa: E402

logger = logging.getLogger(__name__)

CLEARED_ENV = (
    "HF_TOKEN",
    "HF_TOKEN_PATH",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_ASSETS_CACHE",
    "HF_XET_CACHE",
    "TRANSFORMERS_CACHE",
    "SENTENCE_TRANSFORMERS_HOME",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that use the local Hub with ``hub``."""
    for item in items:
        if {"hub", "proxy"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.hub)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HF_HOME, HF_HUB_CACHE and every MODELCACHE_* location at ``tmp_path/env``.

    Returns that root. huggingface_hub reads its env vars at import time, so code under
    test must still pass ``cache_dir=`` / ``endpoint=`` / ``token=`` explicitly.
    """
    root = tmp_path / "env"
    for name in [*CLEARED_ENV, *(k for k in os.environ if k.startswith("MODELCACHE_"))]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hf" / "hub"))
    monkeypatch.setenv("MODELCACHE_HOME", str(root / "modelcache"))
    monkeypatch.setenv("MODELCACHE_CACHE_DIR", str(root / "modelcache" / "cache"))
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sentence-transformers model (seed 0, 32 dims), built once per session."""
    return build_tiny_st_model(tmp_path_factory.mktemp("tiny-v1"), seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture as ``tiny_model_dir``, other weights (seed 1)."""
    return build_tiny_st_model(tmp_path_factory.mktemp("tiny-v2"), seed=1)


@pytest.fixture(scope="session")
def hub(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_model_dir_v2: Path
) -> Iterator[LocalHub]:
    """olah serving the standard repos (see ``build_standard_repos``) for the session."""
    root = tmp_path_factory.mktemp("hub")
    started = time.monotonic()
    repos = build_standard_repos(root / "mirrors", tiny_model_dir, tiny_model_dir_v2)
    with OlahServer(root / "mirrors", root / "olah") as server:
        logger.info("test hub ready in %.1fs (olah %.1fs)", time.monotonic() - started, server.startup_seconds)
        yield LocalHub(server.endpoint, repos, server, root / "mirrors")


@pytest.fixture
def proxy(hub: LocalHub) -> Iterator[FaultProxy]:
    """A fresh fault-injecting proxy in front of ``hub.endpoint``."""
    with FaultProxy(hub.endpoint) as fault_proxy:
        yield fault_proxy


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL on 127.0.0.1 for the session (``.url()``: a fresh schema); see tests/support/postgres.py."""
    server = PostgresServer(require_bindir())
    try:
        yield server
    finally:
        server.close()
