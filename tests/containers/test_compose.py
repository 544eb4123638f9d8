"""What the compose stack promises beyond the scenarios: a valid file whose images can be
replaced, services that run as a non-root user, databases each reachable by its own role only,
and a saga that survives a service container killed under it."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

from choreo.testing import repository_root
from tests.e2e.journey import Gateway

from .conftest import ComposeSystem

SERVICES = ("gateway", "user", "order", "payment", "inventory", "notification")


def compose_config(*arguments: str, environment: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["docker", "compose", "-f", "docker-compose.yml", "config", *arguments],
        cwd=repository_root(),
        env={**os.environ, **(environment or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_docker_compose_config_validates_the_file_and_every_image_can_be_replaced() -> None:
    compose_config("--quiet")
    replaced = compose_config(
        "--images",
        environment={
            "KAFKA_IMAGE": "registry.invalid/kafka:1",
            "POSTGRES_IMAGE": "registry.invalid/postgres:1",
            "CHOREO_IMAGE": "registry.invalid/choreo:1",
        },
    ).split()
    assert set(replaced) == {
        "registry.invalid/kafka:1",
        "registry.invalid/postgres:1",
        "registry.invalid/choreo:1",
    }


def test_every_service_runs_as_a_non_root_user(compose_system: ComposeSystem) -> None:
    for service in SERVICES:
        uid = compose_system.compose_command("exec", "-T", service, "id", "-u").strip()
        assert uid == "10001", f"{service} runs as uid {uid}"


CONNECT = """
import sys, psycopg
try:
    psycopg.connect(sys.argv[1], connect_timeout=5).close()
except psycopg.Error as error:
    print(" ".join(str(error).split()))
else:
    print("connected")
"""


def test_a_services_role_reaches_its_own_database_and_no_other(
    compose_system: ComposeSystem,
) -> None:
    password = os.environ.get("ORDERS_DB_PASSWORD", "choreo-orders")

    def connect_as_orders(database: str) -> str:
        url = f"postgresql://orders:{password}@postgres:5432/{database}"
        return compose_system.compose_command(
            "exec", "-T", "order", "python3", "-c", CONNECT, url
        ).strip()

    assert connect_as_orders("orders") == "connected"
    # The server's own databases too: from there a role could list the others' sessions.
    for other in ("users", "payments", "inventory", "notifications", "postgres", "template1"):
        refused = connect_as_orders(other)
        assert f'permission denied for database "{other}"' in refused, refused


async def test_an_order_placed_while_a_service_container_is_killed_is_confirmed(
    compose_system: ComposeSystem,
) -> None:
    gateway = Gateway(compose_system)
    product = await gateway.product(stock=50)
    customer = await gateway.register()
    payment = compose_system.container_id("payment")

    def state() -> dict[str, Any]:
        fields = "{{.State.Pid}} {{.RestartCount}}"
        pid, restarts = compose_system.docker("inspect", "--format", fields, payment).split()
        return {"pid": int(pid), "restarts": int(restarts)}

    before = state()
    orders = [await gateway.order(customer, product) for _ in range(3)]
    # SIGKILL to the container's main process, as a crash (not `docker stop`, which the
    # restart policy would respect): compose's `restart: unless-stopped` brings it back.
    os.kill(before["pid"], signal.SIGKILL)
    orders += [await gateway.order(customer, product) for _ in range(3)]
    # One at a time: six pollers of one customer would pass the gateway's per-user limit.
    settled = [await gateway.settled(customer, order_id, timeout=180) for order_id in orders]
    assert [order["status"] for order in settled] == ["CONFIRMED"] * len(orders)
    assert state()["restarts"] == before["restarts"] + 1
    # The operator's view of it, from the compose file's `cli` service: the order service's
    # database read inside the network, not the embedded stack's default address.
    trace = await compose_system.cli("saga", orders[-1])
    assert trace["status"] == "CONFIRMED"
    assert [service for service, seen in trace["services"].items() if seen.get("error")] == []
