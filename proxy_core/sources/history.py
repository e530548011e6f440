"""Per-second rate history built from successive status snapshots (for a proxy that keeps no history itself)."""

from __future__ import annotations

from collections import deque
from typing import Any

JSON = dict[str, Any]

# The same depth as the engine's `/v1/rates` (300 one-second points).
MAX_POINTS = 300
# A point is kept per this many seconds of polls; closer polls only update the counters' baseline.
POINT_S = 1.0
SERIES = ("active", "connections", "handshakes", "bytes")


class RateHistory:
    """`/v1/rates` from status snapshots: active is the count at the point, the others are per-second deltas."""

    def __init__(self) -> None:
        self.end = 0.0
        self._last: tuple[float, dict[str, tuple[int, int, int]]] | None = None
        self._series: dict[str, dict[str, deque[float]]] = {}

    def add(self, status: JSON, now: float) -> None:
        """Take one snapshot taken at `now`; a point is added once POINT_S has passed since the last."""
        counters = {
            s["name"]: (int(s["total"]), int(s["bytes_in"]) + int(s["bytes_out"]), int(s["active"]))
            for s in status.get("servers", [])
        }
        if self._last is None:
            self._last = (now, counters)
            return
        then, before = self._last
        dt = now - then
        if dt < POINT_S:
            return
        total = {"active": 0.0, "connections": 0.0, "handshakes": 0.0, "bytes": 0.0}
        for name, (conns, nbytes, active) in counters.items():
            old = before.get(name, (conns, nbytes, active))
            point = {
                "active": float(active),
                "connections": max(0, conns - old[0]) / dt,
                "handshakes": 0.0,
                "bytes": max(0, nbytes - old[1]) / dt,
            }
            series = self._series.setdefault(name, {k: deque(maxlen=MAX_POINTS) for k in SERIES})
            for key, value in point.items():
                series[key].append(round(value, 3))
                total[key] += value
        for name in list(self._series):
            if name not in counters:
                del self._series[name]
        totals = self._series.setdefault("", {k: deque(maxlen=MAX_POINTS) for k in SERIES})
        for key, value in total.items():
            totals[key].append(round(value, 3))
        self._last = (now, counters)
        self.end = now

    def as_json(self) -> JSON:
        """The `/v1/rates` shape."""
        series = {name: {k: list(v) for k, v in s.items()} for name, s in self._series.items()}
        empty: dict[str, list[float]] = {k: [] for k in SERIES}
        return {
            "interval_s": POINT_S,
            "end": self.end,
            "total": series.pop("", empty),
            "servers": series,
        }
