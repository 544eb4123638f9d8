"""What `choreo verify` reads from the outside systems, where they can be reached: every Stripe
PaymentIntent with its refunds (Stripe's API, or localstripe in dev), and the e-mails the
stack's SendGrid sink received (`GET /messages`; the real SendGrid has no such list)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

TIMEOUT = 10.0
"""Seconds one request to Stripe or the sink may take."""
_PAGE = 100
_ORDER_ID_IN_TEXT = re.compile(r"Order id: ([0-9a-fA-F-]{36})")


class UnavailableError(Exception):
    """The system could not be read; the message says why, in one line."""


@dataclass(frozen=True)
class Intent:
    id: str
    status: str
    amount: int
    currency: str
    created: datetime
    order_id: str | None
    """Its `metadata.order_id`: the order the payment service created it for."""
    refunded: int
    """The sum of its refunds that succeeded or are on their way."""


@dataclass(frozen=True)
class Email:
    id: str
    kind: str | None
    """The notification it is (`order_confirmed`), from its custom_args."""
    event_id: str | None
    """The event it was sent for, from its custom_args."""
    order_id: str | None
    """The order its text names, if it names one."""


async def read_stripe(api_base: str, api_key: str) -> list[Intent]:
    """Every PaymentIntent of the account, oldest pages first as Stripe gives them."""
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=api_base, headers=headers, timeout=TIMEOUT) as client:
        intents = await _list_all(client, "/v1/payment_intents")
        refunds = await _list_all(client, "/v1/refunds")
    intent_of_charge = {
        charge: intent["id"]
        for intent in intents
        if (charge := _id_of(intent.get("latest_charge"))) is not None
    }
    refunded: dict[str, int] = {}
    for refund in refunds:
        if refund.get("status") not in ("succeeded", "pending"):
            continue
        intent_id = _id_of(refund.get("payment_intent")) or intent_of_charge.get(
            _id_of(refund.get("charge")) or ""
        )
        if intent_id is not None:
            refunded[intent_id] = refunded.get(intent_id, 0) + int(refund.get("amount") or 0)
    return [
        Intent(
            id=intent["id"],
            status=str(intent.get("status")),
            amount=int(intent.get("amount") or 0),
            currency=str(intent.get("currency") or "").upper(),
            created=datetime.fromtimestamp(int(intent.get("created") or 0), UTC),
            order_id=(intent.get("metadata") or {}).get("order_id"),
            refunded=refunded.get(intent["id"], 0),
        )
        for intent in intents
    ]


async def _list_all(client: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """Every object of a Stripe list, page after page (`starting_after`)."""
    found: list[dict[str, Any]] = []
    parameters: dict[str, str | int] = {"limit": _PAGE}
    while True:
        page = await _get(client, path, parameters)
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list):
            raise UnavailableError(f"GET {path}: not a Stripe list")
        found += data
        if not page.get("has_more") or not data:
            return found
        parameters["starting_after"] = data[-1]["id"]


async def read_sink(host: str) -> list[Email]:
    """The e-mails the SendGrid sink received."""
    async with httpx.AsyncClient(base_url=host, timeout=TIMEOUT) as client:
        messages = await _get(client, "/messages", {})
    if not isinstance(messages, list):
        raise UnavailableError("GET /messages: not a list of messages (not an e-mail sink?)")
    return [_email(message) for message in messages if isinstance(message, dict)]


def _email(message: Mapping[str, Any]) -> Email:
    tags: dict[str, Any] = dict(message.get("custom_args") or {})
    for personalization in message.get("personalizations") or []:
        if isinstance(personalization, dict):
            tags.update(personalization.get("custom_args") or {})
    texts = [str(part.get("value", "")) for part in message.get("content") or []]
    named = next((m.group(1) for t in texts if (m := _ORDER_ID_IN_TEXT.search(t))), None)
    return Email(
        id=str(message.get("id")),
        kind=tags.get("notification"),
        event_id=tags.get("event_id"),
        order_id=named.lower() if named else None,
    )


async def _get(client: httpx.AsyncClient, path: str, parameters: Mapping[str, str | int]) -> Any:
    try:
        response = await client.get(path, params=dict(parameters))
    except httpx.HTTPError as error:
        reason = str(error) or type(error).__name__
        raise UnavailableError(f"{client.base_url} unreachable: {reason}") from None
    if response.status_code != 200:
        raise UnavailableError(f"GET {client.base_url}{path} answered {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise UnavailableError(f"GET {client.base_url}{path}: not JSON") from None


def _id_of(reference: object) -> str | None:
    """A Stripe reference, given as an id or as the expanded object."""
    if isinstance(reference, str):
        return reference
    if isinstance(reference, dict) and isinstance(reference.get("id"), str):
        return str(reference["id"])
    return None
