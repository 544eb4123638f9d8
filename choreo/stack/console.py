"""How `choreo up` shows the stack: every part's lines behind its name (padded, coloured on a
terminal) and the table of URLs once everything is ready."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
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


def url_table(
    links: Sequence[Link], admin: tuple[str, str] | None = None, *, width: int = 120
) -> RenderableType:
    """The parts and where to reach them; `admin` (email, password) is shown when it is the
    dev default, so that a user can log in.

    A table when its names and URLs fit in `width` columns (the notes wrap); on a narrower
    terminal, one part per line with its URL whole on the next, since a cropped or folded URL
    cannot be copied."""
    part_width = max((len(link.part) for link in links), default=0)
    url_width = max((len(link.url) for link in links), default=0)
    caption = f"admin: {admin[0]} / {admin[1]} (dev default)" if admin is not None else None
    # Borders and padding of a two-column table, and room for a few characters of notes.
    if part_width + url_width + 7 + 12 > width:
        lines = [Text("Choreo is up", style="italic")]
        for link in links:
            notes = _notes(link)
            lines.append(Text(link.part, style="bold").append(f"  {notes}" if notes else ""))
            lines.append(Text(f"  {link.url}", no_wrap=True, overflow="ignore"))
        if caption is not None:
            lines.append(Text(caption, style="dim"))
        return Group(*lines)
    table = Table(title="Choreo is up", title_justify="left")
    table.add_column("part", style="bold", no_wrap=True, min_width=part_width)
    table.add_column("URL", no_wrap=True, min_width=url_width)
    table.add_column("", style="dim")
    for link in links:
        table.add_row(link.part, link.url, _notes(link))
    if caption is not None:
        table.caption = caption
        table.caption_justify = "left"
    return table


def _notes(link: Link) -> str:
    notes = [] if link.embedded else ["from the environment"]
    notes += [link.note] if link.note else []
    return ", ".join(notes)


def print_url_table(
    console: Console, links: Sequence[Link], admin: tuple[str, str] | None = None
) -> None:
    """`url_table` for `console`'s width; a URL longer than a line is not cropped (the
    terminal wraps it, and it copies whole)."""
    console.print(url_table(links, admin, width=console.width), crop=False)
