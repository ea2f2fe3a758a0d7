# Everything a fresh machine needs is set up by these targets; a re-run with nothing changed is quick.
# Python 3.11 (pyproject's requires-python): python3.11 where there is one, else python3, whose
# version check-python checks before anything is installed.
ifndef PYTHON
PYTHON := $(if $(shell command -v python3.11 2>/dev/null),python3.11,python3)
endif
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench proto clean system-deps check-python venv

# The main job: the engine's worked example, then a local server started, the examples verified
# through it over gRPC, and the server stopped (fails if an example gets an unexpected verdict).
run: $(STAMP)
	$(PY) -m crossgrad.engine.demo --out build
	$(PY) -m crossgrad.clients.examples --start-server

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP)
	$(PY) -m benchmarks.engine_bench
	$(PY) -m benchmarks.verify_bench
	$(PY) -m benchmarks.service_bench
	$(PY) -m benchmarks.soundness --quick
	$(PY) -m benchmarks.suite_bench --quick

# Regenerate crossgrad.v1 (Python code and .pyi stubs) from proto/crossgrad/v1/*.proto.
proto: $(STAMP)
	$(PY) proto/generate.py

# A Python other than 3.11 is refused at once, naming the variable that picks another (pip
# refused it only after a minute of downloads, and left a .venv of the wrong Python behind).
check-python:
	@version=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
	  || { echo "error: cannot run $(PYTHON): crossgrad needs Python 3.11; give one with make PYTHON=/path/to/python3.11" >&2; exit 1; }; \
	[ "$$version" = 3.11 ] \
	  || { echo "error: $(PYTHON) is Python $$version; crossgrad needs 3.11: give one with make PYTHON=python3.11 (or its path)" >&2; exit 1; }

# Debian packages: Graphviz renders the DAG picture to SVG; nginx and docker-compose are for the
# deployment's tests (tests/test_deploy.py runs deploy/nginx.conf with nginx and validates
# docker-compose.yml); python3.11-venv holds the ensurepip that `python3.11 -m venv` needs on
# Debian's own Python. Only what is missing is installed; without root we warn and carry on
# (DAG pictures are DOT only, the deployment tests skip; venv says to install python3.11-venv).
SYSTEM_DEPS := dot:graphviz nginx:nginx docker-compose:docker-compose
system-deps:
	@missing=""; for dep in $(SYSTEM_DEPS); do \
	  command -v $${dep%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${dep%%:*} ] || missing="$$missing $${dep#*:}"; \
	done; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3.11-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing"; \
	  else echo "warning: not root, so not installing$$missing (DOT only; deployment tests skip)"; fi; \
	fi

# The virtual environment, made anew when it holds another Python than 3.11 (venv over it kept
# the other Python's packages, so PYTHON=python3.11 after a failed python3.12 run failed too).
venv: check-python
	@if [ -e $(VENV) ] && [ "$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != 3.11 ]; then \
	  echo "$(VENV) holds another Python than 3.11: making it anew with $(PYTHON)"; rm -rf $(VENV); \
	fi
	$(PYTHON) -m venv $(VENV)

# The server's dependencies at the versions the Docker image installs (deploy/requirements.lock):
# without them a fresh venv took what the ranges allowed that day (ml-dtypes 0.7.0 for the lock's
# 0.6.0), and the tests no longer ran what ships.
$(STAMP): pyproject.toml deploy/requirements.lock
	@$(MAKE) --no-print-directory check-python
	@$(MAKE) --no-print-directory system-deps
	@$(MAKE) --no-print-directory venv
	$(PY) -m pip install -q -c deploy/requirements.lock -e '.[server,test,dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis
