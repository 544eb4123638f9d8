"""The demo catalog `choreo up --demo` (and the compose file's `demo` job) seeds through the
gateway's public API, as the admin."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from choreo import dev_defaults
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


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m choreo.stack.demo --gateway URL`: seed a running stack's catalog (the
    compose file's `demo` job), as the admin of CHOREO_ADMIN_EMAIL / CHOREO_ADMIN_PASSWORD."""
    parser = argparse.ArgumentParser(
        description="Seed the demo catalog (ten products) through a running gateway, as the "
        "admin; nothing when the catalog has products already."
    )
    parser.add_argument("--gateway", required=True, help="the gateway's base URL")
    arguments = parser.parse_args(argv)
    admin = (
        os.environ.get("CHOREO_ADMIN_EMAIL", dev_defaults.ADMIN_EMAIL),
        os.environ.get("CHOREO_ADMIN_PASSWORD", dev_defaults.ADMIN_PASSWORD),
    )
    with httpx.Client(base_url=arguments.gateway, timeout=10) as gateway:
        try:
            seed_catalog(gateway, admin, print)
        except StackError as error:
            sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
