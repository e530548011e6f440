"""Summing the workers' cumulative counters into one engine's, so totals never go down when a worker dies.

A report's counters are cumulative for that worker's life; a dead worker's last report is kept in `retired`
(without its live gauges), so `total`, bytes and handshakes stay monotonic across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# totals and per-server lists: active, total, connect_failures, bytes_in, bytes_out, handshakes
ACTIVE = 0
COUNTERS = 6


@dataclass
class Sums:
    """Engine-wide counters: totals, per server (plus handshake statuses), per listener and per route."""

    totals: list[int] = field(default_factory=lambda: [0] * COUNTERS)
    servers: dict[str, list[int]] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    listeners: dict[str, list[int]] = field(default_factory=dict)
    cap_pauses: int = 0
    routes: dict[str, int] = field(default_factory=dict)  # matches by route key (topology.route_keys)
    unrouted: dict[str, int] = field(default_factory=dict)  # requests answered 404 / 421, by kind

    def add(self, report: dict[str, Any], *, gauges: bool = True) -> None:
        """Add one report; without `gauges` (a dead worker) its active counts are left out."""
        _add(self.totals, report["totals"], gauges)
        for name, values in report["servers"].items():
            _add(self.servers.setdefault(name, [0] * COUNTERS), values[:COUNTERS], gauges)
            statuses = self.statuses.setdefault(name, {})
            for status, count in values[COUNTERS].items():
                statuses[int(status)] = statuses.get(int(status), 0) + count
        for address, (active, total) in report["listeners"].items():
            counts = self.listeners.setdefault(address, [0, 0])
            counts[0] += active if gauges else 0
            counts[1] += total
        self.cap_pauses += report["cap_pauses"]
        for key, count in report["routes"].items():
            self.routes[key] = self.routes.get(key, 0) + count
        for kind, count in report["unrouted"].items():
            self.unrouted[kind] = self.unrouted.get(kind, 0) + count

    def copy(self) -> Sums:
        return Sums(
            list(self.totals),
            {k: list(v) for k, v in self.servers.items()},
            {k: dict(v) for k, v in self.statuses.items()},
            {k: list(v) for k, v in self.listeners.items()},
            self.cap_pauses,
            dict(self.routes),
            dict(self.unrouted),
        )

    def forget_servers(self, keep: set[str]) -> None:
        """A removed server's history goes with it (a server re-added under its name starts at zero)."""
        for name in [n for n in self.servers if n not in keep]:
            del self.servers[name]
            self.statuses.pop(name, None)

    def forget_routes(self, keep: set[str]) -> None:
        """A removed route's matches go with it, as a removed server's history does."""
        for key in [k for k in self.routes if k not in keep]:
            del self.routes[key]


def _add(acc: list[int], values: list[int], gauges: bool) -> None:
    for i, value in enumerate(values):
        if i != ACTIVE or gauges:
            acc[i] += value
