# The front door: `make demo` runs the demo cohort end to end, `make test` runs the tests.
# Each creates .venv (if missing or stale) and installs the package with what it needs.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

.PHONY: install demo test test-fast bench
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hist2rna demo --out demo_output

# The suite runs on TEST_WORKERS processes, a test file each at a time (its module fixtures, Ray's
# instance among them, stay in one process): 2 by default, as many as a 2-core machine has. Files go
# out in the order tests/conftest.py sorts them (those with slow tests first), not by test count.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

# While developing: every test but the slow ones (marked `slow`: the demo's chain, Ray, kills, crossvals).
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" tests

bench: $(STAMP)
	$(VENV)/bin/python -m experiments.bench_extract
