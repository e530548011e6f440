"""The server detail screen: health-check transitions with reasons, and open connections."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Label, Static

from proxy_core.client import ControlError, ControlUnavailable
from tui import format as fmt
from tui.screens.actions import SERVER_BINDINGS, ServerActionsScreen

JSON = dict[str, Any]

# The detail answer carries every open connection; refetch at most this often.
REFRESH_S = 1.0


class DetailScreen(ServerActionsScreen):
    """One server in depth; the keys of the main screen act on it, plus closing a connection."""

    BINDINGS = [
        Binding("escape,backspace", "back", "Back", id="detail-back"),
        *SERVER_BINDINGS,
        Binding("k", "close_connection", "Close conn", id="close-connection"),
    ]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.server_name = name
        self.detail: JSON | None = None
        self.gone = False
        self._last_fetch: float | None = None
        self._fetching = False

    def compose(self) -> ComposeResult:
        yield Label(f"Server {self.server_name}", id="detail-title", classes="pane-title")
        yield Static("loading…", id="detail-summary", markup=False)
        with Vertical(id="detail-history-box"):
            yield Label("Health-check transitions (oldest first)", classes="pane-title")
            yield DataTable(id="detail-history", cursor_type="row", zebra_stripes=True)
        with Vertical(id="detail-conns-box"):
            yield Label("Open connections", id="conns-title", classes="pane-title")
            yield DataTable(id="detail-conns", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        history = self.query_one("#detail-history", DataTable)
        for key, label in (("ts", "time"), ("change", "change"), ("reason", "reason")):
            history.add_column(label, key=key)
        conns = self.query_one("#detail-conns", DataTable)
        for key, label in (
            ("id", "id"),
            ("client", "client"),
            ("kind", "kind"),
            ("path", "path"),
            ("age", "age"),
            ("in", "in"),
            ("out", "out"),
            ("listener", "listener"),
        ):
            conns.add_column(label, key=key)
        conns.focus()
        self.refresh_detail(force=True)

    def selected_server(self) -> str | None:
        return None if self.gone else self.server_name

    def refresh_detail(self, force: bool = False) -> None:
        """Refetch the detail if it is older than REFRESH_S of source time."""
        now = self.dashboard.source.now()
        if self._fetching or (not force and self._last_fetch is not None and now - self._last_fetch < REFRESH_S):
            return
        self._fetching = True
        self._last_fetch = now
        self._fetch()

    @work(exclusive=True, group="detail-fetch")
    async def _fetch(self) -> None:
        try:
            detail = await self.dashboard.source.server(self.server_name)
        except ControlError as exc:
            if exc.status == 404:
                self.gone = True
                self.query_one("#detail-summary", Static).update(f"{self.server_name} was removed")
                self.refresh_bindings_if_changed()
            return
        except ControlUnavailable:
            return
        finally:
            self._fetching = False
        self.show(detail)

    def show(self, detail: JSON) -> None:
        """Render a `GET /v1/servers/{name}` answer."""
        self.detail = detail
        tz = self.dashboard.source.tz
        now = self.dashboard.source.now()
        health = detail.get("health") or {}
        lines = [
            f"{detail.get('address')}  ·  {fmt.state_label(detail, now)}  ·  weight "
            f"{detail.get('weight')} ({fmt.percent(detail.get('share'))})  ·  active "
            f"{detail.get('active')}  ·  total {detail.get('total')}  ·  "
            f"in {fmt.size(detail.get('bytes_in'))} out {fmt.size(detail.get('bytes_out'))}",
            f"checks {health.get('checks', 0)}, failures {health.get('failures', 0)}, "
            f"in a row: {health.get('rise_count', 0)} ok, {health.get('fall_count', 0)} failed "
            f"(rise {health.get('rise', '?')}, fall {health.get('fall', '?')})  ·  last check "
            f"{fmt.clock(health.get('last_check'), tz)}: {fmt.check_summary(detail)}  ·  "
            f"connect failures {detail.get('connect_failures', 0)}",
        ]
        self.query_one("#detail-summary", Static).update("\n".join(lines))
        history = self.query_one("#detail-history", DataTable)
        history.clear()
        for item in detail.get("history") or []:
            history.add_row(
                Text(fmt.clock(item.get("ts"), tz)),
                Text(f"{item.get('from')} → {item.get('to')}"),
                Text(fmt.clean(item.get("reason") or "", 80)),
            )
        if not history.row_count:
            history.add_row(Text("-"), Text("no transitions yet"), Text(""))
        else:
            history.move_cursor(row=history.row_count - 1, animate=False)
        self._show_connections(detail.get("connections") or [])

    def _show_connections(self, connections: list[JSON]) -> None:
        table = self.query_one("#detail-conns", DataTable)
        selected = self.selected_connection()
        table.clear()
        for conn in sorted(connections, key=lambda c: int(c.get("id", 0))):
            table.add_row(
                Text(str(conn.get("id"))),
                Text(fmt.clean(conn.get("client"), 24)),
                Text(str(conn.get("kind") or "-")),
                Text(fmt.clean(conn.get("path") or "-", 24)),
                Text(fmt.duration(conn.get("age_s")), justify="right"),
                Text(fmt.size(conn.get("bytes_in")), justify="right"),
                Text(fmt.size(conn.get("bytes_out")), justify="right"),
                Text(str(conn.get("listener") or "-")),
                key=str(conn.get("id")),
            )
        if selected is not None and str(selected) in {str(c.get("id")) for c in connections}:
            table.move_cursor(row=table.get_row_index(str(selected)), animate=False)
        self.query_one("#conns-title", Label).update(f"Open connections: {len(connections)}")

    def selected_connection(self) -> int | None:
        """Id of the connection under the cursor."""
        table = self.query_one("#detail-conns", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return int(key) if key is not None else None

    def action_close_connection(self) -> None:
        conn_id = self.selected_connection()
        if conn_id is None:
            self.notify("No connection selected", severity="warning")
            return
        connections: list[JSON] = (self.detail or {}).get("connections") or []
        conn: JSON = next((c for c in connections if c.get("id") == conn_id), {})
        self.dashboard.ops.ask_close(conn_id, self.server_name, str(conn.get("client", "?")))

    def action_back(self) -> None:
        self.dismiss(None)
