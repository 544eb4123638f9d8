"""How `choreo up` shows the stack: every part's lines behind its name (padded, coloured on a
terminal) and the table of URLs once everything is ready."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from choreo.stack.stack import Link

_PALETTE = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_red",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "bright_yellow",
    "bright_blue",
)


class PrefixedOutput:
    """An output sink that prints `name | line` on a rich console, one colour per part.

    A line's own ANSI colours (the services' short form) are kept on a terminal and dropped
    elsewhere, as the console's other output is."""

    def __init__(self, console: Console, names: Sequence[str]) -> None:
        self.console = console
        self._width = max((len(name) for name in names), default=0)
        self._styles = {name: _PALETTE[index % len(_PALETTE)] for index, name in enumerate(names)}
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self, part: str, line: str) -> None:
        style = self._styles.get(part, "bold")
        text = Text(f"{part:<{self._width}} | ", style=style)
        text.append_text(Text.from_ansi(line))
        with self._lock:
            if self._closed:
                return
            try:
                self.console.print(text, soft_wrap=True, highlight=False, markup=False)
            except OSError:
                # The terminal went away (closed window, broken pipe): keep stopping the
                # parts rather than fail on their last words.
                self._closed = True


def url_table(links: Sequence[Link], admin: tuple[str, str] | None = None) -> Table:
    """The parts and where to reach them; `admin` (email, password) is shown when it is the
    dev default, so that a user can log in."""
    table = Table(title="Choreo is up", title_justify="left")
    # On a narrow terminal the notes wrap; names and URLs stay whole, to be copied.
    part_width = max((len(link.part) for link in links), default=0)
    url_width = max((len(link.url) for link in links), default=0)
    table.add_column("part", style="bold", no_wrap=True, min_width=part_width)
    table.add_column("URL", no_wrap=True, min_width=url_width)
    table.add_column("", style="dim")
    for link in links:
        notes = [] if link.embedded else ["from the environment"]
        notes += [link.note] if link.note else []
        table.add_row(link.part, link.url, ", ".join(notes))
    if admin is not None:
        email, password = admin
        table.caption = f"admin: {email} / {password} (dev default)"
        table.caption_justify = "left"
    return table
