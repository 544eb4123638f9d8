"""The demo catalog `choreo up --demo` seeds through the gateway's public API, as the admin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from choreo.stack.errors import StackError

# name, category, price in cents (USD), stock, description, features
_CATALOG = (
    ("Espresso machine", "kitchen", 24900, 25, "15-bar pump, steam wand.", ["15 bar"]),
    ("Burr grinder", "kitchen", 8900, 40, "Conical burrs, 40 settings.", ["40 settings"]),
    ("Pour-over kettle", "kitchen", 5900, 60, "Gooseneck, temperature hold.", ["1 l"]),
    ("Trail running shoes", "outdoor", 12900, 30, "Grippy outsole.", ["8 mm drop"]),
    ("Ultralight tent", "outdoor", 34900, 8, "Two people, 1.1 kg.", ["2 person"]),
    ("Headlamp", "outdoor", 3900, 120, "400 lumens, rechargeable.", ["USB-C"]),
    ("Mechanical keyboard", "electronics", 13900, 35, "Hot-swappable switches.", ["75%"]),
    ("Noise-cancelling headphones", "electronics", 29900, 15, "30 h battery.", ["ANC"]),
    ("USB-C hub", "electronics", 4900, 3, "Seven ports, 100 W passthrough.", ["7 ports"]),
    ("Paperback notebook", "stationery", 1500, 200, "A5, dotted, 192 pages.", ["A5"]),
)

DEMO_PRODUCTS: tuple[dict[str, Any], ...] = tuple(
    {
        "name": name,
        "description": description,
        "category": category,
        "price": price,
        "currency": "USD",
        "stock": stock,
        "low_stock_threshold": max(1, stock // 10),
        "features": features,
        "image_url": None,
    }
    for name, category, price, stock, description, features in _CATALOG
)


def seed_catalog(gateway: httpx.Client, admin: tuple[str, str], say: Callable[[str], None]) -> int:
    """Create the demo products through `gateway` (a client with the gateway's base URL)
    unless the catalog has products already; returns the number created."""
    email, password = admin
    try:
        login = gateway.post("/api/v1/auth/login", json={"email": email, "password": password})
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        existing = gateway.get("/api/v1/products", params={"limit": 1})
        existing.raise_for_status()
        if existing.json().get("items"):
            say("the catalog has products already: demo catalog not seeded")
            return 0
        for product in DEMO_PRODUCTS:
            gateway.post("/api/v1/products", json=product, headers=headers).raise_for_status()
    except (httpx.HTTPError, KeyError, ValueError) as error:
        raise StackError(f"cannot seed the demo catalog: {error}") from error
    say(f"seeded {len(DEMO_PRODUCTS)} demo products")
    return len(DEMO_PRODUCTS)
