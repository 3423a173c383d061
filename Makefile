# The few commands a person runs. Each one sets up .venv itself when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint bench bench-quick bench-full clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,examples]'
	touch $(STAMP)

## the full stack on loopback, serving the examples
up: $(STAMP)
	$(BIN)/palm up --config palm.yaml

## lint, types and the whole test suite (installs docker-compose and iproute2 when missing)
test: $(STAMP)
	scripts/system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy palm
	$(BIN)/python -m pytest -q

## palm side by side with its peers (installs them into .peers-venv / .pylm-venv,
## and wrk, the HTTP benchmark's load generator, with scripts/system-deps)
bench: $(STAMP)
	scripts/system-deps
	$(BIN)/python -m benchmarks.run

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

bench-full: $(STAMP)
	scripts/system-deps
	$(BIN)/python -m benchmarks.run --full

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy palm

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
