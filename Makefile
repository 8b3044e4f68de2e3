# `make run` and `make test` are the whole set-up on a fresh machine: each creates .venv if it
# is missing and installs what it needs, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   ?= $(CURDIR)/data
export HF_HUB_OFFLINE := 1

.PHONY: run test lint clean browser bench

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: the CPU build is a local file, and any looser spec would pull GBs of
# CUDA packages; with 2.13.0 installed, the range in pyproject.toml is already met.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q torch==2.13.0
	$(PY) -m pip install --disable-pip-version-check -q -e '.[serving,postgres,azure,dev]'
	touch $(STAMP)

# A single-user local run: no tokens (the service says so loudly at start). Local deployments
# may use the demo's share and the README's example share (/tmp/loraplane-share).
SHARE_ROOTS ?= $(DATA)/demo-share:/tmp/loraplane-share
run: $(STAMP)
	LORAPLANE_AUTH=off LORAPLANE_LOCAL_SHARE_ROOTS=$(SHARE_ROOTS) $(VENV)/bin/loraplane serve --data-dir $(DATA) --demo

# The dashboard's tests drive Debian's Chromium through chromedriver: installed when missing
# (as root, from the machine's package sources); without them those tests skip, saying why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null || \
	  echo "could not install chromium and chromium-driver: the dashboard tests will be skipped" >&2

# The linters and the type checker first (seconds), then pytest, in PYTEST_WORKERS processes
# (pytest-xdist; 0 runs it in this one). pytest's exit code 5 means it collected no tests: an
# empty suite is a failure, not a pass.
PYTEST_WORKERS ?= 2
test: lint browser
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: an empty suite is a failure" >&2; exit 1; fi; \
	exit $$rc

# Each benchmark prints a table and writes bench/results/NAME.json (see the README's Performance).
bench: $(STAMP)
	$(PY) -m bench.swap
	$(PY) -m bench.steady
	$(PY) -m bench.converge
	$(PY) -m bench.shards
	$(PY) -m bench.api
	$(PY) -m bench.serving
	$(PY) -m bench.watch
	$(PY) -m bench.adapters
	$(PY) -m bench.detect
	$(PY) -m bench.detect --prove

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
