"""Sparklines of active connections and handshakes/s per server and in total, from `/v1/rates`."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Label, Sparkline

JSON = dict[str, Any]

# Points shown per sparkline: the last two minutes at the engine's 1 s interval.
WINDOW = 120
TOTAL = "total"


def _tail(values: list[float], window: int = WINDOW) -> list[float]:
    return [float(v) for v in values[-window:]] or [0.0]


class GraphRow(Horizontal):
    """One series pair: name, active sparkline and value, handshakes/s sparkline and value."""

    def __init__(self, name: str) -> None:
        super().__init__(classes="graph-row")
        self.series = name

    def compose(self) -> ComposeResult:
        yield Label(self.series, classes="graph-name")
        yield Sparkline([0.0], summary_function=max, classes="graph-active")
        yield Label("", classes="graph-value graph-active-value")
        yield Sparkline([0.0], summary_function=max, classes="graph-hs")
        yield Label("", classes="graph-value graph-hs-value")

    def set_data(self, series: JSON) -> None:
        """Assign fresh lists (Sparkline compares with `!=`; a mutated list would not repaint)."""
        active = _tail(series.get("active") or [])
        handshakes = _tail(series.get("handshakes") or [])
        self.query_one(".graph-active", Sparkline).data = active
        self.query_one(".graph-hs", Sparkline).data = handshakes
        self.query_one(".graph-active-value", Label).update(f"{active[-1]:.0f}")
        self.query_one(".graph-hs-value", Label).update(f"{handshakes[-1]:.0f}/s")


class Graphs(Vertical):
    """A row per server plus the total; rows follow the server list."""

    def compose(self) -> ComposeResult:
        yield Label("Graphs  ·  active conns  |  handshakes/s", classes="pane-title")
        with VerticalScroll(id="graph-rows"):
            yield GraphRow(TOTAL)

    def update_rates(self, rates: JSON) -> None:
        """Apply a `/v1/rates` answer."""
        servers: dict[str, JSON] = rates.get("servers") or {}
        container = self.query_one("#graph-rows", VerticalScroll)
        rows = {row.series: row for row in container.query(GraphRow)}
        for name, row in rows.items():
            if name != TOTAL and name not in servers:
                row.remove()
        for name in sorted(servers):
            if name not in rows:
                row = GraphRow(name)
                container.mount(row)
                rows[name] = row
        for name, row in rows.items():
            series = rates.get("total") if name == TOTAL else servers.get(name)
            if series is not None:
                if row.is_mounted:
                    row.set_data(series)
                else:
                    row.call_after_refresh(row.set_data, series)
