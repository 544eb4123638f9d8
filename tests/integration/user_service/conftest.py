"""Helpers of the user service's integration tests: its database, polling, and HTTP calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psycopg

from choreo.testing import ServiceProcess


async def query(process: ServiceProcess, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of `sql` run on the service's own database."""
    assert process.database_url is not None
    async with await psycopg.AsyncConnection.connect(process.database_url) as connection:
        cursor = await connection.execute(sql, params)
        return await cursor.fetchall() if cursor.description else []


async def every_row_as_text(process: ServiceProcess) -> dict[str, list[str]]:
    """Every row of every table of the service's database, as PostgreSQL prints it."""
    tables = await query(
        process,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    return {
        table: [row[0] for row in await query(process, f'SELECT t::text FROM "{table}" AS t')]
        for (table,) in tables
    }


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0
) -> None:
    """Poll `check` until it holds; fail naming `what` when it does not in time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.2)


async def login(api: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    response = await api.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def register(
    api: httpx.AsyncClient, email: str, password: str, full_name: str
) -> dict[str, Any]:
    body = {"email": email, "password": password, "full_name": full_name}
    response = await api.post("/api/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
