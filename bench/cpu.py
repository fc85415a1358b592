"""CPU time per process group, read from /proc (through psutil) over a measured window.

A figure like "CPU per delivery" needs every process that does the work: the scenario's own
processes (workers, scheduler, a baseline's actors) by process tree, and the servers (PostgreSQL,
Redis) by name, since their backends come and go with connections. A process that starts during the
window counts from zero; one that exits during it is missed (it is asked again at the end), so a
window should not span a restart.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable

import psutil

SERVERS = {"postgres": ("postgres",), "redis": ("redis-server",)}


def tree(*processes: subprocess.Popen | int) -> Callable[[], list[psutil.Process]]:
    """These processes and their children (a Dramatiq worker forks its worker processes)."""
    pids = [p if isinstance(p, int) else p.pid for p in processes]

    def find() -> list[psutil.Process]:
        found = []
        for pid in pids:
            try:
                parent = psutil.Process(pid)
                found += [parent, *parent.children(recursive=True)]
            except psutil.Error:
                continue
        return found

    return find


def this_process() -> Callable[[], list[psutil.Process]]:
    """The bench's own process alone (its children, the processes it measures, not counted)."""
    return lambda: [psutil.Process()]


def named(*names: str) -> Callable[[], list[psutil.Process]]:
    """Every process of this user with one of these names (the embedded servers and their backends)."""

    def find() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["name"]) if p.info["name"] in names]

    return find


def _cpu(processes: Iterable[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
            # keyed by (pid, start time) would be exact; pids are not reused within a bench window
            seconds[process.pid] = times.user + times.system
        except psutil.Error:
            continue
    return seconds


class Meter:
    """`with Meter(workers=tree(w), postgres=named("postgres")) as meter: ...`, then meter.seconds: the
    CPU seconds each group used inside the block."""

    def __init__(self, **groups: Callable[[], list[psutil.Process]]) -> None:
        self.groups = groups
        self.seconds: dict[str, float] = {}

    def __enter__(self) -> Meter:
        self._start = {name: _cpu(find()) for name, find in self.groups.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        for name, find in self.groups.items():
            start, end = self._start[name], _cpu(find())
            self.seconds[name] = sum(t - start.get(pid, 0.0) for pid, t in end.items())

    def per(self, count: float, unit: float = 1000.0) -> dict[str, float]:
        """Each group's CPU per item (milliseconds by default), and their total under "all"."""
        if not count:
            return {name: float("nan") for name in [*self.seconds, "all"]}
        split = {name: round(seconds * unit / count, 3) for name, seconds in self.seconds.items()}
        split["all"] = round(sum(self.seconds.values()) * unit / count, 3)
        return split

    def share(self, seconds: float) -> dict[str, float]:
        """Each group's CPU as a percentage of one core over `seconds` of wall time."""
        return {name: round(100 * used / seconds, 2) for name, used in self.seconds.items()}


def servers() -> dict[str, Callable[[], list[psutil.Process]]]:
    return {name: named(*names) for name, names in SERVERS.items()}
