# Stormwatch — the two commands a new user needs: `make demo` and `make test`.
# Each sets up what it needs on a fresh machine (Python 3.11, Node 20) and reuses it on the next run.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR := .demo
# The demo's Azurite listens on three ports from this one (blob, queue, table): make demo AZURITE_PORT=20000,
# then make dashboard AZURITE_PORT=20000. The demo never uses a port something else already listens on.
AZURITE_PORT ?= 10000

.PHONY: setup demo dashboard screenshot test lint typecheck unit infra-check audit package bench soak stop clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(PY) -m shared demo --data $(DEMO_DIR) --azurite-port $(AZURITE_PORT)

# The HTTP functions (dashboard included) over the demo's Azurite, on 127.0.0.1:7071, until Ctrl+C.
dashboard: setup
	$(PY) -m shared serve --azurite-port $(AZURITE_PORT)

# docs/dashboard.png and docs/teams-card.png from the bundled samples, in headless Chromium (docs/dashboard.md).
screenshot: setup
	$(PY) docs/screenshot.py

test: setup lint typecheck infra-check audit unit

lint: setup
	$(VENV)/bin/ruff check .

typecheck: setup
	$(VENV)/bin/mypy shared $(wildcard *_fn) function_app.py tests bench docs/screenshot.py .ci

unit: setup
	$(PY) -m pytest

# Known vulnerabilities in the runtime pins and their installed dependencies (.ci/audit_deps.py says how and
# what it cannot see); fails on a finding, prints "NOT RUN" and passes when PyPI cannot be reached.
audit: setup
	$(PY) .ci/audit_deps.py

infra-check:
	bash infra/check.sh

# The folder to deploy, mappers compiled, dependencies included (README "Deploy"); Linux x86-64, CPython 3.11.
package: setup
	$(PY) .ci/package.py --out build/app

# normalize twice: the sources, then a package's compiled mappers (built without dependencies: the venv has them).
bench: setup
	$(PY) bench/normalize.py
	$(PY) .ci/package.py --out build/bench --no-dependencies
	PYTHONPATH=build/bench $(PY) bench/normalize.py
	$(PY) bench/detect.py
	$(PY) bench/enrich.py
	$(PY) bench/load.py
	$(PY) bench/scale.py

# The crash/redelivery soak: 200,000 records twice (clean, then with faults); about 12 minutes.
soak: setup
	$(PY) bench/soak.py

stop:
	$(PY) -m shared azurite stop --data $(DEMO_DIR)/azurite

clean: stop
	rm -rf $(DEMO_DIR) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
