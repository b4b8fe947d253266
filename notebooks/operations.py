# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   # ruff: noqa: E402 (a notebook imports a module in the cell that first needs it)
# ---

# %% [markdown]
# # Operations: pull, verify, export / import, prune, status, metrics
#
# The model lifecycle as an operator runs it, through the `modelcache` CLI (run here as
# `python -m modelcache`, so the notebook works wherever this interpreter does) and the Python API.
# Two caches in a temp dir the notebook creates: cache A gets the model from a Hub, cache B from
# an offline bundle made from cache A.
#
# **Where the model comes from.** With `MODELCACHE_ENDPOINTS` set (a Hub or a mirror; CI points
# it at a local test Hub on 127.0.0.1), cache A is filled by `modelcache pull`. Unset, the
# notebook makes no network access at all and uses `modelcache install` with the files of the
# bundled package (the Hub's exact weights). Under 90 s on 2 CPU cores, most of it spent loading
# the model in the commands that embed a sentence (`pull` or `install`, `verify --full`, `embed`).

# %% tags=["setup"]
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

T0 = time.perf_counter()
WORK = Path(tempfile.mkdtemp(prefix="modelcache-nb-"))  # every cache this notebook uses lives here
os.environ.update({
    "MODELCACHE_HOME": str(WORK / "home"),
    "MODELCACHE_CACHE_DIR": str(WORK / "default-cache"),
    "HF_HOME": str(WORK / "hf"),                 # never ~/.cache
    "HF_HUB_CACHE": str(WORK / "hf" / "hub"),
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",         # no "Loading weights" bars in the saved outputs
})
for name in ("MODELCACHE_CONFIG", "MODELCACHE_PROFILE", "HF_ENDPOINT", "HF_TOKEN"):
    os.environ.pop(name, None)
ENDPOINT = os.environ.get("MODELCACHE_ENDPOINTS")  # a Hub or mirror; unset: no network at all
if not ENDPOINT:
    os.environ["MODELCACHE_OFFLINE"] = "1"
CACHE_A, CACHE_B = WORK / "cache-a", WORK / "cache-b"
OFFLINE = {"MODELCACHE_OFFLINE": "1"}  # cache B never gets network
MODEL = "all-MiniLM-L6-v2"
# the library logs through logging.getLogger("modelcache"): show its warnings inline
logging.basicConfig(level=logging.WARNING, format="log: %(message).170s", stream=sys.stdout, force=True)
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no ipywidgets here, text bars are fine


def short(text) -> str:
    """Paths inside the workspace, written as $WORK/..."""
    return str(text).replace(str(WORK), "$WORK")


print("workspace: $WORK, a fresh temp dir (removed at the end)")

# %%
import json
import shlex
import subprocess


def run(args, cache, env=None) -> subprocess.CompletedProcess:
    """`python -m modelcache ARGS` with MODELCACHE_CACHE_DIR=cache, plain text output."""
    child = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    child.update({"MODELCACHE_CACHE_DIR": str(cache), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb",
                  **(env or {})})
    return subprocess.run([sys.executable, "-m", "modelcache", *map(str, args)], env=child,
                          capture_output=True, text=True, timeout=300)


def mc(*args, cache=CACHE_A, env=None, ok=(0,)) -> None:
    """Run a command and print it, its exit code and its output."""
    proc = run(args, cache, env)
    print(f"$ modelcache {short(shlex.join(map(str, args)))}    # {cache.name}, exit {proc.returncode}")
    print(short(proc.stdout + proc.stderr).rstrip() + "\n")
    if proc.returncode not in ok:
        raise RuntimeError(f"modelcache {args[0]} exited {proc.returncode}")


