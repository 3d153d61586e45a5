# The two commands: `make up` (start the local stack on SQLite) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test install lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/strangler up

test: $(STAMP)
	scripts/ensure-test-services
	$(BIN)/ruff check strangler_proxy legacy_monolith extracted_services tests bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache

lint: $(STAMP)
	$(BIN)/ruff check strangler_proxy legacy_monolith extracted_services tests bench
