"""R6: eight processes pull the same model at once: one download, all eight get the verified model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.reliability import FAST_RETRY, ROOT, leftovers, manager, tiny
from tests.support.hub import TINY_REPO

PROCESSES = 8

SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys, time
    sys.path.insert(0, {root!r})
    from modelcache.manager import ModelManager
    from modelcache.registry import ModelSpec
    from modelcache.settings import load_settings

    ready, go, expected_file = sys.argv[1:4]
    expected = json.load(open(expected_file))
    mgr = ModelManager(load_settings({{"download": {{"endpoints": [{endpoint!r}], **{retry!r}}}}}))
    spec = ModelSpec(name="tiny", repo_id={repo!r}, dims=32, custom=True)
    open(ready, "w").close()
    while not os.path.exists(go):  # start together, imports done
        time.sleep(0.005)
    t0 = time.perf_counter()
    result = mgr.pull(spec)
    seconds = time.perf_counter() - t0
    report = mgr.verify(spec)
    # hash what this process sees in its snapshot, whoever downloaded it
    seen = {{p: hashlib.sha256(open(os.path.join(result.snapshot, p), "rb").read()).hexdigest() for p in expected}}
    print(json.dumps({{"downloaded": len(result.downloaded), "commit": result.commit, "ok": report.ok,
                      "snapshot": str(result.snapshot),
                      "mismatch": sorted(p for p in expected if seen[p] != expected[p]),
                      "seconds": seconds}}))
""")


@pytest.mark.scenario("R6")
@pytest.mark.slow
def test_eight_processes_pull_once_and_all_get_the_verified_model(proxy, hub, tmp_path, record_property):
    # the weights' GET is held for 2 s: the seven others reach the repo lock while it runs
    proxy.add_fault("delay", path_contains="model.safetensors", method="GET", times=1, seconds=2.0)
    truth = hub.repos[TINY_REPO].files_at("main")
    expected = {p: info.sha256 for p, info in truth.items() if p.endswith((".json", ".safetensors", ".txt"))}
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    script = SCRIPT.format(root=str(ROOT), endpoint=proxy.endpoint, retry=FAST_RETRY, repo=TINY_REPO)
    go = tmp_path / "go"
    procs = []
    for i in range(PROCESSES):
        ready = tmp_path / f"ready-{i}"
        procs.append((ready, subprocess.Popen(
            [sys.executable, "-c", script, str(ready), str(go), str(tmp_path / "expected.json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())))
    deadline = time.monotonic() + 120
    while not all(r.exists() for r, _ in procs):
        assert time.monotonic() < deadline, "the pullers did not start"
        assert all(p.poll() is None for _, p in procs), [p.communicate()[1][-1500:] for _, p in procs if p.poll()]
        time.sleep(0.02)
    t0 = time.perf_counter()
    go.touch()
    outs = [p.communicate(timeout=180) for _, p in procs]
    wall = time.perf_counter() - t0
    assert all(p.returncode == 0 for _, p in procs), [err[-1500:] for _, err in outs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]

    weight_gets = proxy.count(method="GET", path_contains="model.safetensors")
    assert weight_gets == 1, proxy.requests
    downloaders = [r for r in results if r["downloaded"]]
    assert len(downloaders) == 1, results  # one process downloaded, seven found it done
    assert {r["commit"] for r in results} == {hub.repos[TINY_REPO].resolve("main")}
    assert len({r["snapshot"] for r in results}) == 1
    assert all(r["ok"] and not r["mismatch"] for r in results), results
    mgr = manager([proxy.endpoint])
    assert mgr.verify(tiny(), full=True).ok
    assert leftovers(mgr.store.root) == {"incomplete": [], "staging": [], "trash": [], "dangling": []}
    record_property("processes", PROCESSES)
    record_property("weights_GETs", weight_gets)
    record_property("total_GETs", proxy.count(method="GET"))
    record_property("wall_s", round(wall, 2))
    record_property("slowest_s", round(max(r["seconds"] for r in results), 2))
