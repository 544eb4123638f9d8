"""Security as an attacker and an auditor see it, on `choreo up`."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import psycopg
from psycopg import sql

from choreo.auth import SigningKey

from .conftest import ChoreoUp
from .journey import CARD, Gateway

DATABASES = ("users", "orders", "payments", "inventory", "notifications")
PROTECTED = {  # one route per service that needs a caller
    "user": ("GET", "/api/v1/users/me"),
    "order": ("GET", "/api/v1/orders"),
    "payment": ("GET", "/api/v1/payment-methods"),
    "inventory": ("POST", "/api/v1/products"),
    "notification": ("GET", "/api/v1/notifications"),
}
ADMIN_ONLY = [
    ("GET", "/admin/orders"),
    ("GET", "/admin/payments"),
    ("GET", "/users"),
    ("POST", "/products"),
]


def unsigned(claims: dict[str, object]) -> str:
    """A token with `alg: none` and no signature, as an attacker forges it."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_a_customer_cannot_see_or_cancel_another_customers_order(
    choreo_up: ChoreoUp,
) -> None:
    gateway = Gateway(choreo_up)
    product = await gateway.product()
    alice, bob = await gateway.register(), await gateway.register()
    order_id = await gateway.order(alice, product)

    async with gateway.client(bob.token) as client:
        read = await client.get(f"/orders/{order_id}")
        cancel = await client.post(f"/orders/{order_id}/cancel")
        timeline = await client.get(f"/orders/{order_id}/timeline")
    assert (read.status_code, cancel.status_code, timeline.status_code) == (404, 404, 404)


async def test_forged_expired_and_missing_tokens_are_refused_everywhere(
    choreo_up: ChoreoUp,
) -> None:
    gateway = Gateway(choreo_up)
    customer = await gateway.register(with_card=False)
    stranger_key = SigningKey.generate()
    now = int(time.time())
    claims = {
        "sub": customer.user_id,
        "roles": ["admin", "user"],
        "iss": "choreo",
        "aud": "choreo",
        "iat": now,
        "exp": now + 600,
        "typ": "access",
    }
    bad_tokens = {
        "none": None,
        "another key": stranger_key.issue(customer.user_id, roles=["admin"]),
        "expired": stranger_key.issue(customer.user_id, ttl_seconds=-60),
        "alg none": unsigned(claims),
        "garbage": "not-a-jwt",
    }
    async with httpx.AsyncClient(timeout=30) as client:
        for service, (method, path) in PROTECTED.items():
            for label, token in bad_tokens.items():
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                for base in (choreo_up.url(service), choreo_up.url("gateway")):
                    url = f"{base}{path}"
                    response = await client.request(method, url, headers=headers, json={})
                    assert response.status_code == 401, f"{label} token at {url}"
                    assert response.json()["error"]["code"]


async def test_an_expired_token_of_the_real_key_is_refused(choreo_up: ChoreoUp) -> None:
    gateway = Gateway(choreo_up)
    customer = await gateway.register(with_card=False)
    async with gateway.client(customer.token) as client:
        assert (await client.get("/users/me")).status_code == 200
    # Tamper with the real token's payload (expiry in the past): the signature breaks.
    header, payload, signature = customer.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] = int(time.time()) - 3600
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    async with gateway.client(f"{header}.{forged_payload}.{signature}") as client:
        assert (await client.get("/users/me")).status_code == 401


async def test_customers_are_forbidden_admin_routes(choreo_up: ChoreoUp) -> None:
    gateway = Gateway(choreo_up)
    customer = await gateway.register(with_card=False)
    async with gateway.client(customer.token) as client:
        for method, path in ADMIN_ONLY:
            response = await client.request(method, path, json={})
            assert response.status_code == 403, f"{method} {path}: {response.text}"
        response = await client.delete(f"/users/{uuid.uuid4()}")
        assert response.status_code == 403


async def test_card_data_and_passwords_are_in_no_table_and_no_log(choreo_up: ChoreoUp) -> None:
    gateway = Gateway(choreo_up)
    product = await gateway.product()
    customer = await gateway.register()
    await gateway.settled(customer, await gateway.order(customer, product))

    secrets = [CARD["number"], customer.password]
    for database in DATABASES:
        with psycopg.connect(choreo_up.database_url(database)) as connection:
            tables = [
                row[0]
                for row in connection.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            ]
            assert tables, f"no tables in {database}"
            for table in tables:
                rows = connection.execute(
                    sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))
                ).fetchall()
                for row in rows:
                    text = " ".join(map(str, row))
                    for secret in secrets:
                        assert secret not in text, f"a secret is stored in {database}.{table}"
                    assert CARD["cvc"] not in map(str, row), f"the CVC is in {database}.{table}"
    output = choreo_up.output()
    assert customer.email in output or "POST /api/v1/auth/register" in output  # logs captured
    for secret in secrets:
        assert secret not in output, "a secret reached the logs"
