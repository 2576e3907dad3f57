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

# the planner's browser tests drive Debian's Chromium (never a browser a test tool downloads)
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "the planner's tests need Chromium at $(CHROMIUM) (Debian: apt-get install chromium)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium >/dev/null

# the production tracking store's test (mlflow server on PostgreSQL) runs a private PostgreSQL
# server from Debian's packages
POSTGRES := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
ifeq ($(POSTGRES),)
POSTGRES := postgresql-server
.PHONY: postgresql-server
postgresql-server:
	@command -v apt-get >/dev/null || { echo "the tracking-store tests need PostgreSQL's server (Debian: apt-get install postgresql)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq postgresql >/dev/null
endif

# `quanyu serve` puts Debian's HAProxy on its port, forwarding to the replica of each request's family
HAPROXY := /usr/sbin/haproxy
$(HAPROXY):
	@command -v apt-get >/dev/null || { echo "quanyu serve and its tests need $(HAPROXY) (Debian: apt-get install haproxy)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq haproxy >/dev/null

# the demo serves behind HAProxy, as `quanyu serve` does by default
demo: $(VENV)/.installed $(HAPROXY)
	$(BIN)/quanyu demo

test: $(VENV)/.installed-dev $(CHROMIUM) $(POSTGRES) $(HAPROXY)
	$(BIN)/python -m pytest --durations=25

# the peers of the benchmarks need pandas < 3 (statsforecast, in `bench demand`) or a geopandas
# stack (spopt, in `bench location`) or compiled extras (implicit, in `bench matching`): they get
# their own environment
.venv-peers/bin/python:
	$(PYTHON) -m venv .venv-peers
	.venv-peers/bin/pip install --quiet statsforecast==2.1.1 spopt==0.7.0 pulp==3.3.2 implicit==0.7.3 pyarrow

# the lake the location family learns from: 30 cities x 20 stores (about 90 s)
CHAIN_LAKE := $(QUANYU_HOME)/bench/chain/lake
$(CHAIN_LAKE)/curated/store_performance: | $(VENV)/.installed
	$(BIN)/quanyu data generate --scale chain --seed 42 --lake $(CHAIN_LAKE)
	$(BIN)/quanyu data merge --lake $(CHAIN_LAKE)

bench: $(VENV)/.installed-dev .venv-peers/bin/python $(CHAIN_LAKE)/curated/store_performance
	$(BIN)/python -m pytest -m cluster
	$(BIN)/quanyu bench lake --scales small,medium
	$(BIN)/quanyu bench demand --lake $(QUANYU_HOME)/bench/small/lake
	$(BIN)/quanyu bench matching --lake $(QUANYU_HOME)/bench/small/lake
	$(BIN)/quanyu bench location --lake $(CHAIN_LAKE)
	$(BIN)/quanyu bench retrain --lake $(QUANYU_HOME)/bench/small/lake
	$(BIN)/quanyu bench cli
	# serving, on the champions of the small lake's daily retrain (a registry of their own)
	QUANYU_HOME=$(QUANYU_HOME)/bench/small-serving $(BIN)/quanyu retrain --lake $(QUANYU_HOME)/bench/small/lake
	QUANYU_HOME=$(QUANYU_HOME)/bench/small-serving $(BIN)/quanyu bench serving --seconds 8

clean:
	rm -rf $(VENV) .venv-peers .quanyu .pytest_cache .hypothesis
