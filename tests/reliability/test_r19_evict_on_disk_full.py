"""R8 (issue 15): "clean the cache and retry" on a real, small, full filesystem.

With ``model_cache.evict_on_disk_full`` a pull that does not fit evicts least recently used unpinned
models and goes on, and says which it evicted; without it (the default), or when evicting every unpinned
model would not be enough, nothing is evicted and the error says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from modelcache.errors import DiskSpaceError
from tests.reliability import manager, tiny
from tests.reliability.test_r08_disk_full import assert_nothing_partial, drop_loaded_models
from tests.support.hub import PICKLE_REPO, TINY_REPO

#: torch: the functional check loads the model in this process; mapped weights of an evicted model keep
#: their blocks until unmapped (drop_loaded_models), and an ONNX export on an 8 MiB disk is another test's
TORCH = {"embedding": {"backend": "torch"}}
EVICT = {"model_cache": {"evict_on_disk_full": True}} | TORCH


@pytest.mark.scenario("R8")
def test_a_full_disk_evicts_the_least_recently_used_model_and_the_pull_goes_on(small_fs, hub, record_property):
    root = small_fs(8)  # one tiny model fits, two do not
    mgr = manager([hub.endpoint], EVICT, disk_margin_mb=0)
    mgr.pull(tiny())
    drop_loaded_models(mgr)
    other = tiny(repo_id=PICKLE_REPO, name="other")
    result = mgr.pull(other)
    assert result.evicted == [{"repo_id": TINY_REPO, "reason": "disk full (model_cache.evict_on_disk_full)"}]
    assert not mgr.store.repo_dir(TINY_REPO).exists() and mgr.lockfile.get(TINY_REPO, "main") is None
    assert mgr.verify(other, full=True).ok
    assert_nothing_partial(root, TINY_REPO)
    record_property("evicted", TINY_REPO)

    # the CLI says which happened
    drop_loaded_models(mgr)
    env = os.environ | {"MODELCACHE_ENDPOINTS": hub.endpoint}
    config = root.parent / "evict.yaml"
    config.write_text("model_cache: {evict_on_disk_full: true}\ndownload: {disk_margin_mb: 0}\n"
                      "embedding: {backend: torch}\n")
    pulled = subprocess.run([sys.executable, "-m", "modelcache", "pull", TINY_REPO, "--config", str(config)],
                            capture_output=True, text=True, env=env)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert f"evicted {PICKLE_REPO}: disk full (model_cache.evict_on_disk_full)" in pulled.stdout
    as_json = subprocess.run([sys.executable, "-m", "modelcache", "info", PICKLE_REPO, "--json"],
                             capture_output=True, text=True, env=env)
    assert json.loads(as_json.stdout)["cached"] is False


@pytest.mark.scenario("R8")
def test_without_the_setting_or_with_only_pinned_models_nothing_is_evicted(small_fs, hub):
    small_fs(8)
    mgr = manager([hub.endpoint], TORCH, disk_margin_mb=0)
    mgr.pull(tiny())
    drop_loaded_models(mgr)
    other = tiny(repo_id=PICKLE_REPO, name="other")
    with pytest.raises(DiskSpaceError) as err:
        mgr.pull(other)
    assert "evict_on_disk_full" in str(err.value)  # the message names the setting that would allow it
    assert mgr.verify(tiny()).ok

    from modelcache.cache.budget import set_pinned

    set_pinned(mgr.store, TINY_REPO)
    mgr = manager([hub.endpoint], EVICT, disk_margin_mb=0)
    with pytest.raises(DiskSpaceError) as err:
        mgr.pull(other)
    assert "would not be enough; nothing was evicted" in str(err.value)
    assert mgr.verify(tiny()).ok and mgr.lockfile.get(TINY_REPO, "main") is not None
