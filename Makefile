# The two commands: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest chaos bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/choreo up --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Unit and integration tests in three workers (pytest-xdist: each has its own PostgreSQL, broker
# and Stripe emulator, and every test its own ports, database and topic prefix; they mostly wait
# on I/O, so three fit two cores); then the e2e and chaos suites, one stack at a time.
pytest: $(STAMP)
	$(BIN)/pytest -n 3 tests/unit tests/integration
	$(BIN)/pytest tests/e2e tests/chaos

test: lint typecheck pytest

# The long chaos run: 1,000 orders per broker mode while parts are killed; prints the figures.
# (`make test` runs the same suite with 150 orders, memory broker only.)
chaos: $(STAMP)
	CHAOS_ORDERS=$${CHAOS_ORDERS:-1000} CHAOS_BROKERS=$${CHAOS_BROKERS:-memory,durable} \
		$(BIN)/pytest tests/chaos -s

# The saga measured by `choreo bench` on a stack of its own (memory broker): 10 orders/s for 60 s
# after a 10 s warm-up, then the ceiling and the synchronous baseline. Figures and chart in
# bench/results/<time>.json and .png; BENCH_ARGS replaces the load (e.g. "--concurrency 16").
BENCH_ARGS ?= --rate 10 --duration 60 --warmup 10
bench: $(STAMP)
	@mkdir -p bench/results
	@name=bench/results/$$(date -u +%Y%m%dT%H%M%SZ); \
		$(BIN)/choreo bench $(BENCH_ARGS) --json $$name.json --png $$name.png

clean:
	rm -rf $(VENV) .choreo .mypy_cache .pytest_cache .ruff_cache
