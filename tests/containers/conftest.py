"""The compose stack under test: docker-compose.yml started with testcontainers' DockerCompose
on free host ports, under a project name of its own, and removed with its volumes afterwards.

The images are what the environment names (KAFKA_IMAGE, POSTGRES_IMAGE, CHOREO_IMAGE; `make
test-containers` names the local stand-ins of `make images`). Every test here is skipped, with
the reason, when no Docker engine answers; a missing image or a stack that does not come up is
a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from testcontainers.compose import DockerCompose

from choreo.testing import free_port, repository_root

PUBLISHED = {
    "gateway": "CHOREO_GATEWAY_PORT",
    "stripe": "CHOREO_STRIPE_PORT",
    "sendgrid": "CHOREO_SENDGRID_PORT",
    "twilio": "CHOREO_TWILIO_PORT",
}

# Every scenario comes from one address (this machine): its buckets are raised, as in tests/e2e.
LIMITS = {
    "GATEWAY_ADDRESS_RATE_LIMIT_PER_SECOND": "1000",
    "GATEWAY_ADDRESS_RATE_LIMIT_BURST": "2000",
    "USER_CREDENTIAL_ATTEMPTS_PER_ADDRESS": "1000",
    # ... and the risk screening's velocity limits: every scenario pays with Stripe's 4242.
    "PAYMENT_RISK_CARD_REVIEW_ATTEMPT": "100000",
    "PAYMENT_RISK_CARD_DECLINE_ATTEMPT": "100000",
    "PAYMENT_RISK_ADDRESS_DECLINE_ATTEMPT": "100000",
}


def docker_answers() -> str | None:
    """Why the tests here cannot run, or None when a Docker engine and Compose v2 answer."""
    try:
        engine = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"no Docker client or engine: {error}"
    if engine.returncode != 0:
        said = engine.stderr.strip().splitlines()
        return f"no Docker engine answers ({said[-1] if said else 'docker info failed'})"
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if compose.returncode != 0:
        return "no Docker Compose v2 (`docker compose`); `make test-containers` installs it"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = docker_answers()
    if reason is None:
        return
    for item in items:
        if "tests/containers/" in str(item.path):
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class ComposeSystem:
    """A running compose stack, seen as the scenarios see a stack (`tests.e2e.journey.System`)."""

    compose: DockerCompose
    environment: dict[str, str]

    def url(self, part: str) -> str:
        """Published parts on this machine's loopback; the others at their container's
        address on the compose network, which this machine routes to."""
        if part in PUBLISHED:
            return f"http://127.0.0.1:{self.environment[PUBLISHED[part]]}"
        return f"http://{self.address_of(part)}:8000"

    def address_of(self, service: str) -> str:
        inspect = self.docker(
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            self.container_id(service),
        )
        return inspect.strip()

    def container_id(self, service: str) -> str:
        return self.compose_command("ps", "--quiet", service).strip()

    async def cli(self, *arguments: str) -> Any:
        """`choreo ARGS --json` in a one-off container of the compose file's `cli` service, as
        the README tells an operator to run it (`docker compose run --rm cli ARGS`)."""
        output = await asyncio.to_thread(
            self.compose_command, "run", "--rm", "-T", "cli", *arguments, "--json"
        )
        return json.loads(output)

    def compose_command(self, *arguments: str) -> str:
        done = subprocess.run(
            [*self.compose.compose_command_property, *arguments],
            cwd=self.compose.context,
            env={**os.environ, **self.environment},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"docker compose {' '.join(arguments)}:\n{done.stderr}"
        return done.stdout

    def docker(self, *arguments: str) -> str:
        done = subprocess.run(["docker", *arguments], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"docker {' '.join(arguments)}:\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="session")
def compose_system() -> Iterator[ComposeSystem]:
    """docker-compose.yml, up and healthy (`docker compose up --wait`), for the whole session."""
    environment = {
        "COMPOSE_PROJECT_NAME": f"choreo-test-{uuid.uuid4().hex[:8]}",
        **{variable: str(free_port()) for variable in PUBLISHED.values()},
        **LIMITS,
    }
    missing = [
        image
        for image in (
            os.environ.get("CHOREO_IMAGE", "choreo/service:dev"),
            os.environ.get("KAFKA_IMAGE", "apache/kafka:3.9.1"),
            os.environ.get("POSTGRES_IMAGE", "postgres:16-bookworm"),
        )
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
    ]
    assert not missing, f"images missing: {missing}; `make images` builds local stand-ins"
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)  # DockerCompose runs `docker compose` in this environment
    compose = DockerCompose(repository_root(), compose_file_name="docker-compose.yml", wait=True)
    try:
        with compose:
            yield ComposeSystem(compose, environment)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def system(compose_system: ComposeSystem) -> ComposeSystem:
    """The stack the scenarios shared with tests/e2e run on: here, docker-compose."""
    return compose_system
