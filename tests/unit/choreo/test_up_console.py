"""`choreo up`'s table of URLs: every URL whole, whatever the terminal's width, so that it can
be copied (a new user's 80-column terminal showed the gateway's as `http://127.0.0.1:800…`)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from choreo.stack.console import print_url_table
from choreo.stack.stack import Link

LINKS = [
    Link("gateway", "http://127.0.0.1:8000/api/v1", True, "the API: start here"),
    Link("gateway docs", "http://127.0.0.1:8000/docs", True, "OpenAPI (Swagger UI)"),
    Link("postgres", "postgresql://postgres@127.0.0.1:54320/postgres", True, "one database each"),
    Link("broker", "kafka.example.internal:9093", False),
]


def shown(width: int) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width)
    print_url_table(console, LINKS, ("admin@choreo.local", "secret"))
    return out.getvalue()


@pytest.mark.parametrize("width", [40, 60, 80, 100, 160])
def test_every_url_and_name_is_shown_whole(width: int) -> None:
    text = shown(width)
    assert "Choreo is up" in text
    for link in LINKS:
        assert link.url in text
        assert link.part in text
    assert "…" not in text
    if width >= 80:
        assert "admin: admin@choreo.local / secret (dev default)" in text


def test_a_wide_terminal_gets_a_table_and_a_narrow_one_a_list() -> None:
    assert "┃ part" in shown(120)
    narrow = shown(60).splitlines()
    assert "┃" not in "".join(narrow)
    assert narrow[narrow.index("gateway  the API: start here") + 1].strip() == LINKS[0].url
    assert "broker  from the environment" in narrow  # the broker is not the embedded one
