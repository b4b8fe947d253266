"""R5: a process killed with -9 mid-download; the next pull resumes (Range) instead of starting over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from modelcache.manager import ModelManager
from modelcache.registry import ModelSpec
from modelcache.settings import load_settings
from tests.support.hub import TINY_REPO

ROOT = Path(__file__).resolve().parents[2]


def test_kill_9_mid_download_then_pull_resumes(hub, proxy):
    size = hub.repos[TINY_REPO].files_at("main")["model.safetensors"].size
    proxy.throttle_bps = 400_000  # ~10 s for the weights: time to kill mid-body, even on a loaded machine
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from modelcache.manager import ModelManager
        from modelcache.registry import ModelSpec
        from modelcache.settings import load_settings
        mgr = ModelManager(load_settings({{"download": {{"endpoints": [{proxy.endpoint!r}]}}}}))
        mgr.pull(ModelSpec(name="tiny", repo_id={TINY_REPO!r}, dims=32, custom=True))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mgr = ModelManager(load_settings({"download": {"endpoints": [proxy.endpoint]}}))
    part_dir = mgr.store.state_dir / "partial"
    deadline = time.monotonic() + 120
    arrived = 0
    while time.monotonic() < deadline and arrived < size // 3:
        parts = list(part_dir.rglob("*.part")) if part_dir.exists() else []
        # the name first: the small files' .part files vanish as they finish (configs come before the weights)
        big = [p for p in parts if p.name.startswith(hub.repos[TINY_REPO].files_at("main")["model.safetensors"].sha256)
               and p.stat().st_size > 0]
        arrived = big[0].stat().st_size if big else 0
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    arrived = big[0].stat().st_size
    assert 0 < arrived < size, "the kill must land mid-body"
    snapshots = mgr.store.repo_dir(TINY_REPO) / "snapshots"
    assert not snapshots.exists() or not any(snapshots.iterdir())  # nothing half-done is visible

    proxy.throttle_bps = 0
    weights_url_part = "model.safetensors"
    before = sum(v for k, v in proxy.bytes_by_path.items() if weights_url_part in k)
    result = mgr.pull(ModelSpec(name="tiny", repo_id=TINY_REPO, dims=32, custom=True))  # no stale lock blocks it
    sent = sum(v for k, v in proxy.bytes_by_path.items() if weights_url_part in k) - before
    resent = sent - (size - arrived)
    assert resent <= 0.05 * arrived, (sent, size, arrived)
    assert mgr.verify(ModelSpec(name="tiny", repo_id=TINY_REPO, dims=32, custom=True), full=True).ok
    assert "model.safetensors" in result.downloaded
    assert not list(part_dir.rglob("*.part"))  # the partial file became the blob
