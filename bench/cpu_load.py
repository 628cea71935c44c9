"""Share of CPU time other processes took during a measurement, from /proc/stat.

Timings on shared machines swing several-fold when a co-tenant holds a core, so
every benchmark prints this next to its numbers.
"""

from __future__ import annotations

import os


def _cpu_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _own_ticks() -> int:
    t = os.times()
    return int((t.user + t.system + t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK"))


class OtherLoad:
    """Context manager; `.share` is the other processes' busy share of all cores."""

    def __enter__(self) -> OtherLoad:
        self._busy, self._total = _cpu_ticks()
        self._own = _own_ticks()
        return self

    def __exit__(self, *exc) -> None:
        busy, total = _cpu_ticks()
        own = _own_ticks() - self._own
        span = max(1, total - self._total)
        self.share = max(0.0, (busy - self._busy - own) / span)
