"""CPU time of other processes, from Linux's /proc (user + system, all threads).

The kernel counts in clock ticks (`SC_CLK_TCK`, 100 a second): a reading is exact to 10 ms,
so measure over a whole tick of work and divide, never per mission.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # [0] is field 3 (state), [1] the parent pid


def cpu_s(pid: int, *, reaped_children: bool = False) -> float:
    """utime + stime of `pid`; with `reaped_children`, plus those of its children it has waited for."""
    fields = _stat_fields(pid)
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICKS_PER_S


def process_tree_cpu_s(parent: int) -> float:
    """CPU of `parent`, its live children and its reaped ones: a Postgres server's whole cost.

    Backends are children of the postmaster; one that exits between two readings moves from the
    live sum into the postmaster's cutime/cstime, so the difference of two readings stays right.
    """
    total = cpu_s(parent, reaped_children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
            if int(fields[1]) == parent:
                total += (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # it exited while we looked
    return total


def is_local_process(pid: int, name: str) -> bool:
    """Whether `pid` is a process of this machine running `name` (a server may be remote)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False
