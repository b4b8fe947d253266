"""The memory database across real processes: concurrent writers, kill -9 at random moments.

Each child adds memories one per call and, after ``add`` returns (the acknowledgement), appends
the id to its own log file (flushed and fsynced). Afterwards every acknowledged id must be in the
database exactly once, and the database must open and take writes again. Both databases: SQLite in
a directory, PostgreSQL (a real server, a fresh schema) through ``open_memory_db``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelcache.memory.db import Memory
from tests.support.memory_backends import BACKENDS, Backend
from tests.support.memory_backends import backend as make_backend

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from modelcache.memory.db import Memory
    from modelcache.memory.open import open_memory_db
    target, log_dir, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    db = open_memory_db(target)
    with open(os.path.join(log_dir, f"ack-{{name}}.log"), "a") as log:
        for i in range(n):
            mid = f"{{name}}-{{i}}"
            db.add([Memory(mid, f"memory {{i}} of writer {{name}}: the spare keys are in drawer {{i % 7}}",
                           {{"writer": name, "i": i}})])
            log.write(mid + "\\n")
            log.flush()
            os.fsync(log.fileno())
""")


def _child(tmp_path: Path) -> Path:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT)))
    return script


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request, tmp_path)


def _acked(log_dir: Path) -> list[str]:
    ids: list[str] = []
    for log in sorted(log_dir.glob("ack-*.log")):
        ids += [line for line in log.read_text().splitlines() if line]
    return ids


def test_four_processes_add_500_each_and_every_memory_is_there_once(tmp_path: Path, backend: Backend) -> None:
    backend.open().close()
    script = _child(tmp_path)
    procs = [subprocess.Popen([sys.executable, str(script), backend.target, str(tmp_path), f"w{n}", "500"])
             for n in range(4)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    db = backend.open()
    ids = db.ids()
    assert len(ids) == 2000 and len(set(ids)) == 2000
    assert sorted(ids) == sorted(_acked(tmp_path))
    assert [i for i, _ in db.search("writer w3 drawer", 2000)]  # the keyword index has them too
    assert len(db.search("spare keys", 5000)) == 2000
    db.close()


def test_kill_minus_nine_30_times_loses_nothing_acknowledged(tmp_path: Path, backend: Backend) -> None:
    backend.open().close()
    script = _child(tmp_path)
    rng = random.Random(1234)
    kills = 0
    for round_ in range(30):
        names = [f"r{round_}w{n}" for n in range(2)]
        procs = [subprocess.Popen([sys.executable, str(script), backend.target, str(tmp_path), name, "100000"])
                 for name in names]
        # import + open take 0.1-0.3 s idle, seconds on a loaded machine: wait for each writer's first
        # acknowledgement, then kill at a random moment of its writing
        logs = [tmp_path / f"ack-{name}.log" for name in names]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(log.exists() and log.stat().st_size for log in logs):
            time.sleep(0.01)
        time.sleep(rng.random() * 0.4)
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
            kills += 1
    assert kills == 60
    db = backend.open()  # opens: nothing left blocks it
    acked = _acked(tmp_path)
    stored = db.ids()
    assert len(stored) == len(set(stored))  # each memory once
    missing = sorted(set(acked) - set(stored))
    assert not missing, f"{len(missing)} acknowledged memories lost, e.g. {missing[:5]}"
    assert len(acked) > 100  # the children got far enough to make this test mean something
    # at most one unacknowledged extra per killed writer (committed, killed before logging)
    assert len(set(stored) - set(acked)) <= kills
    found = {i for i, _ in db.search("spare keys drawer", len(stored) + 10)}
    assert found == set(stored)  # the FTS index is consistent with the rows
    db.add([Memory("after", "written after the kills")])
    assert db.get(["after"])[0].text == "written after the kills"
    db.close()
