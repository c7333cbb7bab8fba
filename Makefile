# The project's two commands:
#
#   make run    start the dashboard (streamlit run app.py) on http://localhost:8501
#   make test   the linter (ruff check) and the whole test suite (python -m pytest -q)
#
# Both create the virtual environment .venv (python3 -m venv) when it is absent and
# install into it: requirements.txt for run, requirements-dev.txt (which includes
# requirements.txt) for test. An install is re-done only when its requirements file
# changed since the last one: stamp files inside .venv remember when that was.
#
# Extra arguments: make run ARGS="--server.port 8600"; make test PYTEST_ARGS="-x tests/test_audit.py".

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-requirements
DEV_STAMP := $(VENV)/.installed-requirements-dev

.DEFAULT_GOAL := help
.PHONY: help run test lint clean

help:
	@echo "make run    start the dashboard on http://localhost:8501 (creates .venv and installs on first use)"
	@echo "make test   ruff check and the whole test suite (creates .venv and installs on first use)"
	@echo "make lint   ruff check only"
	@echo "make clean  remove .venv and the test and lint caches"

# pyvenv.cfg is written when the environment is made: a new environment makes the stamps out of date.
$(VENV)/pyvenv.cfg:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): requirements.txt $(VENV)/pyvenv.cfg
	$(BIN)/python -m pip install -r requirements.txt
	@touch $@

$(DEV_STAMP): requirements-dev.txt requirements.txt $(VENV)/pyvenv.cfg
	$(BIN)/python -m pip install -r requirements-dev.txt
	@touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/python -m streamlit run app.py $(ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

# Both steps run, so that one report shows lint and test results; the target fails if either does.
test: $(DEV_STAMP)
	@status=0; \
	echo "$(BIN)/ruff check ."; $(BIN)/ruff check . || status=1; \
	echo "$(BIN)/python -m pytest -q $(PYTEST_ARGS)"; $(BIN)/python -m pytest -q $(PYTEST_ARGS) || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