def mcj(*args, cache=CACHE_A, env=None, ok=(0,)) -> dict:
    """Run a command with --json; return its output, parsed, with the exit code added."""
    proc = run([*args, "--json"], cache, env)
    if proc.returncode not in ok:
        raise RuntimeError(f"modelcache {args[0]} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout) | {"exit_code": proc.returncode}


# %% [markdown]
# ## 1. Pull (or install) into cache A
#
# `pull` resolves the revision to a commit, fetches only what the backend needs (safetensors,
# tokenizer, configs), checks every file against the Hub's sha256 / git sha1, pins the commit in
# the lockfile and test-embeds "Hello world". A second `pull` of a locked model makes no request.

# %% tags=["pull"]
if ENDPOINT:
    mc("pull", MODEL)
    mc("pull", MODEL)  # locked and cached: no network
else:
    from modelcache import get_registry

    mc("install", MODEL, "--from", get_registry().get("bundled-mini").local_dir)

# %% [markdown]
# The Python API tells the same (`ModelManager` is what the CLI and the framework adapters use):

# %%
from modelcache import ModelManager, load_settings

manager_a = ModelManager(load_settings(model_cache={"directory": str(CACHE_A)}))
info = manager_a.info(MODEL)
print(f"{info['spec']['repo_id']} @ {info['commit'][:12]}  locked={info['locked']}  fingerprint={info['fingerprint']}")
print(f"source: {short(info['meta']['source_endpoint'])}")
for path, f in sorted(info["files"].items()):
    expected = f"sha256 {f['sha256'][:16]}" if f.get("sha256") else f"git sha1 {f['blob_id'][:16]}"
    print(f"  {path:<34} {f['size']:>10,} B  {expected}")

# %% [markdown]
# ## 2. Verify
#
# A plain `verify` trusts files whose size, mtime and inode have not changed since they were
# hashed (a warm start does not rehash 90 MB); `--full` rehashes everything and loads the model
# to embed a test sentence.

# %% tags=["verify"]
mc("verify", MODEL)
mc("verify", MODEL, "--full")
report = manager_a.verify(MODEL)
print(f"Python API: ok={report.ok}, {len(report.checked)} files checked, {len(report.hashed)} rehashed")

# %% [markdown]
# ## 3. Export, then import into a second cache with no network
#
# An export is a `.tar.gz` with a manifest (commit, files, sha256, sizes, registry spec). `import`
# refuses unsafe entries (`..`, absolute paths, links, devices), verifies every hash in a staging
# directory and only then publishes the snapshot (`--check` would also load the model). Cache B is
# offline; `embed` is the quick end-to-end check there.

# %% tags=["export-import"]
import tarfile

BUNDLE = WORK / "minilm.tar.gz"
mc("export", MODEL, "-o", BUNDLE)
with tarfile.open(BUNDLE) as tar:
    manifest = json.load(tar.extractfile("manifest.json"))
print("manifest:", {k: manifest[k] for k in ("repo_id", "revision", "commit", "locked")},
      f"+ {len(manifest['files'])} files\n")
mc("import", BUNDLE, "--no-check", cache=CACHE_B, env=OFFLINE)
mc("embed", "where did I park the car?", cache=CACHE_B, env=OFFLINE)

# %% [markdown]
# A damaged file is caught: flip one bit of a cached file in cache B and `verify` fails (exit 1),
# naming the file and moving it to the repo's `quarantine/` folder so that nothing loads it.
# Importing the bundle again restores it.

# %% tags=["corrupt"]
manager_b = ModelManager(load_settings(model_cache={"directory": str(CACHE_B)}, offline=True))
blob = (Path(manager_b.info(MODEL)["snapshot"]) / "vocab.txt").resolve()
blob.chmod(0o644)
data = bytearray(blob.read_bytes())
data[100] ^= 1
blob.write_bytes(bytes(data))
mc("verify", MODEL, cache=CACHE_B, env=OFFLINE, ok=(1,))
mc("import", BUNDLE, "--no-check", cache=CACHE_B, env=OFFLINE)
mc("verify", MODEL, cache=CACHE_B, env=OFFLINE)

# %% [markdown]
# ## 4. Prune
#
# `prune` removes partial downloads and quarantined files and enforces the budget
# (`model_cache.max_size_gb`, `max_models`, policy `lru` / `fifo` / `manual`); pinned models are
# never evicted. Without `--yes` it only says what would go. Here: the quarantined file from above, and,
# under a 50 MB budget, the model itself, until it is pinned.

# %% tags=["prune"]
mc("prune", "--dry-run", cache=CACHE_B)
mc("prune", "--dry-run", "--max-size-gb", "0.05", cache=CACHE_B)
mc("pin", MODEL, cache=CACHE_B)
mc("prune", "--dry-run", "--max-size-gb", "0.05", cache=CACHE_B)
mc("prune", "--yes", cache=CACHE_B)  # for real: the quarantined copy goes, the model stays


# %% [markdown]
# ## 5. Status and doctor
#
# `status` shows each tier of the fallback chain: could it serve now, which one would be active,
# and why. It loads nothing, and its exit code (0 ok, 1 failed, 2 degraded) suits a readiness
# probe. Below: cache B, then an empty offline cache, where the bundled copy would serve (the same
# embedding space as the preferred model, so not degraded). `doctor` adds disk space, endpoint
# reachability and the token (never printed). Their `--json` output, summarised:

# %% tags=["status"]
def show_status(cache) -> None:
    s = mcj("status", cache=cache, env=OFFLINE, ok=(0, 1, 2))
    print(f"$ modelcache status --json    # {cache.name}, exit {s['exit_code']}: {s['status']}")
    for t in s["tiers"]:
        active = "◀ active" if t["tier"] == s["active_tier"] else ""
        print(f"  {t['tier']:<10} can serve: {'yes' if t['available'] else 'no':<4} {active:<9} "
              f"{short(t['reason'] or '')}")
    print()


show_status(CACHE_B)
show_status(WORK / "cache-empty")
doctor = mcj("doctor", "--no-load", *([] if ENDPOINT else ["--no-network"]), ok=(0, 1, 2))
print(f"$ modelcache doctor --no-load --json    # cache-a, exit {doctor['exit_code']}: {doctor['status']}")
for c in doctor["checks"]:
    print(f"  {c['status']:<9} {c['name']}: {short(c['detail'])}")

# %% [markdown]
# ## 6. Metrics
#
# `modelcache metrics --port 0` serves Prometheus metrics over HTTP (`--once`: answer one scrape,
# then exit). A scrape of cache A:

# %% tags=["metrics-scrape"]
import urllib.request

child = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
server = subprocess.Popen([sys.executable, "-m", "modelcache", "metrics", "--port", "0", "--once", "--json"],
                          env=child | {"MODELCACHE_CACHE_DIR": str(CACHE_A)}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
first = server.stdout.readline()  # {"ok": true, "url": ..., "port": ...} once it listens
if not first:
    raise RuntimeError(f"modelcache metrics did not start: {server.communicate(timeout=60)[1]}")
url = json.loads(first)["url"]
scrape = urllib.request.urlopen(url, timeout=60).read().decode()
server.wait(timeout=60)
print(f"GET http://127.0.0.1:<port>/metrics: {len(scrape.splitlines())} lines; the modelcache_ samples:")
print("\n".join(line for line in scrape.splitlines() if line.startswith("modelcache_")))

# %% [markdown]
# In a service, modelcache reports into your own registry: `metrics.enable(registry)`. Here
# `ManagedEmbeddings` (LangChain; LlamaIndex's `ManagedEmbedding` reports the same) on a machine
# with no model at all falls to keyword mode; the fallback counter and the degraded gauge show it.

# %% tags=["metrics-api"]
from prometheus_client import CollectorRegistry, generate_latest

from langchain_modelcache import ManagedEmbeddings
from modelcache import metrics

registry = CollectorRegistry()
metrics.enable(registry)
NO_BUNDLED = WORK / "no-bundled.yaml"
NO_BUNDLED.write_text("fallback:\n  bundled: false  # as if modelcache[bundled] were not installed\n")
embeddings = ManagedEmbeddings(cache_dir=str(WORK / "no-model"), offline=True, config=str(NO_BUNDLED),
                               allow_degraded=True)  # keyword vectors, on purpose
embeddings.embed_query("hello")
print(f"\nactive tier {embeddings.active_tier}, degraded={embeddings.degraded}\n")
print("\n".join(line for line in generate_latest(registry).decode().splitlines()
                if line.startswith(("modelcache_fallback_activations_total", "modelcache_degraded"))))
metrics.disable()

# %% [markdown]
# ## 7. Effective configuration
#
# Defaults < profile < config file < environment; secrets are redacted.

# %%
config = mcj("config", "show")
print(short(json.dumps({k: config[k] for k in ("offline", "model_cache", "download", "fallback")}, indent=1)))

# %% tags=["cleanup"]
shutil.rmtree(WORK, ignore_errors=True)
print(f"done in {time.perf_counter() - T0:.0f}s; workspace removed")
