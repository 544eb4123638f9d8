"""The servers `choreo bench` runs beside the stack, each as its own process:

    python -m choreo.bench.servers bare --port P
    python -m choreo.bench.servers baseline --port P --databases JSON --stripe URL ...

`bare` is a FastAPI app with one route and nothing else (the HTTP ceiling). `baseline` is the
synchronous baseline: the saga's work as one request that calls each step in turn (SQL on each
service's database, the Stripe emulator, the SendGrid sink), no broker and no outbox. Its
HTTP calls go through aiohttp, as the services' do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
import stripe
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.db import create_engine

_SENDER = "shop@example.com"


def bare_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


class BaselineOrder(BaseModel):
    product_id: str
    quantity: int = 1


class Baseline:
    """The saga's steps, one after the other, within the request that places the order."""

    def __init__(
        self,
        databases: Mapping[str, str],
        stripe_api_base: str,
        stripe_api_key: str,
        sendgrid_host: str,
        sendgrid_api_key: str,
        customer: Mapping[str, str],
        pool_size: int,
    ) -> None:
        self.engines: dict[str, AsyncEngine] = {
            name: create_engine(url, pool_size=pool_size) for name, url in databases.items()
        }
        self._stripe_http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=10))
        self.stripe = stripe.StripeClient(
            stripe_api_key,
            base_addresses={"api": stripe_api_base},
            http_client=self._stripe_http,
            max_network_retries=0,
        )
        self._mail_url = sendgrid_host.rstrip("/") + "/v3/mail/send"
        self._mail_headers = {"Authorization": f"Bearer {sendgrid_api_key}"}
        # Made inside the running event loop, at the first e-mail (aiohttp binds it to the loop).
        self._mail: aiohttp.ClientSession | None = None
        self.customer = customer

    async def aclose(self) -> None:
        for engine in self.engines.values():
            await engine.dispose()
        await self._stripe_http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK
        if self._mail is not None:
            await self._mail.close()

    async def place(self, order: BaselineOrder) -> tuple[int, dict[str, Any]]:
        inventory, orders = self.engines["inventory"], self.engines["orders"]
        order_id = str(uuid.uuid4())
        async with inventory.connect() as connection:  # the price lookup
            found = (
                await connection.execute(
                    text("SELECT name, price, currency FROM products WHERE id = :id"),
                    {"id": order.product_id},
                )
            ).one_or_none()
        if found is None:
            return 422, {"error": "unknown_product"}
        name, price, currency = found
        total = price * order.quantity
        async with orders.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO orders (id, product_id, quantity, total, currency, status)"
                    " VALUES (:id, :product, :quantity, :total, :currency, 'PENDING')"
                ),
                {
                    "id": order_id,
                    "product": order.product_id,
                    "quantity": order.quantity,
                    "total": total,
                    "currency": currency,
                },
            )
        await self._email(order_id, "Order received", f"We received your order of {name}.")
        async with inventory.begin() as connection:  # reserve
            reserved = (
                await connection.execute(
                    text(
                        "UPDATE products SET available = available - :quantity,"
                        " reserved = reserved + :quantity"
                        " WHERE id = :id AND available >= :quantity RETURNING id"
                    ),
                    {"id": order.product_id, "quantity": order.quantity},
                )
            ).one_or_none()
            if reserved is not None:
                await connection.execute(
                    text(
                        "INSERT INTO reservations (order_id, product_id, quantity, status)"
                        " VALUES (:order_id, :product, :quantity, 'RESERVED')"
                    ),
                    {"order_id": order_id, "product": order.product_id, "quantity": order.quantity},
                )
        if reserved is None:
            await self._set_status(order_id, "CANCELLED")
            return 409, {"id": order_id, "status": "CANCELLED", "reason": "OUT_OF_STOCK"}
        intent = await self.stripe.v1.payment_intents.create_async(
            params={
                "amount": total,
                "currency": currency.lower(),
                "customer": self.customer["customer"],
                "payment_method": self.customer["payment_method"],
                "metadata": {"order_id": order_id},
                "confirm": False,
            }
        )
        charged = await self.stripe.v1.payment_intents.confirm_async(intent.id)
        async with self.engines["payments"].begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO payments (order_id, intent_id, amount, status)"
                    " VALUES (:order_id, :intent, :amount, :status)"
                ),
                {
                    "order_id": order_id,
                    "intent": charged.id,
                    "amount": total,
                    "status": charged.status,
                },
            )
        async with inventory.begin() as connection:  # commit the reservation
            await connection.execute(
                text(
                    "UPDATE products SET reserved = reserved - :quantity, sold = sold + :quantity"
                    " WHERE id = :id"
                ),
                {"id": order.product_id, "quantity": order.quantity},
            )
            await connection.execute(
                text("UPDATE reservations SET status = 'COMMITTED' WHERE order_id = :order_id"),
                {"order_id": order_id},
            )
        await self._set_status(order_id, "CONFIRMED")
        await self._email(order_id, "Order confirmed", f"Your order of {name} is confirmed.")
        return 201, {"id": order_id, "status": "CONFIRMED"}

    async def _set_status(self, order_id: str, status: str) -> None:
        async with self.engines["orders"].begin() as connection:
            await connection.execute(
                text("UPDATE orders SET status = :status WHERE id = :id"),
                {"id": order_id, "status": status},
            )

    async def _email(self, order_id: str, subject: str, body: str) -> None:
        if self._mail is None:
            self._mail = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=10), raise_for_status=True, trust_env=False
            )
        message = {
            "personalizations": [{"to": [{"email": self.customer["email"]}]}],
            "from": {"email": _SENDER},
            "subject": subject,
            "content": [{"type": "text/plain", "value": body}],
        }
        headers = self._mail_headers
        async with self._mail.post(self._mail_url, json=message, headers=headers) as sent:
            await sent.read()
        async with self.engines["notifications"].begin() as connection:
            await connection.execute(
                text("INSERT INTO deliveries (order_id, subject) VALUES (:order_id, :subject)"),
                {"order_id": order_id, "subject": subject},
            )


def baseline_app(baseline: Baseline) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await baseline.aclose()

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.post("/orders")
    async def place(order: BaselineOrder) -> JSONResponse:
        status, body = await baseline.place(order)
        return JSONResponse(body, status_code=status)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("kind", choices=["bare", "baseline"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--databases", help="JSON: database name to URL (baseline)")
    parser.add_argument("--stripe", help="the Stripe API base (baseline)")
    parser.add_argument("--stripe-key", default="")
    parser.add_argument("--sendgrid", help="the SendGrid host (baseline)")
    parser.add_argument("--sendgrid-key", default="")
    parser.add_argument("--customer", help="JSON: customer, payment_method, email (baseline)")
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args(argv)
    if args.kind == "bare":
        app = bare_app()
    else:
        app = baseline_app(
            Baseline(
                json.loads(args.databases),
                args.stripe,
                args.stripe_key,
                args.sendgrid,
                args.sendgrid_key,
                json.loads(args.customer),
                args.pool_size,
            )
        )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
