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
# The name column (padding included): the stylesheet's width fits `b1` or `total`; POOL/NAME servers widen it, up
# to a bound that leaves the sparklines their room.
NAME_MIN, NAME_MAX = 8, 18


def _tail(values: list[float], window: int = WINDOW) -> list[float]:
    return [float(v) for v in values[-window:]] or [0.0]


def name_width(names: list[str]) -> int:
    """The name column's width for these series: the longest name and its padding, within NAME_MIN..NAME_MAX."""
    return max(NAME_MIN, min(NAME_MAX, max((len(n) for n in names), default=0) + 2))


class GraphRow(Horizontal):
    """One series pair: name, active sparkline and value, handshakes/s sparkline and value."""

    def __init__(self, name: str, name_width: int = NAME_MIN) -> None:
        super().__init__(classes="graph-row")
        self.series = name
        self.name_width = name_width

    def compose(self) -> ComposeResult:
        label = Label(self.series, classes="graph-name")
        label.styles.width = self.name_width
        yield label
        yield Sparkline([0.0], summary_function=max, classes="graph-active")
        yield Label("", classes="graph-value graph-active-value")
        yield Sparkline([0.0], summary_function=max, classes="graph-hs")
        yield Label("", classes="graph-value graph-hs-value")

    def fit_name(self, width: int) -> None:
        """Give the name column `width` cells (every row the same, so the sparklines line up)."""
        self.name_width = width
        for label in self.query(".graph-name"):
            label.styles.width = width

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
        width = name_width([*servers, TOTAL])
        for name in sorted(servers):
            if name not in rows:
                row = GraphRow(name, width)
                container.mount(row)
                rows[name] = row
        for name, row in rows.items():
            if row.name_width != width:
                row.fit_name(width)
            series = rates.get("total") if name == TOTAL else servers.get(name)
            if series is not None:
                if row.is_mounted:
                    row.set_data(series)
                else:
                    row.call_after_refresh(row.set_data, series)
