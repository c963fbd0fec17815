# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := .demo
DEMO_PATIENTS ?= 50
DEMO_PORT ?= 8080

.PHONY: demo test lint typecheck unit packages generate clean bytecode

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

# The package's bytecode, written where Python looks for it even under
# PYTHONDONTWRITEBYTECODE: compiled at each start instead, the generated schema module
# alone takes a server to some 340 MB instead of 80 (up-to-date files are skipped).
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q coffre

# A vault with generated patients and a vaccination campaign (three centres, two days from
# tomorrow, three seats), served on http://127.0.0.1:$(DEMO_PORT)/fhir.
demo: bytecode
	@if [ ! -f $(DEMO)/vault/storage.sqlite ]; then \
		$(BIN)/coffre init $(DEMO)/vault && \
		$(BIN)/coffre synth $(DEMO_PATIENTS) --out $(DEMO)/synth && \
		$(BIN)/coffre synth-campaign --sites 3 --days 2 --seats 3 --out $(DEMO)/campaign && \
		$(BIN)/coffre import --vault $(DEMO)/vault $(DEMO)/synth $(DEMO)/campaign; \
	fi
	@$(BIN)/python scripts/demo_access.py setup --vault $(DEMO)/vault --url http://127.0.0.1:$(DEMO_PORT)
	$(BIN)/coffre serve --vault $(DEMO)/vault --port $(DEMO_PORT)

lint: $(STAMP)
	$(BIN)/ruff check coffre tests bench scripts
	$(BIN)/ruff format --check coffre tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# Debian packages the tests run against, installed once, as root, when missing: SoftHSM2
# (the PKCS#11 token paired with PostgreSQL in the tests), PostgreSQL (the second storage; the
# tests start their own server, so no service needs to run) and Chromium (the portal's
# browser test; Playwright drives it, no browser is downloaded) and curl (the README's tour,
# run as written).
packages:
	@missing=""; \
		command -v softhsm2-util >/dev/null || missing="$$missing softhsm2"; \
		[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
		command -v curl >/dev/null || missing="$$missing curl"; \
		ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
		if [ -z "$$missing" ]; then :; elif [ "$$(id -u)" = 0 ]; then \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -q $$missing || { apt-get update -q && apt-get install -y -q $$missing; }; \
		else echo "missing:$$missing: 'sudo apt-get install$$missing' (their tests skip until then)"; fi

unit: bytecode packages
	$(BIN)/pytest -n 2 --dist loadfile -p no:cacheprovider

test: lint typecheck unit

# Regenerate coffre/fhir/_schema_r4.py and _definitions_r4.py from ../shared/data.
generate: $(STAMP)
	$(BIN)/python scripts/generate_fhir_modules.py
	$(BIN)/ruff format coffre/fhir/_definitions_r4.py
	$(BIN)/python scripts/generate_search_parameters.py

clean:
	rm -rf $(VENV) $(DEMO) .mypy_cache .ruff_cache .pytest_cache
