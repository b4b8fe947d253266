"""A pull where no backend is importable (a core-only install: no sentence-transformers, no
onnxruntime) verifies the files, exits 0 and says the functional check runs at first load.

In-process, with the backends hidden from ``importlib.util.find_spec``; ``make test`` also does
it for real in a venv with ``pip install .`` alone (tests/packaging/core_install.sh).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from modelcache.ops.cli import app
from tests.support.hub import TINY_REPO

HIDDEN = {"sentence_transformers", "onnxruntime"}


@pytest.fixture
def no_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args, **kw: None if name in HIDDEN else real(name, *args, **kw))


def test_pull_without_a_backend_defers_the_functional_check(hub, no_backend) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["pull", TINY_REPO, "--endpoint", hub.endpoint, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["ok"] and "model.safetensors" in data["downloaded"]
    assert "runs at first load" in data["functional"]["deferred"]
    assert "dims" not in data["functional"]  # nothing was loaded

    again = runner.invoke(app, ["pull", TINY_REPO, "--endpoint", hub.endpoint])  # cached: no network
    assert again.exit_code == 0, again.output
    said = " ".join(again.stdout.split())
    assert "(cached, no network)" in said and "functional check: no backend extra installed" in said
    assert "runs at first load" in said


def test_pull_with_a_backend_reports_the_functional_check(hub) -> None:
    out = CliRunner().invoke(app, ["pull", TINY_REPO, "--endpoint", hub.endpoint, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["functional"]["dims"] == 32
