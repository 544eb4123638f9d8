"""The demo catalog `choreo up --demo` seeds through the gateway's public API, as the admin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from choreo.stack.errors import StackError


def _product(
    name: str,
    category: str,
    price: int,
    stock: int,
    description: str,
    features: list[str],
) -> dict[str, Any]:
    return {
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


DEMO_PRODUCTS = (
    _product(
        "Espresso machine",
        "kitchen",
        24900,
        25,
        "15-bar pump, steam wand.",
        ["15 bar", "1.8 l tank"],
    ),
    _product(
        "Burr grinder",
        "kitchen",
        8900,
        40,
        "40 grind settings, conical burrs.",
        ["conical burrs", "40 settings"],
    ),
    _product(
        "Pour-over kettle",
        "kitchen",
        5900,
        60,
        "Gooseneck, temperature hold.",
        ["1 l", "temperature hold"],
    ),
    _product(
        "Trail running shoes",
        "outdoor",
        12900,
        30,
        "Grippy outsole, light upper.",
        ["8 mm drop", "rock plate"],
    ),
    _product("Ultralight tent", "outdoor", 34900, 8, "Two-person, 1.1 kg.", ["2 person", "1.1 kg"]),
    _product("Headlamp", "outdoor", 3900, 120, "400 lumens, rechargeable.", ["400 lm", "USB-C"]),
    _product(
        "Mechanical keyboard",
        "electronics",
        13900,
        35,
        "Hot-swappable switches.",
        ["75%", "hot-swap"],
    ),
    _product(
        "Noise-cancelling headphones", "electronics", 29900, 15, "30 h battery.", ["ANC", "30 h"]
    ),
    _product(
        "USB-C hub",
        "electronics",
        4900,
        3,
        "Seven ports, 100 W passthrough.",
        ["7 ports", "100 W PD"],
    ),
    _product(
        "Paperback notebook", "stationery", 1500, 200, "A5, dotted, 192 pages.", ["A5", "dotted"]
    ),
)


def seed_catalog(gateway_url: str, admin: tuple[str, str], say: Callable[[str], None]) -> int:
    """Create the demo products unless the catalog has products already; the number created."""
    email, password = admin
    try:
        with httpx.Client(base_url=f"{gateway_url}/api/v1", timeout=15) as client:
            login = client.post("/auth/login", json={"email": email, "password": password})
            login.raise_for_status()
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            existing = client.get("/products", params={"limit": 1})
            existing.raise_for_status()
            if existing.json().get("items"):
                say("the catalog has products already: demo catalog not seeded")
                return 0
            for product in DEMO_PRODUCTS:
                client.post("/products", json=product, headers=headers).raise_for_status()
    except (httpx.HTTPError, KeyError, ValueError) as error:
        raise StackError(f"cannot seed the demo catalog: {error}") from error
    say(f"seeded {len(DEMO_PRODUCTS)} demo products")
    return len(DEMO_PRODUCTS)
