"""Inventory service: product catalog, stock levels, reservations, low-stock alerts."""
