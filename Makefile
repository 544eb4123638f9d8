# The two commands: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest chaos bench images test-containers lock clean

# .venv holds exactly what requirements/dev.lock pins, each file checked against its hash: the
# runtime dependencies, the dev extra and setuptools, which builds the editable install (so that
# step needs no download either). The project itself goes in last, without dependencies;
# `pip check` then fails the install when pyproject.toml asks for something the lock lacks.
# requirements/runtime.lock pins the runtime dependencies alone, for deployments. Both locks
# are for Python 3.11 on Linux x86_64.
LOCK := requirements/dev.lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $(STAMP)

# Re-resolves both locks from pyproject.toml (run it after changing a dependency) with uv, which
# resolves for a target Python and platform and reads no pip configuration, so the locks come
# from PyPI alone. Versions already locked stay while pyproject.toml allows them; delete the
# locks first to move every pin to its newest release. dev.lock is constrained by runtime.lock,
# so the dev tools never shift a runtime pin.
UV := uv==0.13.9
LOCK_FOR := --no-config --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu --custom-compile-command 'make lock'
BUILD_REQUIRES := import tomllib; \
	print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")

lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(UV)
	@mkdir -p requirements
	$(BIN)/uv pip compile $(LOCK_FOR) pyproject.toml -o requirements/runtime.lock
	$(BIN)/python -c '$(BUILD_REQUIRES)' | $(BIN)/uv pip compile $(LOCK_FOR) \
		pyproject.toml - --extra dev -c requirements/runtime.lock -o $(LOCK)

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

# The images docker-compose.yml runs, built here without pulling from a registry: a Debian base
# (debootstrap), PostgreSQL from Debian's packages, Tansu for Kafka and the service image from
# wheels downloaded here (deploy/images/build.sh). Installs and starts a Docker engine and
# Compose v2 first when they are missing (root).
images: $(STAMP)
	deploy/images/build.sh

# The end-to-end scenarios against docker-compose.yml on those images (tests/containers). Not
# part of `make test`: from a machine with no engine and no images it takes ~4 min more.
CONTAINER_IMAGES := KAFKA_IMAGE=choreo-local/kafka:tansu POSTGRES_IMAGE=choreo-local/postgres:15 \
	CHOREO_IMAGE=choreo/service:dev KAFKA_FETCH_MAX_WAIT_MS=60
test-containers: images
	$(CONTAINER_IMAGES) $(BIN)/pytest tests/containers

clean:
	rm -rf $(VENV) .choreo .mypy_cache .pytest_cache .ruff_cache build
