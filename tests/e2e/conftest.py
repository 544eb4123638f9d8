"""End-to-end fixtures: `choreo up` run as a user runs it, as a subprocess on free ports.

`choreo_up` (session-scoped) is the running system for the e2e scenarios: its URLs come from
`ChoreoUp.url(part)`. `system` is the same stack seen only through what every stack offers
(`journey.System`): the scenarios written against it run on docker-compose too
(tests/containers). `start_choreo_up` starts a private one for tests that stop or break it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import pytest

from choreo.stack.config import StackPorts
from choreo.testing import free_port, repository_root

UP_BANNER = "Choreo is up"
EXTERNAL_PARTS = (
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "STRIPE_API_BASE",
    "SENDGRID_HOST",
    "TWILIO_API_BASE",
)


@dataclass
class ChoreoUp:
    """A running `choreo up` process and everything it printed so far."""

    process: subprocess.Popen[str]
    ports: StackPorts
    data_dir: Path
    lines: list[str] = field(default_factory=list)

    def url(self, part: str) -> str:
        return f"http://127.0.0.1:{self.ports.of(part)}"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.ports.broker}"

    def database_url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports.postgres}/{database}"

    def output(self) -> str:
        return "\n".join(self.lines)

    async def cli(self, *arguments: str) -> Any:
        """Run `choreo ARGS --json` against the stack as an operator would; its parsed output."""
        command = [sys.executable, "-c", "from choreo.cli import main; main()", *arguments]
        environment = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{self.ports.postgres}",
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [*command, "--json"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"choreo up exited ({self.process.returncode}):\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {timeout:.0f} s:\n{self.output()}")
            time.sleep(0.1)

    def wait_until_ready(self, services: list[str], timeout: float) -> None:
        """Until each of `services` answers 200 on /readyz."""
        deadline = time.monotonic() + timeout
        pending = list(services)
        while pending:
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, f"not ready: {pending}\n{self.output()}"
            pending = [service for service in pending if not self._ready(service)]
            time.sleep(0.2)

    def _ready(self, service: str) -> bool:
        try:
            response = httpx.get(f"{self.url(service)}/readyz", timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl-C, then wait for the exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout)


def left_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `processes` still running (a zombie is not)."""
    return [process for process in processes if _alive(process)]


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def choreo(running: ChoreoUp, *arguments: str) -> Any:
    """Run `choreo ARGS --json` against the stack as an operator would; its parsed output."""
    return await running.cli(*arguments)


def _environment() -> dict[str, str]:
    """This environment without anything that would replace an embedded part."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in EXTERNAL_PARTS and not name.endswith("_DATABASE_URL")
    }
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def start_choreo_up(
    data_dir: Path,
    *arguments: str,
    environment: Mapping[str, str] | None = None,
    python: str = sys.executable,
    checkout: Path | None = None,
) -> ChoreoUp:
    """Start `choreo up` on free ports (returns at once; see `ChoreoUp.wait_for_line`), with
    `python` in `checkout` (by default this repository)."""
    ports = StackPorts(**{name: free_port() for name in StackPorts.names()})
    port_options = [f"--port={name}={ports.of(name)}" for name in StackPorts.names()]
    process = subprocess.Popen(
        [
            python,
            "-c",
            "from choreo.cli import main; main()",
            "up",
            f"--data-dir={data_dir}",
            *port_options,
            *arguments,
        ],
        cwd=checkout or repository_root(),  # the service packages are importable from it
        env={**_environment(), **(environment or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = ChoreoUp(process, ports, data_dir)

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.append(line.rstrip("\n"))

    threading.Thread(target=collect, name="choreo-up-output", daemon=True).start()
    return running


def stop_choreo_up(running: ChoreoUp) -> None:
    """Stop it whatever state it is in (the tests' own cleanup)."""
    if running.process.poll() is None:
        try:
            running.interrupt()
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


@pytest.fixture
def system(choreo_up: ChoreoUp) -> ChoreoUp:
    """The stack the scenarios shared with tests/containers run on: here, `choreo up`."""
    return choreo_up


STACK_LINES_ON_FAILURE = 200


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed scenario's report ends with what the stack printed last (its services' logs),
    so that a failure seen once, in CI say, can be read afterwards."""
    report = yield
    stack = getattr(item, "funcargs", {}).get("choreo_up")
    if report.failed and isinstance(stack, ChoreoUp):
        report.sections.append(
            (
                f"choreo up: its last {STACK_LINES_ON_FAILURE} lines",
                "\n".join(stack.lines[-STACK_LINES_ON_FAILURE:]),
            )
        )
    return report


@pytest.fixture(scope="session")
def choreo_up() -> Iterator[ChoreoUp]:
    """The whole system, started once for the e2e scenarios."""
    # Every scenario comes from 127.0.0.1: one address bucket would throttle the suite.
    limits = {
        "GATEWAY_ADDRESS_RATE_LIMIT_PER_SECOND": "1000",
        "GATEWAY_ADDRESS_RATE_LIMIT_BURST": "2000",
        # ... and one address for every sign-in: the user service limits those per address too.
        "USER_CREDENTIAL_ATTEMPTS_PER_ADDRESS": "1000",
        "USER_CREDENTIAL_ATTEMPTS_PER_ACCOUNT": "1000",
        # ... and the risk screening declines an address's 21st order in an hour, and holds the
        # 6th with one card in 10 minutes (every scenario's customer pays with Stripe's 4242).
        "PAYMENT_RISK_ADDRESS_DECLINE_ATTEMPT": "100000",
        "PAYMENT_RISK_CARD_REVIEW_ATTEMPT": "100000",
        "PAYMENT_RISK_CARD_DECLINE_ATTEMPT": "100000",
    }
    # Not under pytest's numbered temp folders, which a concurrent pytest run may delete.
    with tempfile.TemporaryDirectory(prefix="choreo-e2e-") as scratch:
        running = start_choreo_up(Path(scratch) / "choreo", environment=limits)
        try:
            running.wait_for_line(UP_BANNER, timeout=120)
            yield running
        finally:
            stop_choreo_up(running)
