"""The backends table: one row per server keyed by name; only changed cells are touched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from tui import format as fmt
from tui import pools as pl

JSON = dict[str, Any]

# (column key, label); keys are fixed so update_cell never hits CellDoesNotExist (anchors §5).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "server"),
    ("address", "address"),
    ("state", "state"),
    ("weight", "wt"),
    ("share", "share"),
    ("active", "active"),
    ("total", "total"),
    ("fails", "fails"),
    ("bytes", "in / out"),
    ("check", "last check"),
    ("changed", "changed"),
)
COLUMN_KEYS = tuple(key for key, _ in COLUMNS)

# Theme variable per state family: colour carries the state, the label carries the detail.
STATE_COLOURS = {
    "up": "success",
    "down": "error",
    "going-down": "warning",
    "going-up": "accent",
    "draining": "warning",
    "drained": "success",
    "disabled": "foreground-muted",
}
# Sort orders offered by `s`: state sorts the troubled servers first.
_STATE_RANK = {"down": 0, "going-down": 1, "going-up": 2, "draining": 3, "drained": 4}
SORTS: dict[str, Callable[[JSON], Any]] = {
    "name": lambda s: s["name"],
    "state": lambda s: (_STATE_RANK.get(fmt.state_kind(s), 9), s["name"]),
    "active": lambda s: (-int(s.get("active") or 0), s["name"]),
    "share": lambda s: (-float(s.get("share") or 0), s["name"]),
    "fails": lambda s: (-int((s.get("health") or {}).get("failures") or 0), s["name"]),
}
SORT_ORDER = tuple(SORTS)
# Row keys of pool header rows: no server name holds a NUL, so a header never collides with a server.
HEADER_KEY = "\x00pool "
# The name cell of a header: the space makes it unlike any server name (the table orders rows by this cell).
HEADER_MARK = "▾ "
# Server names are indented under their pool's header.
INDENT = "  "


def matches(server: JSON, query: str) -> bool:
    """Substring filter over name, address and state; a leading `!` inverts it."""
    if not query:
        return True
    invert = query.startswith("!")
    needle = query[1:].lower() if invert else query.lower()
    if not needle:
        return True
    hay = f"{server.get('name')} {server.get('address')} {server.get('state')}".lower()
    return (needle in hay) != invert


class BackendsTable(DataTable[Text]):
    """Servers with state in colour; the cursor follows the server, not the row index."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.filter_text = ""
        self.sort_by = "name"
        #: Show only this pool (None: every pool); the `p` key and the palette set it.
        self.pool_filter: str | None = None
        self._groups: list[JSON] | None = None
        self._cells: dict[str, tuple[Text, ...]] = {}
        self._servers: list[JSON] = []
        self._now = 0.0
        # The server the operator chose; survives a filter that hides it for a while.
        self._sticky: str | None = None

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    @property
    def _cursor_key(self) -> str | None:
        """The row key under the cursor: a server name or a pool header's key."""
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return str(key.value) if key.value is not None else None

    @property
    def selected_name(self) -> str | None:
        """The server under the cursor (read at the moment of use, never cached as an index); None on a header."""
        key = self._cursor_key
        return None if key is None or key.startswith(HEADER_KEY) else key

    @property
    def selected_pool(self) -> str | None:
        """The pool under the cursor: its header's, or the selected server's."""
        key = self._cursor_key
        if key is None:
            return None
        if key.startswith(HEADER_KEY):
            return key[len(HEADER_KEY) :]
        server = next((s for s in self._servers if s.get("name") == key), None)
        return None if server is None else pl.pool_of(server)

    def select(self, name: str) -> None:
        """Move the cursor to `name` if it is shown."""
        self._sticky = name
        if name in self._cells:
            self.move_cursor(row=self.get_row_index(name), animate=False)

    def set_filter(self, query: str) -> None:
        """Show only matching servers, keeping the cursor on the same one when it stays visible."""
        self.filter_text = query
        self.update_servers(self._servers, self._now, self._groups)

    def set_pool_filter(self, pool: str | None) -> None:
        """Show one pool only (None: all), keeping the cursor on the same server when it stays visible."""
        self.pool_filter = pool
        self.update_servers(self._servers, self._now, self._groups)

    def cycle_sort(self) -> str:
        """Switch to the next sort order and return its name."""
        self.sort_by = SORT_ORDER[(SORT_ORDER.index(self.sort_by) + 1) % len(SORT_ORDER)]
        self.update_servers(self._servers, self._now, self._groups)
        return self.sort_by

    def update_servers(self, servers: list[JSON], now: float, groups: list[JSON] | None = None) -> None:
        """Apply a snapshot: add, remove, re-sort rows and update only the cells that changed.

        `groups`: the POOL summaries when there are several pools; the rows are then grouped under a header each.
        """
        self._servers, self._now, self._groups = servers, now, groups
        if self._sticky is None or self._sticky in self._cells:
            self._sticky = self._cursor_key
        visible = sorted((s for s in servers if matches(s, self.filter_text)), key=SORTS[self.sort_by])
        colours = self._colours()
        rows = self._grouped_rows(visible, groups, now, colours) if groups else None
        if rows is None:
            rows = [(s["name"], self.render_cells(s, now, colours)) for s in visible]
        wanted = {key for key, _ in rows}
        for key in [k for k in self._cells if k not in wanted]:
            self.remove_row(key)
            del self._cells[key]
        for key, cells in rows:
            old = self._cells.get(key)
            if old is None:
                self.add_row(*cells, key=key)
            else:
                for column, new_cell, old_cell in zip(COLUMN_KEYS, cells, old, strict=True):
                    if new_cell != old_cell:
                        # Grow a column only when a cell outgrows it (update_width each time costs CPU).
                        grow = new_cell.cell_len > self.columns[ColumnKey(column)].content_width
                        self.update_cell(key, column, new_cell, update_width=grow)
            self._cells[key] = cells
        order = [key for key, _ in rows]
        if [row.key.value for row in self.ordered_rows] != order:
            rank = {cells[0].plain: i for i, (_, cells) in enumerate(rows)}
            self.sort("name", key=lambda cell: rank[cell.plain])
        if self._sticky is not None and self._sticky in self._cells:
            self.select(self._sticky)
        shown = sum(1 for key in order if not key.startswith(HEADER_KEY))
        title = f"Backends {shown}/{len(servers)}"
        if groups:
            title += f"  ·  {len(groups)} pools"
        title += f"  ·  sort: {self.sort_by}"
        if self.pool_filter is not None:
            title += f"  ·  pool: {self.pool_filter}"
        self.border_title = title + (f"  ·  filter: {self.filter_text}" if self.filter_text else "")

    def _grouped_rows(
        self, visible: list[JSON], groups: list[JSON], now: float, colours: dict[str, Style]
    ) -> list[tuple[str, tuple[Text, ...]]]:
        """A header per pool, then its servers; a pool with no match for the text filter is left out."""
        rows: list[tuple[str, tuple[Text, ...]]] = []
        for group in groups:
            name = str(group["name"])
            if self.pool_filter is not None and name != self.pool_filter:
                continue
            members = [s for s in visible if pl.pool_of(s) == name]
            if not members and self.filter_text:
                continue
            rows.append((HEADER_KEY + name, self.render_header(group, colours)))
            rows += [(s["name"], self.render_cells(s, now, colours, indent=True)) for s in members]
        return rows

    def _colours(self) -> dict[str, Style]:
        variables = self.app.get_css_variables()
        styles: dict[str, Style] = {}
        for kind, var in STATE_COLOURS.items():
            colour = Color.parse(variables.get(var, "white"))
            styles[kind] = Style(color=colour.rich_color, bold=kind in ("down", "going-down"))
        return styles

    @staticmethod
    def render_header(pool: JSON, colours: dict[str, Style]) -> tuple[Text, ...]:
        """A pool's header row: name, balance, servers up/total in the pool's health colour, active, total."""
        health = colours.get(pl.health_kind(pool), Style())
        default_for = ", ".join(str(x) for x in pool.get("default_for") or [])
        blank = Text("")
        return (
            Text(HEADER_MARK + str(pool["name"]), style="bold"),
            Text(str(pool.get("balance") or "")),
            Text(f"{pool.get('up', 0)}/{pool.get('servers', 0)} up", style=health + Style(bold=True)),
            blank,
            blank,
            Text(str(pool.get("active", 0)), justify="right", style="bold"),
            Text(str(pool.get("total", 0)), justify="right", style="bold"),
            blank,
            blank,
            Text(f"default for {default_for}" if default_for else "", style="dim"),
            blank,
        )

    @staticmethod
    def render_cells(server: JSON, now: float, colours: dict[str, Style], indent: bool = False) -> tuple[Text, ...]:
        """One row of cells; Text (not str) so names and reasons are never parsed as markup."""
        health = server.get("health") or {}
        kind = fmt.state_kind(server)
        active = fmt.drain_progress(server) if kind in ("draining", "drained") else str(server.get("active", 0))
        fails = f"{health.get('failures', 0)}/{server.get('connect_failures', 0)}"
        traffic = f"{fmt.size(server.get('bytes_in'))} / {fmt.size(server.get('bytes_out'))}"
        last_change = health.get("last_change")
        changed = fmt.duration(now - float(last_change)) if last_change else "-"
        if server.get("drain") and kind in ("draining", "drained"):
            changed = fmt.duration(now - float(server["drain"]["started"]))
        return (
            Text((INDENT if indent else "") + str(server.get("name"))),
            Text(str(server.get("address", ""))),
            Text(fmt.state_label(server, now), style=colours.get(kind, "")),
            Text(str(server.get("weight", "")), justify="right"),
            Text(fmt.percent(server.get("share")), justify="right"),
            Text(active, justify="right", style=colours.get(kind, "") if kind == "draining" else ""),
            Text(str(server.get("total", 0)), justify="right"),
            Text(fails, justify="right"),
            Text(traffic, justify="right"),
            Text(fmt.check_summary(server)),
            Text(changed, justify="right"),
        )
