# Two commands matter: `make demo` and `make test`. Everything they need is installed from here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the tests and the benchmark meet for real.
SYSTEM_PACKAGES := haproxy nginx-light wrk hey prometheus curl openssl redis-server tmux
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint unit bench system-deps venv dev clean fuzz fuzz-short

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
# the second test pass runs. Rebuilt when any source changes. Built as `pip install .` builds it, in an
# isolated environment with only the build requirements, so a build that breaks for users fails here.
# That environment takes the newest mypy (mypyc) and setuptools the requirements allow, as users get.
COMPILED := .compiled
$(COMPILED)/.stamp: $(VENV)/.dev setup.py pyproject.toml $(shell find src -name '*.py')
	rm -rf $(COMPILED) build  # setuptools' build/ would carry stale extensions into the new build
	$(BIN)/pip install -q --no-deps -t $(COMPILED) .
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
	$(BIN)/ruff check src tests bench fuzz setup.py
	$(BIN)/ruff format --check src tests bench fuzz setup.py
	$(BIN)/mypy

# The mypyc build and the short fuzzing run together (each takes one core, and no test runs meanwhile
# to be slowed by them): that keeps `make test` near 10 minutes on a fresh clone.
test: dev system-deps lint
	$(MAKE) --no-print-directory -j2 --output-sync=target $(COMPILED)/.stamp fuzz-short
	$(BIN)/pytest -q
	@echo "the integration and end-to-end suites again, against the compiled build, on uvloop (what pillion run uses):"
	PYTHONPATH=$(CURDIR)/$(COMPILED) $(BIN)/python -c 'import pillion.proxy.downstream as m; assert m.__file__.endswith(".so"), m.__file__'
	PYTHONPATH=$(CURDIR)/$(COMPILED) PILLION_TEST_LOOPS=uvloop $(BIN)/pytest -q -p no:cacheprovider tests/integration tests/e2e tests/unit/test_module_imports.py \
	  tests/unit/test_access_log.py tests/unit/test_trace_context.py

# Fuzzing (fuzz/): atheris harnesses for request parsing, response parsing, config loading and the
# certificate reader, on the pure-Python install (atheris instruments Python code). An input over 1 s
# fails (-timeout=1), as does any failed check; the input is saved under $(FUZZ_OUT)/artifacts. New
# corpus entries go to $(FUZZ_OUT)/<harness>, the seeds stay in fuzz/corpus/<harness>. `make test` runs FUZZ_SHORT
# (harness=seconds, 65 s in all); `make fuzz` runs FUZZ_RUNS inputs per harness (~16 min for requests).
FUZZ_RUNS ?= 1000000
FUZZ_SHORT ?= request=30 response=15 config=10 cert=10
FUZZ_OUT := .fuzz
FUZZ_OPTS = -timeout=1 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=$(FUZZ_OUT)/artifacts/$$h-
fuzz_dict = $$( [ $$h = config ] || [ $$h = cert ] || echo -dict=fuzz/http.dict)
# One harness: $$h and $$limit set by the caller; the log is kept, and shown in part when it fails.
fuzz_run = mkdir -p $(FUZZ_OUT)/$$h $(FUZZ_OUT)/artifacts; \
	if $(BIN)/python fuzz/fuzz_$$h.py $(FUZZ_OPTS) $(fuzz_dict) $$limit $(FUZZ_OUT)/$$h fuzz/corpus/$$h \
	  >$(FUZZ_OUT)/$$h.log 2>&1; then \
	  echo "fuzz $$h: $$(grep -h '^Done' $(FUZZ_OUT)/$$h.log); $$(grep -h '^slowest' $(FUZZ_OUT)/$$h.log | tail -1)"; \
	else echo "fuzz $$h FAILED (log: $(FUZZ_OUT)/$$h.log):"; grep -v -E '^\#[0-9]+ +(NEW|REDUCE|pulse)' \
	  $(FUZZ_OUT)/$$h.log | tail -40; failed="$$failed $$h"; fi

fuzz-short: dev
	@failed=""; for spec in $(FUZZ_SHORT); do h=$${spec%%=*}; limit=-max_total_time=$${spec#*=}; \
	  $(fuzz_run); done; [ -z "$$failed" ] || { echo "fuzzing failed:$$failed"; exit 1; }

fuzz: dev
	@failed=""; for h in request response config cert; do limit=-runs=$(FUZZ_RUNS); \
	  $(fuzz_run); done; [ -z "$$failed" ] || { echo "fuzzing failed:$$failed"; exit 1; }

bench: dev system-deps $(COMPILED)/.stamp
	PYTHONPATH=$(CURDIR)/$(COMPILED) $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(COMPILED) build .fuzz *.egg-info .mypy_cache .pytest_cache .ruff_cache
