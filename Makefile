# Every target installs what it needs into .venv first, so a fresh clone needs only Python 3.11 and make.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
export QUANYU_HOME ?= $(CURDIR)/.quanyu

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files: re-install only when the project's metadata changes.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/quanyu demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

# statsforecast (a peer in `bench demand`) needs pandas < 3: it gets its own environment
.venv-peers/bin/python:
	$(PYTHON) -m venv .venv-peers
	.venv-peers/bin/pip install --quiet statsforecast==2.1.1 pyarrow

bench: $(VENV)/.installed-dev .venv-peers/bin/python
	$(BIN)/quanyu bench lake --scales small,medium
	$(BIN)/quanyu bench demand --lake $(QUANYU_HOME)/bench/small/lake

clean:
	rm -rf $(VENV) .venv-peers .quanyu .pytest_cache .hypothesis
