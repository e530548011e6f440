"""The main screen: status bar, backends table, graphs, events and the handshake log."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Input, Log, Static

from tui import pools as pl
from tui.screens.actions import SERVER_BINDINGS, ServerActionsScreen
from tui.widgets.backends import BackendsTable
from tui.widgets.edge_bar import EdgeBar
from tui.widgets.events_pane import EventsPane
from tui.widgets.fleet_panel import FleetPanel
from tui.widgets.graphs import Graphs
from tui.widgets.handshake_log import HandshakeLog
from tui.widgets.rebalance_bar import RebalanceBar
from tui.widgets.status_bar import StatusBar

JSON = dict[str, Any]


class MainScreen(ServerActionsScreen):
    """Everything at a glance; keys act on the server under the table cursor."""

    BINDINGS = [
        *SERVER_BINDINGS,
        Binding("b", "rebalance", "Rebalance", id="rebalance", tooltip="Move clients on the wrong server (plan first)"),
        Binding("B", "stop_rebalance", "Stop rebalance", id="stop-rebalance"),
        Binding("enter", "details", "Details", id="server-details"),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("s", "sort", "Sort", id="sort"),
        Binding("p", "cycle_pool", "Pool", id="pool-filter", tooltip="Show one pool, the next, then all"),
        Binding("R", "routes", "Routes", id="routes", tooltip="Routes and what each matched"),
        Binding("end", "follow_log", "Follow", id="follow-log", show=False),
    ]

    #: Which pane `/` filters: "table" or "log" (whichever had focus).
    filtering = "table"

    def __init__(self) -> None:
        super().__init__()
        # Kept as attributes (not queried) so late messages during shutdown find them still.
        self.status_bar = StatusBar(id="status-bar")
        self.rebalance_bar = RebalanceBar(id="rebalance-bar")
        self.edge_bar = EdgeBar(id="edge-bar")
        self.backends = BackendsTable(id="backends")
        self.fleet_panel = FleetPanel(id="fleet-panel")
        self.graphs = Graphs(id="graphs")
        self.events_pane = EventsPane(id="events")
        self.handshakes = HandshakeLog(id="handshakes")
        self.handshakes_off = Static("", id="handshakes-off")

    def compose(self) -> ComposeResult:
        yield self.status_bar
        yield self.rebalance_bar
        yield self.edge_bar
        yield self.backends
        yield self.fleet_panel
        with Horizontal(id="middle"):
            yield self.graphs
            yield self.events_pane
        yield self.handshakes
        yield self.handshakes_off
        yield Input(placeholder="filter (substring, !inverse), Enter keeps, Esc clears", id="filter")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.edge_bar.display = False
        self.backends.focus()
        await self.dashboard.start_source()

    def show_handshakes(self, missing: str | None) -> None:
        """Hide the handshake log, with one line saying why, when the source has none to give."""
        self.handshakes.display = missing is None
        self.handshakes_off.display = missing is not None
        self.handshakes_off.update(missing or "")

    def selected_server(self) -> str | None:
        return self.backends.selected_name

    def apply_snapshot(self, status: JSON, now: float) -> None:
        """Show a fresh `/v1/status`."""
        self.status_bar.set_status(status)
        self.rebalance_bar.set_rebalance(status.get("rebalance"), now)
        self.edge_bar.set_status(status, now)
        groups = [pl.pool_summary(status, n) for n in pl.pool_names(status)] if pl.grouped(status) else None
        if groups is None and self.backends.pool_filter is not None:
            self.backends.pool_filter = None  # back to one pool: nothing to filter
        self.backends.update_servers(list(status.get("servers") or []), now, groups)
        self.fleet_panel.set_fleet(status.get("fleet"))
        self.handshakes.set_engine_dropped(int((status.get("totals") or {}).get("dropped_events", 0)))
        self.refresh_bindings_if_changed()

    def apply_rates(self, rates: JSON) -> None:
        """Show a fresh `/v1/rates`."""
        self.graphs.update_rates(rates)

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.refresh_bindings_if_changed()

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_details()

    def action_details(self) -> None:
        if self.backends.selected_name is None and (pool := self.backends.selected_pool) is not None:
            self.show_pool(None if self.backends.pool_filter == pool else pool)  # enter on a pool header
            return
        if name := self._target():
            self.dashboard.show_details(name)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Shown only with several pools or routes, so a single-pool dashboard looks as it did before pools.
        if action == "cycle_pool":
            return pl.grouped(self.dashboard.status)
        if action == "routes":
            return pl.has_routing(self.dashboard.status)
        return super().check_action(action, parameters)

    def action_states(self) -> tuple[bool | None, ...]:
        pool_keys = (self.check_action("cycle_pool", ()), self.check_action("routes", ()))
        return super().action_states() + pool_keys

    def show_pool(self, pool: str | None) -> None:
        """Filter the table to one pool (None: all pools)."""
        self.backends.set_pool_filter(pool)
        self.notify(f"pool {pool}" if pool else "all pools", timeout=2)

    def action_cycle_pool(self) -> None:
        self.show_pool(pl.next_pool(self.backends.pool_filter, pl.pool_names(self.dashboard.status)))

    def action_routes(self) -> None:
        self.dashboard.show_routes()

    def action_sort(self) -> None:
        order = self.backends.cycle_sort()
        self.notify(f"sorted by {order}", timeout=2)

    def _filter_target(self) -> str:
        focused = self.focused
        return "log" if isinstance(focused, Log) and focused.id == "hs-log" else "table"

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        target = self._filter_target()
        field.placeholder = f"filter {'handshakes' if target == 'log' else 'servers'}: substring, !inverse"
        field.value = self.handshakes.filter_text if target == "log" else self.backends.filter_text
        field.display = True
        field.focus()
        field.refresh()
        self.filtering = target

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self.filtering == "log":
            self.handshakes.set_filter(event.value)
        else:
            self.backends.set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self._close_filter()

    def key_escape(self) -> None:
        field = self.query_one("#filter", Input)
        if field.display:
            field.value = ""
            self._close_filter()

    def _close_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.display = False
        if self.filtering == "log":
            self.handshakes.log_widget.focus()
        else:
            self.backends.focus()

    def action_follow_log(self) -> None:
        self.handshakes.log_widget.scroll_end(animate=False)
