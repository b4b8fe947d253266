"""R4 (the cache's own state, beside the corrupt downloads test_pull.py covers): a corrupt
metadata file or lockfile gives a clean recovery or a clear error, never a traceback."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from tests.reliability import manager, tiny
from tests.support.hub import TINY_REPO


@pytest.mark.scenario("R4")
@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe\x00binary", b"[1, 2, 3]"], ids=["json", "binary", "list"])
def test_corrupt_metadata_is_rebuilt_with_a_warning(hub, caplog, garbage):
    mgr = manager([hub.endpoint])
    mgr.pull(tiny())
    meta = mgr.store.repo_dir(TINY_REPO) / "modelcache.json"
    meta.write_bytes(garbage)
    caplog.set_level(logging.WARNING, logger="modelcache")
    report = manager([hub.endpoint]).verify(tiny())
    assert report.ok and sorted(report.hashed) == sorted(report.checked)  # no stamps left: everything re-hashed
    assert any("metadata" in r.getMessage() and "rebuilt" in r.getMessage() for r in caplog.records)
    assert isinstance(json.loads(meta.read_text()), dict)  # written again, whole
    assert manager([hub.endpoint]).load(tiny()).encode(["still works"]).shape == (1, 32)


@pytest.mark.scenario("R4")
def test_corrupt_lockfile_is_a_clear_error_naming_the_file(hub):
    mgr = manager([hub.endpoint])
    mgr.pull(tiny())
    lock = mgr.lockfile.path
    lock.write_text("{broken")
    cli = subprocess.run([sys.executable, "-m", "modelcache", "verify", TINY_REPO, "--json"], capture_output=True,
                         text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert cli.returncode == 1 and "Traceback" not in cli.stderr, cli.stderr[-1500:]
    out = json.loads(cli.stdout)
    assert out["error"] == "ConfigError" and str(lock) in out["message"]
