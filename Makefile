# Everything a fresh machine needs is set up by these targets; a re-run with nothing changed is quick.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench proto clean system-deps

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

# Debian packages: Graphviz renders the DAG picture to SVG; nginx and docker-compose are for the
# deployment's tests (tests/test_deploy.py runs deploy/nginx.conf with nginx and validates
# docker-compose.yml). Only what is missing is installed; without root we warn and carry on
# (DAG pictures are DOT only, the deployment tests skip).
SYSTEM_DEPS := dot:graphviz nginx:nginx docker-compose:docker-compose
system-deps:
	@missing=""; for dep in $(SYSTEM_DEPS); do \
	  command -v $${dep%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${dep%%:*} ] || missing="$$missing $${dep#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing"; \
	  else echo "warning: not root, so not installing$$missing (DOT only; deployment tests skip)"; fi; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[server,test,dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis
