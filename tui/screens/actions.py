"""Server-action bindings shared by the main and detail screens; each reads the target name at use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.binding import Binding, BindingType
from textual.screen import Screen

from tui import format as fmt

if TYPE_CHECKING:
    from tui.app import DashboardApp

JSON = dict[str, Any]

# Actions that change the engine: hidden in read-only mode.
MUTATIONS = frozenset(
    {
        "add_server",
        "drain",
        "drain_deadline",
        "undrain",
        "disable",
        "enable",
        "weight",
        "remove",
        "close_connection",
        "rebalance",
        "stop_rebalance",
    }
)
# Mutations of the whole pool, not of the selected server.
POOL_ACTIONS = frozenset({"add_server", "close_connection", "rebalance", "stop_rebalance"})

SERVER_BINDINGS: list[BindingType] = [
    Binding("a", "add_server", "Add", id="add-server", tooltip="Add an upstream server"),
    Binding("d", "drain", "Drain", id="drain-server", tooltip="Stop new connections; watch it empty"),
    Binding("D", "drain_deadline", "Drain…", id="drain-server-deadline", show=False),
    Binding("u", "undrain", "Undrain", id="undrain-server"),
    Binding("x", "disable", "Disable", id="disable-server"),
    Binding("e", "enable", "Enable", id="enable-server"),
    Binding("w", "weight", "Weight", id="set-weight", tooltip="Set an absolute weight"),
    Binding("r,delete", "remove", "Remove", id="remove-server"),
]


# The actions whose check_action answer can change while the screen is shown (selection, state, read-only).
_VARYING = tuple(sorted(MUTATIONS))


class ServerActionsScreen(Screen[None]):
    """A screen with a selected server and the keys that act on it."""

    #: check_action's answers for _VARYING when the footer was last refreshed (None: never).
    _shown_actions: tuple[bool | None, ...] | None = None

    def action_states(self) -> tuple[bool | None, ...]:
        """What check_action answers now for every action that can change: the footer's only input."""
        return tuple(self.check_action(action, ()) for action in _VARYING)

    def refresh_bindings_if_changed(self) -> None:
        """`refresh_bindings()` only when a key would appear, disappear or change (measured: refreshing on every
        snapshot made the Footer recompose every key, ~30 % of the dashboard's busy time)."""
        states = self.action_states()
        if states != self._shown_actions:
            self._shown_actions = states
            self.refresh_bindings()

    @property
    def dashboard(self) -> DashboardApp:
        """The app, typed."""
        from tui.app import DashboardApp

        assert isinstance(self.app, DashboardApp)
        return self.app

    def selected_server(self) -> str | None:
        """Name of the server the keys act on."""
        raise NotImplementedError

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MUTATIONS and self.dashboard.read_only:
            return False
        if action == "stop_rebalance":
            return bool((self.dashboard.status.get("rebalance") or {}).get("state") == "running")
        if action in MUTATIONS - POOL_ACTIONS:
            server = self.dashboard.server_by_name(self.selected_server())
            if server is None:
                return None
            kind = fmt.state_kind(server)
            if action == "undrain":
                return kind in ("draining", "drained")
            if action in ("drain", "drain_deadline"):
                return kind not in ("draining", "drained", "disabled")
            if action == "enable":
                return kind == "disabled"
            if action == "disable":
                return kind != "disabled"
        return True

    def _target(self) -> str | None:
        name = self.selected_server()
        if name is None:
            self.notify("No server selected", severity="warning")
        return name

    def action_add_server(self) -> None:
        self.dashboard.ops.ask_add()

    def action_drain(self) -> None:
        if name := self._target():
            self.dashboard.ops.ask_drain_now(name)

    def action_drain_deadline(self) -> None:
        if name := self._target():
            self.dashboard.ops.ask_drain(name)

    def action_undrain(self) -> None:
        if name := self._target():
            self.dashboard.ops.simple("undrain", name)

    def action_disable(self) -> None:
        if name := self._target():
            self.dashboard.ops.ask_disable(name)

    def action_enable(self) -> None:
        if name := self._target():
            self.dashboard.ops.simple("enable", name)

    def action_weight(self) -> None:
        if name := self._target():
            self.dashboard.ops.ask_weight(name)

    def action_remove(self) -> None:
        if name := self._target():
            self.dashboard.ops.ask_remove(name)

    def action_rebalance(self) -> None:
        self.dashboard.ops.ask_rebalance()

    def action_stop_rebalance(self) -> None:
        self.dashboard.ops.stop_rebalance()
