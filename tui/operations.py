"""Operator actions: ask (modal), call the engine, report the result as a toast and in the events pane."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from proxy_core.client import ControlError, ControlUnavailable
from tui.modals.add import AddServerModal
from tui.modals.confirm import ConfirmModal
from tui.modals.drain import DrainModal, DrainRequest
from tui.modals.weight import WeightModal
from tui.source import DataSource

if TYPE_CHECKING:
    from tui.app import DashboardApp

JSON = dict[str, Any]


def can_force(exc: ControlError) -> bool:
    """Only the "would leave no eligible server" refusal can be overridden; a duplicate cannot."""
    return "force" in exc.message or "no eligible server" in exc.message


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
        ok_text: str,
        on_error: Callable[[ControlError], bool] | None = None,
    ) -> None:
        """Run `call` in a worker so input never blocks; report the outcome either way."""

        async def job() -> None:
            try:
                await call()
            except ControlError as exc:
                if on_error is not None and on_error(exc):
                    return
                self.report(action, target, f"refused: {exc.message} ({exc.status})", ok=False)
            except ControlUnavailable as exc:
                self.report(action, target, f"engine unreachable: {exc}", ok=False)
            else:
                self.report(action, target, ok_text, ok=True)

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

    def drain(self, name: str, deadline_s: float | None = None) -> None:
        """Drain now; the row shows the count falling."""
        text = "draining" + (f", deadline {deadline_s:.0f}s" if deadline_s else "")
        self._forceable("drain", name, lambda f: self.source.drain(name, deadline_s, f), text)

    def simple(self, action: str, name: str) -> None:
        """undrain, disable or enable."""
        if action == "disable":
            self._forceable("disable", name, lambda f: self.source.disable(name, f), "disabled")
            return
        calls = {"undrain": self.source.undrain, "enable": self.source.enable}
        done = {"undrain": "taking connections again", "enable": "enabled"}
        self._run(action, name, lambda: calls[action](name), done[action])

    def set_weight(self, name: str, weight: int) -> None:
        """Absolute weight."""
        self._forceable("weight", name, lambda f: self.source.set_weight(name, weight, f), f"weight {weight}")

    def remove(self, name: str) -> None:
        """Remove; on the engine's 409 explain why and offer force."""
        self._forceable("remove", name, lambda f: self.source.remove(name, f), "removed")

    # Actions that ask first

    def ask_add(self) -> None:
        """The add form; it submits itself so a refusal keeps it open with the reason."""
        taken = {s["name"] for s in self.app.servers()}
        self.app.push_screen(AddServerModal(self.submit_add, taken))

    async def submit_add(self, name: str, address: str, weight: int) -> JSON:
        """Called by the add form; reports the outcome and lets errors reach the form."""
        try:
            server: JSON = await self.source.add(name, address, weight)
        except ControlError as exc:
            self.report("add", name, f"refused: {exc.message} ({exc.status})", ok=False)
            raise
        except ControlUnavailable as exc:
            self.report("add", name, f"engine unreachable: {exc}", ok=False)
            raise
        self.report("add", name, f"added {address} weight {weight}", ok=True)
        return server

    def ask_drain(self, name: str) -> None:
        """Drain with an optional deadline."""
        server = self.app.server_by_name(name) or {}

        def done(request: DrainRequest | None) -> None:
            if request is not None:
                self.drain(name, request.deadline_s)

        self.app.push_screen(DrainModal(name, int(server.get("active") or 0)), done)

    def ask_weight(self, name: str) -> None:
        """Weight modal with the share preview."""

        def done(weight: int | None) -> None:
            if weight is not None:
                self.set_weight(name, weight)

        self.app.push_screen(WeightModal(name, self.app.servers()), done)

    def ask_remove(self, name: str) -> None:
        """Confirm naming the address and the live connections."""
        server = self.app.server_by_name(name) or {}
        active = int(server.get("active") or 0)
        advice = " Drain it first to let them finish." if active and not server.get("drain") else ""
        body = (
            f"Remove {name} ({server.get('address', '?')}, {server.get('state', '?')})?\n"
            f"It has {active} live connection{'s' if active != 1 else ''}.{advice}"
        )
        self.app.push_screen(
            ConfirmModal(f"Remove {name}", body, confirm="Remove"),
            lambda yes: self.remove(name) if yes else None,
        )

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
