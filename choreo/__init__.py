"""Choreo's platform kit: what every service is built from, and the `choreo` CLI."""
