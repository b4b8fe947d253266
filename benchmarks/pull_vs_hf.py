"""Issue 2 figures, side by side in one run on a local olah mirror:

- pull time: `ModelManager.pull` (verify + pin + functional test) vs plain
  `huggingface_hub.snapshot_download` of the same files from the same mirror;
- a second pull of the pinned model: HTTP requests made (through a counting proxy);
- verify throughput: `verify(full=False)` on a cold record and `sha256sum` on the same blobs.

Usage: .venv/bin/python benchmarks/pull_vs_hf.py   (prints a markdown table)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fault_proxy import FaultProxy  # noqa: E402
from tests.support.hub import MINILM_REPO, HubRepo, OlahServer, files_from_dir  # noqa: E402
from tests.support.tiny_model import minilm_files_dir  # noqa: E402


def main() -> None:
    from huggingface_hub import snapshot_download

    from modelcache.manager import ModelManager
    from modelcache.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    HubRepo(work / "mirrors", MINILM_REPO).commit(files_from_dir(minilm_files_dir()), "minilm")
    rows = []
    with OlahServer(work / "mirrors", work / "olah") as server, FaultProxy(server.endpoint) as proxy:
        settings = load_settings({"model_cache": {"directory": str(work / "mc")},
                                  "download": {"endpoints": [proxy.endpoint]}})
        mgr = ModelManager(settings)
        plan = mgr.pull("all-MiniLM-L6-v2", dry_run=True)
        t0 = time.perf_counter()
        result = mgr.pull("all-MiniLM-L6-v2")
        t_mc = time.perf_counter() - t0
        t0 = time.perf_counter()
        snapshot_download(MINILM_REPO, revision=result.commit, cache_dir=work / "hf", endpoint=proxy.endpoint,
                          allow_patterns=sorted(plan.files))
        t_hf = time.perf_counter() - t0
        rows.append(("pull all-MiniLM-L6-v2: download + verify (s)", f"{result.seconds:.2f}",
                     f"{t_hf:.2f} (snapshot_download)", f"{result.seconds / t_hf:.2f}x"))
        rows.append(("  + functional check and ONNX export (s)", f"{t_mc - result.seconds:.2f}", "",
                     f"whole pull {t_mc:.2f} s: the first load then needs no torch"))
        proxy.reset()
        t0 = time.perf_counter()
        ModelManager(settings).pull("all-MiniLM-L6-v2")
        rows.append(("second pull of pinned model: HTTP requests", str(proxy.count()),
                     "", f"{(time.perf_counter() - t0) * 1000:.1f} ms"))

        # parallel_downloads visibly overlaps requests: every file GET answers 0.3 s late (a far mirror)
        for parallel in (1, 4):
            proxy.reset()
            proxy.add_fault("delay", path_contains="/resolve/", times=1000, seconds=0.3)
            par = load_settings({"model_cache": {"directory": str(work / f"par{parallel}"),
                                                 "parallel_downloads": parallel},
                                 "download": {"endpoints": [proxy.endpoint]}})
            took = ModelManager(par).pull("all-MiniLM-L6-v2").seconds  # download + verify
            gets = proxy.count("GET", "/resolve/")
            rows.append((f"download + verify, parallel_downloads={parallel}, {gets} files each 0.3 s late (s)",
                         f"{took:.2f}", "",
                         f"serial would be >= {gets * 0.3:.1f} s"))

    blobs = [p.resolve() for p in result.snapshot.rglob("*") if p.is_symlink()]
    total = sum(p.stat().st_size for p in blobs)
    mgr.store.update_meta(MINILM_REPO, verified={})  # force a cold re-hash
    t0 = time.perf_counter()
    report = mgr.verify("all-MiniLM-L6-v2")
    t_verify = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(["sha256sum", *map(str, blobs)], check=True, capture_output=True)
    t_sum = time.perf_counter() - t0
    rows.append(("verify (cold) MB/s", f"{total / t_verify / 1e6:.0f}", f"{total / t_sum / 1e6:.0f} (sha256sum)",
                 f"{(total / t_verify) / (total / t_sum):.2f}; ok={report.ok}"))
    # verify --full: our hashing (integrity.verify_file on every file) vs hashlib.file_digest, same files,
    # the functional and performance tests timed apart
    from modelcache.cache.integrity import expectation_from_blob, verify_file

    links = {p.relative_to(result.snapshot).as_posix(): p for p in result.snapshot.rglob("*") if p.is_symlink()}
    import hashlib

    t_ours = t_lib = float("inf")
    for _ in range(5):  # alternating, best of 5 each
        t0 = time.perf_counter()
        for rel, link in links.items():
            verify_file(link.resolve(), expectation_from_blob(rel, link))
        t_ours = min(t_ours, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for rel, link in links.items():  # the same digests: sha256 for LFS files, git blob sha1 for the rest
            exp = expectation_from_blob(rel, link)
            with open(link.resolve(), "rb") as fh:
                if exp.sha256:
                    hashlib.file_digest(fh, "sha256")
                else:
                    h = hashlib.sha1(f"blob {link.resolve().stat().st_size}\0".encode())
                    h.update(fh.read())
        t_lib = min(t_lib, time.perf_counter() - t0)
    full = mgr.verify("all-MiniLM-L6-v2", full=True)
    perf = full.performance or {}
    rows.append(("verify --full: hashing + format checks MB/s", f"{total / t_ours / 1e6:.0f}",
                 f"{total / t_lib / 1e6:.0f} (hashlib, same digests)",
                 f"{t_lib / t_ours:.2f}x; functional + performance test apart: {perf}"))
    t0 = time.perf_counter()
    warm = mgr.verify("all-MiniLM-L6-v2")
    rows.append(("verify (warm, stat record) ms", f"{(time.perf_counter() - t0) * 1000:.1f}", "",
                 f"hashed {len(warm.hashed)} files"))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    print("| measure | modelcache | baseline | ratio / note |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
