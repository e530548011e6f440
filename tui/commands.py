"""Command-palette entries for actions on servers by name ("drain b2"), built from the live list."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui import pools as pl

if TYPE_CHECKING:
    from tui.app import DashboardApp

Entry = tuple[str, str, Callable[[], None]]


def entries(app: DashboardApp) -> list[Entry]:
    """(title, help, callback) for every action on every server, mutations only when allowed."""
    out: list[Entry] = []
    if pl.has_routing(app.status):
        out.append(("routes", "Routes, what each matched, and the unrouted 404/421", app.show_routes))
    if pl.grouped(app.status):
        out.append(("all pools", "Show every pool in the backends table", partial(app.show_pool, None)))
        for pool in pl.pool_names(app.status):
            out.append((f"pool {pool}", f"Show only pool {pool} in the backends table", partial(app.show_pool, pool)))
    if not app.read_only:
        out.append(("add server", "Add an upstream server", app.ops.ask_add))
        out.append(("rebalance", "Move the clients on the wrong server (shows the plan first)", app.ops.ask_rebalance))
        if (app.status.get("rebalance") or {}).get("state") == "running":
            out.append(("stop rebalance", "Stop moving clients", app.ops.stop_rebalance))
    for server in app.servers():
        name = str(server["name"])
        out.append((f"details {name}", f"Health history and connections of {name}", partial(app.show_details, name)))
        if app.read_only:
            continue
        out += [
            (f"drain {name}", f"Stop new connections to {name}", partial(app.ops.ask_drain_now, name)),
            (f"drain {name} with deadline", "Drain, then close what is left", partial(app.ops.ask_drain, name)),
            (f"undrain {name}", f"Let {name} take connections again", partial(app.ops.simple, "undrain", name)),
            (f"disable {name}", f"Maintenance for {name}", partial(app.ops.ask_disable, name)),
            (f"enable {name}", f"Bring {name} back", partial(app.ops.simple, "enable", name)),
            (f"weight {name}", f"Set the weight of {name}", partial(app.ops.ask_weight, name)),
            (f"remove {name}", f"Remove {name} (asks first)", partial(app.ops.ask_remove, name)),
        ]
    return out


class ServerCommands(Provider):
    """Lists actions and servers; typing "drain b2" finds the action on that server."""

    @property
    def dashboard(self) -> DashboardApp:
        """The app, typed."""
        from tui.app import DashboardApp

        assert isinstance(self.app, DashboardApp)
        return self.app

    async def discover(self) -> Hits:
        for title, help_text, callback in entries(self.dashboard):
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in entries(self.dashboard):
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
