"""Per-second history of connections, handshakes and bytes for the dashboard's graphs."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

HISTORY_POINTS = 300  # five minutes at one point per second


@dataclass(slots=True)
class Series:
    """One entity's history: a gauge (active) and three rates computed from cumulative counters."""

    active: deque[int] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    connections: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    handshakes: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    bytes: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    last: tuple[int, int, int] | None = None

    def add(self, active: int, total: int, handshakes: int, nbytes: int, elapsed: float) -> None:
        if self.last is not None and elapsed > 0:
            last_total, last_handshakes, last_bytes = self.last
            self.connections.append(round(max(0, total - last_total) / elapsed, 2))
            self.handshakes.append(round(max(0, handshakes - last_handshakes) / elapsed, 2))
            self.bytes.append(round(max(0, nbytes - last_bytes) / elapsed, 1))
            self.active.append(active)
        self.last = (total, handshakes, nbytes)

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "active": list(self.active),
            "connections": list(self.connections),
            "handshakes": list(self.handshakes),
            "bytes": list(self.bytes),
        }


class RateHistory:
    """Samples cumulative counters once a second; rates come from counters and timestamps, not ticks."""

    def __init__(self) -> None:
        self.total = Series()
        self.servers: dict[str, Series] = {}
        self.last_sample: float | None = None
        self.interval_s = 1.0

    def sample(
        self, now: float, total: tuple[int, int, int, int], servers: dict[str, tuple[int, int, int, int]]
    ) -> None:
        elapsed = 0.0 if self.last_sample is None else now - self.last_sample
        self.last_sample = now
        self.total.add(*total, elapsed)
        for name in list(self.servers):
            if name not in servers:
                del self.servers[name]
        for name, values in servers.items():
            self.servers.setdefault(name, Series()).add(*values, elapsed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "end": self.last_sample,
            "total": self.total.to_dict(),
            "servers": {name: series.to_dict() for name, series in self.servers.items()},
        }
