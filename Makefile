# cinet — two commands: `make demo` and `make test`. Everything is installed from nothing into .venv.
PYTHON ?= python3.11
VENV ?= .venv
# torch and torchvision are pinned for fast, repeatable set-up; override e.g. TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# make demo: config and output folder (the demo replaces its own previous run there, and refuses any other folder)
DEMO_CONFIG ?= configs/demo.yaml
DEMO_DIR ?= runs/demo
# extra key=value overrides, e.g. DEMO_ARGS="trainer.profiler=simple trainer.precision=32"
DEMO_ARGS ?=
# idle OpenMP threads sleep instead of spinning: on a busy 2-core machine the demo runs ~1/3 faster (measured),
# on an idle one ~10% slower
DEMO_OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test test-all test-browser serve lint demo clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]' $(TORCH_SPEC)
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# make test-browser: `cinet serve` in headless Chromium, driven by Playwright; needs the Debian browser once:
#   apt-get update && apt-get install -y chromium
# Saves the page's screenshot to SCREENSHOT; SERVE_CHECKPOINT (default: the demo's, when present) is served.
SCREENSHOT ?= docs/images/serve.png
SERVE_CHECKPOINT ?= $(wildcard $(DEMO_DIR)/last.ckpt)
test-browser: $(STAMP)
	CINET_SERVE_SCREENSHOT=$(SCREENSHOT) CINET_SERVE_CHECKPOINT=$(SERVE_CHECKPOINT) $(PY) -m pytest -m browser $(PYTEST_ARGS)

# make serve: the web page of `cinet serve` for the demo's checkpoint on http://127.0.0.1:7860
serve: $(STAMP)
	$(VENV)/bin/cinet serve --checkpoint $(DEMO_DIR)/last.ckpt

test-all: $(STAMP)
	$(PY) -m pytest -m '' $(PYTEST_ARGS)

demo: $(STAMP)
	OMP_WAIT_POLICY=$(DEMO_OMP_WAIT_POLICY) $(PY) -m cinet.commands.demo --config $(DEMO_CONFIG) --run-dir $(DEMO_DIR) $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

clean:
	rm -rf $(VENV) runs/demo .pytest_cache
