# Two commands matter: `make demo` and `make test`. Everything they need is installed from here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the tests and the benchmark meet for real.
SYSTEM_PACKAGES := haproxy nginx-light wrk hey prometheus curl openssl redis-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint unit bench system-deps venv dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Runtime install only: what a user gets from `pip install .`.
$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py
	rm -rf build
	$(BIN)/pip install -q .
	touch $@

# Development install: editable and pure Python, so an edited module is what runs (see setup.py).
$(VENV)/.dev: $(BIN)/python pyproject.toml setup.py
	PILLION_PURE_PYTHON=1 $(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

# The build users get, with the hot modules compiled by mypyc: what `make bench` measures and what
# the second test pass runs. Rebuilt when any source changes.
COMPILED := .compiled
$(COMPILED)/.stamp: $(VENV)/.dev setup.py pyproject.toml $(shell find src -name '*.py')
	rm -rf $(COMPILED) build  # setuptools' build/ would carry stale extensions into the new build
	$(BIN)/pip install -q --no-deps --no-build-isolation -t $(COMPILED) .
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.dev

demo: venv
	$(BIN)/pillion demo $(DEMO_ARGS)

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: dev
	$(BIN)/ruff check src tests bench setup.py
	$(BIN)/ruff format --check src tests bench setup.py
	$(BIN)/mypy

test: dev system-deps lint $(COMPILED)/.stamp
	$(BIN)/pytest -q
	@echo "the whole suite again, against the compiled build:"
	PYTHONPATH=$(CURDIR)/$(COMPILED) $(BIN)/python -c 'import pillion.proxy.downstream as m; assert m.__file__.endswith(".so"), m.__file__'
	PYTHONPATH=$(CURDIR)/$(COMPILED) $(BIN)/pytest -q -p no:cacheprovider

bench: dev system-deps $(COMPILED)/.stamp
	PYTHONPATH=$(CURDIR)/$(COMPILED) $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(COMPILED) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
