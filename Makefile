# The two set-up commands of the README:
#   make run   - create .venv if missing, install, run the whole pipeline on the demo data
#   make test  - create .venv if missing, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: run test install lock dvc-yaml clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"

# Installs the locked environment, then the project itself (editable).
$(VENV)/.installed: $(BIN)/python requirements.lock pyproject.toml
	$(BIN)/python -m pip install -q -r requirements.lock "setuptools>=68,<81"
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

run: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --resources gpu=2
	@echo "report: reports/index.html"

# One worker per core, each taking whole test files (--dist loadfile), so that a file's
# module fixtures (the tiny pipeline's Snakemake and DVC runs) are built once; `dvc repro`
# runs its stages one at a time, and the other core works through the other files.
TEST_WORKERS ?= auto
test: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Re-render dvc.yaml from the Snakefile (after editing rules or the number of folds).
dvc-yaml: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python workflow/scripts/render_dvc_yaml.py --out dvc.yaml

# Regenerate the lock after changing dependencies in pyproject.toml.
lock:
	rm -rf /tmp/fer-lock-venv && $(PYTHON) -m venv /tmp/fer-lock-venv
	/tmp/fer-lock-venv/bin/python -m pip install -q --upgrade "pip>=24"
	/tmp/fer-lock-venv/bin/python -m pip install -q ".[test]"
	/tmp/fer-lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^fer[ =@]' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements.lock

clean-venv:
	rm -rf $(VENV)
