"""Operator actions: ask (modal), call the engine, report the result as a toast and in the events pane."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from proxy_core.client import ControlError, ControlUnavailable
from tui import pools as pl
from tui.impact import plural, preview_text
from tui.modals.add import AddServerModal
from tui.modals.confirm import ConfirmModal
from tui.modals.drain import DrainModal, DrainRequest
from tui.modals.preview import PreviewModal, can_force
from tui.modals.rebalance import RebalanceModal, RebalanceRequest
from tui.modals.weight import WeightModal
from tui.source import DataSource
from tui.widgets.events_pane import POOL_TARGET as POOL

if TYPE_CHECKING:
    from tui.app import DashboardApp

JSON = dict[str, Any]
OkText = str | Callable[[JSON], str]

__all__ = ["Operations", "can_force"]


class Operations:
    """Every mutation goes through here, by server name, from keys and from the command palette."""

    def __init__(self, app: DashboardApp) -> None:
        self.app = app

    @property
    def source(self) -> DataSource:
        """The app's data source."""
        return self.app.source

    def _run(
        self,
        action: str,
        target: str,
        call: Callable[[], Awaitable[JSON]],
        ok_text: OkText,
        on_error: Callable[[ControlError], bool] | None = None,
    ) -> None:
        """Run `call` in a worker so input never blocks; report the outcome either way."""

        async def job() -> None:
            try:
                answer = await call()
            except ControlError as exc:
                if on_error is not None and on_error(exc):
                    return
                self.report(action, target, f"refused: {exc.message} ({exc.status})", ok=False)
            except ControlUnavailable as exc:
                self.report(action, target, f"engine unreachable: {exc}", ok=False)
            else:
                self.report(action, target, ok_text if isinstance(ok_text, str) else ok_text(answer), ok=True)

        self.app.run_worker(job(), group="operations")

    def report(self, action: str, target: str, result: str, ok: bool) -> None:
        """A toast now, and a line in the events pane that stays."""
        self.app.notify(
            f"{action} {target}: {result}",
            severity="information" if ok else "error",
            timeout=4 if ok else 8,
        )
        self.app.record_action(action, target, result, ok)

    # Direct actions

    def _forceable(
        self,
        action: str,
        name: str,
        call: Callable[[bool], Awaitable[JSON]],
        ok_text: str,
        force: bool = False,
    ) -> None:
        """Run an action the engine may refuse with 409 (last eligible server); then offer force."""

        def refused(exc: ControlError) -> bool:
            if exc.status != 409 or force or not can_force(exc):
                return False
            self.report(action, name, f"refused: {exc.message}", ok=False)
            self.app.push_screen(
                ConfirmModal(
                    f"The engine refused to {action} {name}",
                    f"{exc.message}.\n\nDo it anyway? New connections will have nowhere to go "
                    "until a server is eligible again.",
                    confirm=f"Force {action}",
                ),
                lambda yes: self._forceable(action, name, call, ok_text, force=True) if yes else None,
            )
            return True

        text = ok_text + (" (forced)" if force else "")
        self._run(action, name, lambda: call(force), text, refused)

    def drain(self, name: str, deadline_s: float | None = None, force: bool = False) -> None:
        """Drain now; the row shows the count falling."""
        text = "draining" + (f", deadline {deadline_s:.0f}s" if deadline_s else "")
        self._forceable("drain", name, lambda f: self.source.drain(name, deadline_s, f), text, force)

    def simple(self, action: str, name: str) -> None:
        """undrain, disable or enable."""
        if action == "disable":
            self._forceable("disable", name, lambda f: self.source.disable(name, f), "disabled")
            return
        calls = {"undrain": self.source.undrain, "enable": self.source.enable}
        done = {"undrain": "taking connections again", "enable": "enabled"}
        self._run(action, name, lambda: calls[action](name), done[action])

    def set_weight(self, name: str, weight: int, force: bool = False) -> None:
        """Absolute weight."""
        call = lambda f: self.source.set_weight(name, weight, f)  # noqa: E731
        self._forceable("weight", name, call, f"weight {weight}", force)

    def remove(self, name: str, force: bool = False) -> None:
        """Remove; on the engine's 409 explain why and offer force."""
        self._forceable("remove", name, lambda f: self.source.remove(name, f), "removed", force)

    def start_rebalance(self, rate: float | None = None) -> None:
        """Start moving the clients that are on the wrong server; the line above the table shows progress."""
        self._run("rebalance", POOL, lambda: self.source.rebalance(rate), _rebalance_text)

    def stop_rebalance(self) -> None:
        """Stop moving clients (those moved stay where they are)."""
        self._run("stop rebalance", POOL, self.source.stop_rebalance, _rebalance_text)

    # Actions that ask first

    def ask_add(self) -> None:
        """The add form; it submits itself so a refusal keeps it open with the reason."""
        taken = {s["name"] for s in self.app.servers()}
        names = pl.pool_names(self.app.status) if pl.grouped(self.app.status) else []
        pool = self.app.main_screen.backends.pool_filter or self.app.main_screen.backends.selected_pool
        self.app.push_screen(AddServerModal(self.submit_add, taken, names, pool))

    async def submit_add(self, name: str, address: str, weight: int, pool: str | None = None) -> JSON:
        """Called by the add form; reports the outcome and lets errors reach the form."""
        shown = name if pool is None else f"{pool}/{name}"
        try:
            server: JSON = await self.source.add(name, address, weight, pool=pool)
        except ControlError as exc:
            self.report("add", shown, f"refused: {exc.message} ({exc.status})", ok=False)
            raise
        except ControlUnavailable as exc:
            self.report("add", shown, f"engine unreachable: {exc}", ok=False)
            raise
        self.report("add", shown, f"added {address} weight {weight}", ok=True)
        return server

    def _render_impact(self, answer: JSON) -> str:
        return preview_text(answer, self.app.servers())

    def _ask_with_preview(
        self,
        action: str,
        name: str,
        body: str,
        confirm: str,
        then: Callable[[bool], None],
        danger: bool = False,
    ) -> None:
        """A confirmation showing the engine's dry run of `action` on `name`; `then(force)` on confirm."""
        modal = PreviewModal(
            f"{confirm} {name}",
            body,
            action=action,
            fetch=lambda: self.source.preview(action, name),
            render=self._render_impact,
            confirm=confirm,
            danger=danger,
        )
        self.app.push_screen(modal, lambda yes: then(modal.forced) if yes else None)

    def ask_drain_now(self, name: str) -> None:
        """Drain without a deadline: one key, the impact, Enter (drain is undone with undrain)."""
        server = self.app.server_by_name(name) or {}
        active = int(server.get("active") or 0)
        body = (
            f"No new connections go to {name} ({server.get('address', '?')}); its "
            f"{plural(active, 'open connection')} finish on their own. Undrain with u."
        )
        self._ask_with_preview("drain", name, body, "Drain", lambda force: self.drain(name, None, force))

    def ask_disable(self, name: str) -> None:
        """Maintenance, after the impact: like drain, reversible (enable), so Enter confirms."""
        server = self.app.server_by_name(name) or {}
        body = (
            f"Put {name} ({server.get('address', '?')}) in maintenance: it takes no new connections "
            "and its health checks go on. Enable with e."
        )
        self._ask_with_preview("disable", name, body, "Disable", lambda force: self._disable(name, force))

    def _disable(self, name: str, force: bool) -> None:
        self._forceable("disable", name, lambda f: self.source.disable(name, f), "disabled", force)

    def ask_drain(self, name: str) -> None:
        """Drain with an optional deadline, and the impact."""
        server = self.app.server_by_name(name) or {}

        def done(request: DrainRequest | None) -> None:
            if request is not None:
                self.drain(name, request.deadline_s, request.force)

        modal = DrainModal(
            name, int(server.get("active") or 0), lambda: self.source.preview("drain", name), self._render_impact
        )
        self.app.push_screen(modal, done)

    def ask_weight(self, name: str) -> None:
        """Weight modal with the share preview and the engine's dry run of each value typed."""
        modal = WeightModal(
            name,
            self.app.servers(),
            lambda weight: self.source.preview("weight", name, weight),
            self._render_impact,
        )

        def done(weight: int | None) -> None:
            if weight is not None:
                self.set_weight(name, weight, modal.forced)

        self.app.push_screen(modal, done)

    def ask_remove(self, name: str) -> None:
        """Confirm naming the address, the live connections and the impact; Cancel has the focus."""
        server = self.app.server_by_name(name) or {}
        active = int(server.get("active") or 0)
        advice = " Drain it first to let them finish." if active and not server.get("drain") else ""
        body = (
            f"Remove {name} ({server.get('address', '?')}, {server.get('state', '?')})?\n"
            f"It has {plural(active, 'live connection')}.{advice}"
        )
        self._ask_with_preview("remove", name, body, "Remove", lambda force: self.remove(name, force), danger=True)

    def ask_rebalance(self) -> None:
        """The engine's dry-run plan, then start; a rebalance already running is pointed at, not doubled."""
        current = self.app.status.get("rebalance") or {}
        if current.get("state") == "running":
            self.app.notify("A rebalance is running: B stops it", severity="warning")
            return

        def done(request: RebalanceRequest | None) -> None:
            if request is not None:
                self.start_rebalance(request.rate)

        self.app.push_screen(RebalanceModal(self.app.servers(), lambda: self.source.rebalance(dry_run=True)), done)

    def ask_close(self, conn_id: int, server: str, client: str) -> None:
        """Confirm closing one client connection."""
        self.app.push_screen(
            ConfirmModal(
                f"Close connection {conn_id}",
                f"Close connection {conn_id} from {client} to {server}?",
                confirm="Close it",
            ),
            lambda yes: self._close(conn_id, server) if yes else None,
        )

    def _close(self, conn_id: int, server: str) -> None:
        self._run(
            "close",
            f"connection {conn_id}",
            lambda: self.source.close_connection(conn_id),
            f"closed (was on {server})",
        )


def _rebalance_text(answer: JSON) -> str:
    """The engine's own words on a rebalance it started or stopped."""
    current: JSON = answer.get("rebalance") or {}
    if current.get("state") == "running":
        return str(current.get("reason") or "started")
    moved = int(current.get("moved_clients") or 0)
    return f"{current.get('state', 'no rebalance')}: {current.get('reason', '')}; moved {plural(moved, 'client')}"
