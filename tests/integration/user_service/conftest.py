"""Helpers of the user service's integration tests: its rows, and HTTP calls."""

from __future__ import annotations

from typing import Any

import httpx

from choreo.testing import ServiceProcess, query


async def every_row_as_text(process: ServiceProcess) -> dict[str, list[str]]:
    """Every row of every table of the service's database, as PostgreSQL prints it."""
    database = process.database_url
    tables = await query(
        database, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    return {
        table: [row for (row,) in await query(database, f'SELECT t::text FROM "{table}" AS t')]
        for (table,) in tables
    }


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
