"""CPU time of the stack's processes, read from Linux's /proc: each part is its main process
and every process it started (PostgreSQL's backends included), alive or already reaped."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
_LISTEN = "0A"


@dataclass(frozen=True)
class _Stat:
    parent: int
    seconds: float
    """utime + stime of the process, plus cutime + cstime: the children it has reaped."""


def _stats() -> dict[int, _Stat]:
    found: dict[int, _Stat] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        fields = text.rsplit(")", 1)[1].split()
        parent = int(fields[1])
        utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        found[int(entry.name)] = _Stat(
            parent, (utime + stime + cutime + cstime) / _TICKS_PER_SECOND
        )
    return found


def cpu_seconds(roots: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each part: `roots` maps a part's name to its main process id.

    A part's figure is its main process and all its descendants (their own time, and the time
    of the children each has reaped), so a PostgreSQL backend counts while it runs and after it
    exits. A part whose process is gone is left out.
    """
    stats = _stats()
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.parent, []).append(pid)
    totals: dict[str, float] = {}
    for name, root in roots.items():
        if root not in stats:
            continue
        total, pending = 0.0, [root]
        while pending:
            pid = pending.pop()
            total += stats[pid].seconds
            pending.extend(children.get(pid, ()))
        totals[name] = total
    return totals


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine has used since boot (all cores, idle and
    waiting for I/O left out): the work of processes outside the stack shows against it."""
    fields = (_PROC / "stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICKS_PER_SECOND


def own_cpu_seconds() -> float:
    """This process's CPU seconds (all its threads)."""
    times = os.times()
    return times.user + times.system


def listeners(ports: Mapping[str, int]) -> dict[str, int]:
    """The process listening on each loopback TCP port of `ports` (part name to port), as part
    name to process id; parts with no listener on this machine are left out."""
    inode_of_port: dict[int, str] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if fields[3] == _LISTEN:
                inode_of_port.setdefault(port, fields[9])
    wanted = {
        f"socket:[{inode_of_port[port]}]": name
        for name, port in ports.items()
        if port in inode_of_port
    }
    holders: dict[str, set[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                target = os.readlink(descriptor)
            except OSError:
                continue
            name = wanted.get(target)
            if name is not None:
                holders.setdefault(name, set()).add(int(entry.name))
    # A server whose children inherited its socket is counted from the holder whose parent
    # does not hold it.
    stats = _stats()
    return {
        name: min(pid for pid in pids if pid not in stats or stats[pid].parent not in pids)
        for name, pids in holders.items()
    }
