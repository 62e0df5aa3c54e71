# One command to run, one to test. Only Python 3.11+ and make are needed.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: install run demo test bench lint schema clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "slatrack needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.1"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/slatrack serve

# The service with a simulated helpdesk feeding it (Ctrl-C stops both).
demo: install
	$(BIN)/slatrack demo --serve

# Four test processes on our 2-core machines: most tests wait on the broker or a subprocess.
TEST_WORKERS ?= 4
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# Benchmarks, not timed tests: they print what they measured.
# bench/projector.py's defaults keep it within 15 minutes on 2 cores (its docstring says how);
# it uses PostgreSQL at SLATRACK_TEST_DATABASE_URL (default 127.0.0.1:5432) if it answers.
# bench/console.py: the console's pages over 100,000 tickets (about 1.5 minutes).
bench: install
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/projector.py
	$(BIN)/python bench/console.py

# mypy reads its settings (and what to check) from pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

schema: install
	$(BIN)/slatrack schema

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
