"""R12: offline, the whole load → ``verify --full`` → ``embed`` path opens zero sockets.

pytest-socket's guard is on for the whole path (a blocked socket raises), and every attempt is
also recorded, so an attempt that some layer catches and hides still fails the test.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from typer.testing import CliRunner

from modelcache.manager import ModelManager
from modelcache.settings import load_settings
from tests.reliability import manager, tiny
from tests.support.hub import TINY_REPO

pytest_socket = pytest.importorskip("pytest_socket")


@contextmanager
def no_sockets() -> Iterator[list[str]]:
    """pytest-socket's ``disable_socket`` plus a record of every socket and name lookup tried."""
    attempts: list[str] = []
    pytest_socket.disable_socket(allow_unix_socket=False)
    guarded = socket.socket
    real = socket.getaddrinfo, socket.create_connection

    class Recording(guarded):  # type: ignore[misc, valid-type]
        def __new__(cls, family=-1, type=-1, proto=-1, fileno=None):  # noqa: A002
            attempts.append(f"socket(family={family}, type={type})")
            return super().__new__(cls, family, type, proto, fileno)

    def refuse(what: str):
        def blocked(address, *args, **kwargs):
            attempts.append(f"{what}({address!r})")
            raise pytest_socket.SocketBlockedError()
        return blocked

    socket.socket = Recording  # type: ignore[misc]
    socket.getaddrinfo, socket.create_connection = refuse("getaddrinfo"), refuse("create_connection")
    try:
        yield attempts
    finally:
        socket.getaddrinfo, socket.create_connection = real
        pytest_socket.enable_socket()


@pytest.mark.scenario("R12")
def test_offline_load_verify_full_and_embed_open_no_socket(hub, monkeypatch, record_property):
    manager([hub.endpoint]).pull(tiny())  # the one step allowed to use the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MODELCACHE_ENDPOINTS", hub.endpoint)  # offline wins over a reachable endpoint
    from modelcache.ops.cli.common import app

    runner = CliRunner()
    with no_sockets() as attempts:
        with pytest.raises(pytest_socket.SocketBlockedError), pytest.warns(UserWarning, match="socket"):
            socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # the guard is armed and records
        assert len(attempts) == 1
        attempts.clear()
        mgr = ModelManager(load_settings())
        assert mgr.settings.offline
        vec = mgr.load(tiny()).encode(["Hello world"])
        assert vec.shape == (1, 32) and np.all(np.isfinite(vec))
        report = mgr.verify(tiny(), full=True)
        assert report.ok and report.functional and report.functional["dims"] == 32
        assert sorted(report.hashed) == sorted(report.checked)  # --full re-hashed every file
        verify = runner.invoke(app, ["verify", TINY_REPO, "--full", "--json"])
        embed = runner.invoke(app, ["embed", "Hello world", "--model", TINY_REPO, "--json"])
        cold = runner.invoke(app, ["embed", "x", "--model", "tiny-org/not-cached", "--json"])
        status = runner.invoke(app, ["doctor", "--json"])
    assert verify.exit_code == 0 and json.loads(verify.stdout)["ok"] is True, verify.output
    assert embed.exit_code == 0 and json.loads(embed.stdout)["dims"] == 32, embed.output
    assert cold.exit_code == 1 and "modelcache pull" in cold.output, cold.output
    assert "offline" in status.output, status.output
    assert attempts == [], attempts
    record_property("socket_attempts", len(attempts))
    record_property("files_rehashed", len(report.hashed))
