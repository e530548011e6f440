"""The routes view: every route in the order the engine tries it, what it matched, and the unrouted refusals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static

from tui import pools as pl
from tui.format import clean

if TYPE_CHECKING:
    from tui.app import DashboardApp

JSON = dict[str, Any]

COLUMNS: tuple[tuple[str, str], ...] = (
    ("index", "#"),
    ("listener", "listener"),
    ("host", "host"),
    ("path", "path prefix"),
    ("sni", "SNI"),
    ("pool", "pool"),
    ("matched", "matched"),
    ("rate", "rate"),
)


def _position(route: JSON) -> str:
    """The 1-based position commands take, from an engine that reports only the 0-based index."""
    index = route.get("index")
    return str(index + 1) if isinstance(index, int) else "?"


def route_cells(route: JSON, rate: float | None) -> tuple[Text, ...]:
    """One route's row; a null field matches anything and shows `*`."""

    def field(key: str) -> Text:
        value = route.get(key)
        return Text(pl.ANY if value is None else clean(value, 40), style="dim" if value is None else "")

    return (
        Text(str(route.get("position") or _position(route)), justify="right"),
        field("listener"),
        field("host"),
        field("path_prefix"),
        field("sni"),
        Text(clean(route.get("pool"), 40), style="bold"),
        Text(str(route.get("matched", 0)), justify="right"),
        Text("-" if rate is None else f"{rate:.1f}/s", justify="right"),
    )


def unrouted_line(status: JSON) -> str:
    """The requests no route took and no default pool caught, answered by the engine itself."""
    unrouted = status.get("unrouted") or {}
    return (
        f"Unrouted: {int(unrouted.get('not_found') or 0)} answered 404 (no route, no default pool), "
        f"{int(unrouted.get('misdirected') or 0)} answered 421 (SNI and Host disagree); no backend touched"
    )


def defaults_line(status: JSON) -> str:
    """Where a listener sends what no route matched."""
    pairs = [
        f"{clean(listener, 40)} → {clean(pool['name'], 40)}"
        for pool in pl.pools(status)
        for listener in pool.get("default_for") or []
    ]
    return "Default pools: " + (", ".join(pairs) if pairs else "none (unmatched requests are refused)")


class RoutesScreen(Screen[None]):
    """Routes, first match wins; refreshed with every snapshot while shown."""

    BINDINGS = [Binding("escape,backspace,R", "back", "Back", id="routes-back")]

    def compose(self) -> ComposeResult:
        yield Label("Routes (tried in order, first match wins)", id="routes-title", classes="pane-title")
        yield DataTable(id="routes-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="routes-defaults", markup=False)
        yield Static("", id="routes-unrouted", markup=False)
        yield Footer()

    @property
    def dashboard(self) -> DashboardApp:
        """The app, typed."""
        from tui.app import DashboardApp

        assert isinstance(self.app, DashboardApp)
        return self.app

    def on_mount(self) -> None:
        table = self.query_one("#routes-table", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.refresh_routes()
        table.focus()

    def refresh_routes(self) -> None:
        """Redraw from the app's latest status (a handful of routes: rebuilt whole, cursor kept)."""
        status = self.dashboard.status
        routes = [r for r in status.get("routes") or [] if isinstance(r, dict)]
        table = self.query_one("#routes-table", DataTable)
        row = table.cursor_row
        table.clear()
        for route in routes:
            table.add_row(*route_cells(route, self.dashboard.route_rates.rate(route)))
        if routes:
            table.move_cursor(row=min(row, len(routes) - 1), animate=False)
        title = f"Routes: {len(routes)} (tried in order, first match wins)" if routes else "Routes: none"
        self.query_one("#routes-title", Label).update(title)
        self.query_one("#routes-defaults", Static).update(defaults_line(status))
        self.query_one("#routes-unrouted", Static).update(unrouted_line(status))

    def action_back(self) -> None:
        self.dismiss(None)
