"""`choreo verify`: a read-only audit of the whole system's consistency (DESIGN.md §6).

`command` reads and reports; `databases`, `providers` and `pipeline` read the sources; the
checks are in `saga_checks`, `provider_checks` and `pipeline`; `report` shows what they found.
"""

from __future__ import annotations

from choreo.cli.verify.command import register

__all__ = ["register"]
