#!/usr/bin/env bash
# A core-only install (`pip install .`, no extras, no torch) must run the CLI and pull a model.
#
#   tests/packaging/core_install.sh HUB_PYTHON CORE_VENV
#
# HUB_PYTHON (the test venv's python) serves a local Hub with a tiny model repo
# (tests/packaging/serve_hub.py); CORE_VENV's `modelcache` runs `--help`, `list`, `pull` (human
# and --json) and `verify` against it, each in a temp cache, from a temp cwd (so nothing is
# imported from the source tree). The pull must exit 0, verify sizes, hashes and formats, and say
# that the functional "Hello world" check runs at first load (no backend extra installed).
# Called by `make test-core-install`; exits non-zero on the first failed check.
set -euo pipefail

HUB_PY="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"  # absolute, symlink kept: a venv's python
CORE=$(cd "$2" && pwd)
MC="$CORE/bin/modelcache"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/modelcache-core.XXXXXX")
HUB_PID=""

cleanup() {
    if [ -n "$HUB_PID" ] && kill -0 "$HUB_PID" 2>/dev/null; then
        kill "$HUB_PID" && wait "$HUB_PID" || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

step_start=0
step() { step_start=$(date +%s%N); echo "== core-install: $*"; }
done_() { local ms=$(( ($(date +%s%N) - step_start) / 1000000 )); printf '   ok (%d.%03ds)\n' $((ms / 1000)) $((ms % 1000)); }
fail() { echo "core-install FAILED: $*" >&2; exit 1; }

step "the venv holds the core only (no torch, no backend)"
"$CORE/bin/python" - <<'EOF' || fail "backend packages in the core venv"
import importlib.util as u, sys
extra = [m for m in ("torch", "transformers", "sentence_transformers", "onnxruntime", "langchain_core")
         if u.find_spec(m) is not None]
sys.exit(f"installed without being asked for: {extra}" if extra else 0)
EOF
done_

step "start the local test Hub (olah, with $HUB_PY)"
(cd "$ROOT" && exec "$HUB_PY" tests/packaging/serve_hub.py "$TMP/hub" --ready-file "$TMP/hub.json") \
    >"$TMP/hub.log" 2>&1 &
HUB_PID=$!
for _ in $(seq 1 300); do
    [ -f "$TMP/hub.json" ] && break
    kill -0 "$HUB_PID" 2>/dev/null || { cat "$TMP/hub.log" >&2; fail "the test Hub exited"; }
    sleep 0.5
done
[ -f "$TMP/hub.json" ] || { cat "$TMP/hub.log" >&2; fail "the test Hub did not start in 150 s"; }
read -r ENDPOINT REPO COMMIT < <("$CORE/bin/python" -c \
    'import json,sys; d=json.load(open(sys.argv[1])); print(d["endpoint"], d["repo_id"], d["commit"])' "$TMP/hub.json")
echo "   $REPO@${COMMIT:0:12} at $ENDPOINT"
done_

# every cache and config location in the temp dir; nothing from the caller's shell
# (OFFLINE=1 run_mc ...: with HF_HUB_OFFLINE=1)
run_mc() {
    local cache="$1"; shift
    (cd "$TMP" && env -u HF_TOKEN -u HF_ENDPOINT -u HF_HUB_OFFLINE -u PYTHONPATH \
        $(env | sed -n 's/^\(MODELCACHE_[A-Z_]*\)=.*/-u \1/p') \
        HF_HOME="$TMP/$cache/hf" HF_HUB_CACHE="$TMP/$cache/hf/hub" \
        MODELCACHE_HOME="$TMP/$cache/modelcache" MODELCACHE_CACHE_DIR="$TMP/$cache/modelcache/cache" \
        ${OFFLINE:+HF_HUB_OFFLINE=1} "$MC" "$@")
}

step "modelcache --help"
run_mc a --help >"$TMP/help.out" || { cat "$TMP/help.out"; fail "modelcache --help"; }
grep -q "pull" "$TMP/help.out" || fail "--help does not list pull"
done_

step "modelcache list"
run_mc a list >"$TMP/list.out" || { cat "$TMP/list.out"; fail "modelcache list"; }
run_mc a list --json >"$TMP/list.json" || { cat "$TMP/list.json"; fail "modelcache list --json"; }
grep -q '"all-MiniLM-L6-v2"' "$TMP/list.json" || fail "list does not show the registry"
done_

step "modelcache pull $REPO --endpoint $ENDPOINT"
run_mc a pull "$REPO" --endpoint "$ENDPOINT" >"$TMP/pull.out" 2>&1 || { cat "$TMP/pull.out"; fail "modelcache pull"; }
sed 's/^/   | /' "$TMP/pull.out"
said=$(tr -s '\n ' ' ' <"$TMP/pull.out")  # rich wraps at 80 columns without a terminal
grep -q "verified .* files: size, hash, format" <<<"$said" || fail "pull does not say it verified the files"
grep -q 'functional check: .*runs at first load' <<<"$said" || fail "pull does not say the functional check is deferred"
done_

step "modelcache verify (offline)"
OFFLINE=1 run_mc a verify >"$TMP/verify.out" 2>&1 || { cat "$TMP/verify.out"; fail "modelcache verify"; }
sed 's/^/   | /' "$TMP/verify.out"
done_

step "modelcache pull $REPO --json (a second, empty cache)"
run_mc b pull "$REPO" --endpoint "$ENDPOINT" --json >"$TMP/pull.json" || { cat "$TMP/pull.json"; fail "modelcache pull --json"; }
"$CORE/bin/python" - "$TMP/pull.json" "$COMMIT" <<'EOF' || { cat "$TMP/pull.json"; fail "pull --json"; }
import json, sys
data = json.load(open(sys.argv[1]))
assert data["ok"] and data["commit"] == sys.argv[2], data
assert "model.safetensors" in data["downloaded"] and data["bytes_downloaded"] > 0, data
deferred = (data.get("functional") or {}).get("deferred")
assert deferred and "first load" in deferred, data.get("functional")
print(f"   {len(data['downloaded'])} files, {data['bytes_downloaded']} bytes; functional: {deferred}")
EOF
done_

echo "core-install: all checks passed"
