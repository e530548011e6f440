"""The dashboard App: stylesheet, bindings, palette, message routing and the quit flow; nothing else."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from tui.commands import ServerCommands
from tui.messages import EventsReceived, LinkLost, LinkRestored, RatesUpdated, SnapshotUpdated
from tui.modals.quit import QuitChoice, QuitModal
from tui.operations import Operations
from tui.pools import RouteRates
from tui.screens.detail import DetailScreen
from tui.screens.help import HelpScreen
from tui.screens.main import MainScreen
from tui.screens.routes import RoutesScreen
from tui.source import DataSource

JSON = dict[str, Any]
STYLES = Path(__file__).parent / "styles"


class DashboardApp(App[QuitChoice | None], inherit_bindings=False):
    """wsproxy-tui: a client of the engine's control API; quitting never skips the quit dialog."""

    TITLE = "wsproxy-tui"
    CSS_PATH = [STYLES / f"{name}.tcss" for name in ("app", "main", "detail", "routes", "modals")]
    COMMANDS = App.COMMANDS | {ServerCommands}
    # inherit_bindings=False drops Textual's priority ctrl+q that would quit at once (anchors §5).
    BINDINGS = [
        Binding("q", "request_quit", "Quit", id="quit"),
        Binding("ctrl+q", "request_quit", "Quit", id="quit-ctrl", show=False, priority=True),
        Binding("ctrl+c", "request_quit", "Quit", id="quit-ctrl-c", show=False),
        Binding("question_mark,f1", "help", "Help", id="help"),
    ]

    def __init__(
        self,
        source: DataSource,
        *,
        read_only: bool = False,
        owns_engine: bool = False,
        attach_hint: str = "",
        on_signal: QuitChoice = QuitChoice.QUIT,
        notice: str = "",
    ) -> None:
        super().__init__()
        self.source = source
        self.read_only = read_only
        self.owns_engine = owns_engine
        self.attach_hint = attach_hint
        self.notice = notice  # shown once at start (e.g. why the engine is not on the default socket)
        # What SIGTERM or SIGHUP (the terminal went away) does, when there is nobody to ask.
        self.on_signal = on_signal
        self._signals: list[signal.Signals] = []
        self.ops = Operations(self)
        self.status: JSON = {}
        self.link_lost = False
        self.proxy_read_only = False
        self._drained: set[tuple[str, Any]] = set()
        #: The `started` time of the rebalance last seen running, until its end is announced.
        self._rebalance_running: Any = None
        #: Matches per second per route, from every snapshot (so the routes view has rates when opened).
        self.route_rates = RouteRates()
        self.main_screen = MainScreen()

    def get_default_screen(self) -> Screen[Any]:
        return self.main_screen

    async def start_source(self) -> None:
        """Called by the main screen once mounted: data may flow from here on."""
        bar = self.main_screen.status_bar
        bar.read_only, bar.target, bar.tz = self.read_only, self.source.description, self.source.tz
        bar.live = self.source.live
        self.main_screen.rebalance_bar.tz = self.source.tz
        self.main_screen.show_handshakes(self.source.handshakes_missing)
        await self.source.start(self.post_message)

    def _apply_capabilities(self) -> None:
        """A source learns what it may do from its first answer (HAProxy: the socket's level): go read-only."""
        reason = self.source.read_only_reason
        if reason and not self.proxy_read_only:
            self.proxy_read_only = True
            self.read_only = True
            bar = self.main_screen.status_bar
            bar.read_only, bar.read_only_reason = True, reason
            self.record_note(f"read-only: {reason}")
            self.main_screen.refresh_bindings()

    def on_mount(self) -> None:
        if self.notice:
            self.notify(self.notice, title="Control socket", timeout=12)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(sig, self.exit, self.on_signal)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no such signal here
                continue
            self._signals.append(sig)

    async def on_unmount(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()
        await self.source.stop()

    # Data in

    @property
    def showing(self) -> bool:
        """False once shutdown began: messages still queued must not touch torn-down widgets."""
        return self.is_running and self.main_screen.is_attached and self.main_screen.is_mounted

    def servers(self) -> list[JSON]:
        """The servers of the latest snapshot."""
        return list(self.status.get("servers") or [])

    def server_by_name(self, name: str | None) -> JSON | None:
        """The latest snapshot of one server, by name."""
        return next((s for s in self.servers() if s.get("name") == name), None)

    def on_snapshot_updated(self, message: SnapshotUpdated) -> None:
        if not self.showing:
            return
        self.status = message.status
        self.route_rates.update(list(message.status.get("routes") or []), message.now)
        self._apply_capabilities()
        self.main_screen.apply_snapshot(message.status, message.now)
        self._announce_drained()
        self._announce_rebalance_end()
        if isinstance(self.screen, DetailScreen):
            self.screen.refresh_detail()
            self.screen.refresh_bindings_if_changed()
        elif isinstance(self.screen, RoutesScreen):
            self.screen.refresh_routes()

    def on_rates_updated(self, message: RatesUpdated) -> None:
        if not self.showing:
            return
        self.main_screen.apply_rates(message.rates)

    def on_events_received(self, message: EventsReceived) -> None:
        if not self.showing:
            return
        self.main_screen.handshakes.add_events(message.events, self.source.tz)
        self.main_screen.events_pane.add_events(message.events, self.source.tz)

    def on_link_lost(self, message: LinkLost) -> None:
        if not self.showing:
            return
        self.main_screen.status_bar.set_link(message.since, message.error, message.retry_in)
        if not self.link_lost:
            self.link_lost = True
            self.notify(f"Engine not answering: {message.error}", severity="error", timeout=6)
            self.record_note(f"engine link lost: {message.error}")

    def on_link_restored(self, message: LinkRestored) -> None:
        if not self.showing:
            return
        self.main_screen.status_bar.set_link(None)
        self.link_lost = False
        self.notify(f"Engine answering again after {message.down_s:.1f}s", timeout=4)
        self.record_note(f"engine link restored after {message.down_s:.1f}s")

    def _announce_drained(self) -> None:
        """Tell the operator, once per drain, when a draining server has no connections left."""
        for server in self.servers():
            drain = server.get("drain")
            if not drain or int(server.get("active") or 0) > 0:
                continue
            key = (str(server["name"]), drain.get("started"))
            if key not in self._drained:
                self._drained.add(key)
                text = "drained: no connections left, safe to restart"
                self.notify(f"{server['name']} {text}", title="Drain complete", timeout=10)
                self.record_note(f"{server['name']} {text}")

    def _announce_rebalance_end(self) -> None:
        """A toast, once, when a rebalance seen running ends (done or stopped, with the engine's reason)."""
        current = self.status.get("rebalance") or {}
        if current.get("state") == "running":
            self._rebalance_running = current.get("started")
        elif self._rebalance_running is not None and current.get("started") == self._rebalance_running:
            self._rebalance_running = None
            state = current.get("state")
            self.notify(
                f"{current.get('reason', '')}; moved {current.get('moved_clients', 0)} client(s)",
                title=f"Rebalance {state}",
                severity="information" if state == "done" else "warning",
                timeout=10,
            )

    def record_action(self, action: str, target: str, result: str, ok: bool) -> None:
        """A line in the events pane for something done from (or seen by) this dashboard."""
        if not self.showing:
            return
        self.main_screen.events_pane.add_action(self.source.now(), action, target, result, ok, self.source.tz)

    def record_note(self, text: str) -> None:
        """A line in the events pane for something the dashboard noticed."""
        if not self.showing:
            return
        self.main_screen.events_pane.add_note(self.source.now(), text, self.source.tz)

    # Navigation and quit

    def show_details(self, name: str) -> None:
        """Open the detail screen of one server."""
        if isinstance(self.screen, DetailScreen):
            self.screen.dismiss(None)
        self.push_screen(DetailScreen(name))

    def show_routes(self) -> None:
        """Open the routes view (from `R` or the palette)."""
        if not isinstance(self.screen, RoutesScreen):
            self.push_screen(RoutesScreen())

    def show_pool(self, pool: str | None) -> None:
        """Filter the backends table to one pool (None: all), from the palette."""
        self.main_screen.show_pool(pool)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            bar = self.main_screen.status_bar
            self.push_screen(HelpScreen(bar.control_path(), bar.live, bar.cli_command()))

    def action_request_quit(self) -> None:
        """Ask first: an engine this dashboard started must be stopped or left on purpose."""
        if isinstance(self.screen, QuitModal):
            return
        self.push_screen(QuitModal(self.owns_engine, self.attach_hint), self._quit_chosen)

    async def action_quit(self) -> None:
        """Textual's own quit (palette, ctrl+q) goes through the dialog too."""
        self.action_request_quit()

    def _quit_chosen(self, choice: QuitChoice | None) -> None:
        if choice is not None:
            self.exit(choice)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            if command.title != "Quit":
                yield command
        yield SystemCommand("Quit", "Quit the dashboard (asks first)", self.action_request_quit)
        yield SystemCommand("Help", "Keys and column meanings", self.action_help)
