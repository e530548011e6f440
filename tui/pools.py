"""Pure helpers for pools and routes (issue 15): which pools a status has, their health, route labels and rates.

A status without `pools`, or with one pool, is today's single pool: the dashboard then looks exactly as before.
"""

from __future__ import annotations

from typing import Any

from tui.format import clean

JSON = dict[str, Any]

# A route's rate is the change of its `matched` count between two snapshots at least this far apart, so 4 Hz
# snapshots do not turn one connection into a spike of 4/s.
MIN_RATE_WINDOW_S = 1.0
# What a route's null field means on screen.
ANY = "*"


def pools(status: JSON) -> list[JSON]:
    """The status's POOL list in the engine's order (empty for an engine before issue 15)."""
    return [p for p in status.get("pools") or [] if isinstance(p, dict) and p.get("name") is not None]


def pool_names(status: JSON) -> list[str]:
    """Pool names in the engine's order, plus any a server names that the list lacks (a source in between)."""
    names = [str(p["name"]) for p in pools(status)]
    for server in status.get("servers") or []:
        pool = server.get("pool")
        if pool is not None and str(pool) not in names:
            names.append(str(pool))
    return names


def grouped(status: JSON) -> bool:
    """Several pools: the table groups by pool and the pool keys appear."""
    return len(pool_names(status)) > 1


def has_routing(status: JSON) -> bool:
    """Several pools, routes, or refused unrouted requests: the routes view has something to show."""
    unrouted = status.get("unrouted") or {}
    return grouped(status) or bool(status.get("routes")) or any(int(v or 0) for v in unrouted.values())


def pool_of(server: JSON) -> str | None:
    """The pool a SERVER belongs to (None before issue 15)."""
    pool = server.get("pool")
    return None if pool is None else str(pool)


def pool_summary(status: JSON, name: str) -> JSON:
    """One POOL: the engine's own figures where it gave them, else summed from its servers."""
    members = [s for s in status.get("servers") or [] if pool_of(s) == name]
    given = next((p for p in pools(status) if p["name"] == name), {})
    return {
        "name": name,
        "balance": given.get("balance"),
        "servers": int(given.get("servers", len(members))),
        "up": int(given.get("up", sum(1 for s in members if s.get("state") == "up"))),
        "active": int(given.get("active", sum(int(s.get("active") or 0) for s in members))),
        "total": int(given.get("total", sum(int(s.get("total") or 0) for s in members))),
        "default_for": list(given.get("default_for") or []),
    }


def health_kind(summary: JSON) -> str:
    """A pool's health family, coloured like a server state: all up, some up, none up (or empty)."""
    servers, up = int(summary.get("servers") or 0), int(summary.get("up") or 0)
    if servers == 0 or up == 0:
        return "down"
    return "up" if up == servers else "going-down"


def short_name(name: str, pool: str | None) -> str:
    """`n2` for `chat/n2` inside the chat group: the group header already says the pool."""
    if pool and name.startswith(pool + "/"):
        return name[len(pool) + 1 :]
    return name


def next_pool(current: str | None, names: list[str]) -> str | None:
    """The `p` key's cycle: all pools, then each pool in order, then all again."""
    if not names:
        return None
    if current not in names:
        return names[0]
    index = names.index(current) + 1
    return names[index] if index < len(names) else None


def route_match(route: JSON) -> str:
    """What a route matches, in one field: `chat.example.com/api` or `sni chat.example.com`."""
    parts = []
    if route.get("sni"):
        parts.append(f"sni {clean(route['sni'], 40)}")
    host, path = route.get("host"), route.get("path_prefix")
    if host or path:
        parts.append(f"{clean(host, 40) if host else ANY}{clean(path, 40) if path else ''}")
    return ", ".join(parts) or ANY


def route_label(event: JSON) -> str:
    """How the handshake log names the route that matched: `route 2`, or `default` for the listener's pool."""
    route = event.get("route")
    # The event carries the route's 0-based index; commands and the routes view count from 1 (`wsproxy route remove 2`).
    return "default" if route is None else (f"route {route + 1}" if isinstance(route, int) else f"route {route}")


def _route_key(route: JSON) -> tuple[Any, ...]:
    """A route's identity across snapshots: removing one renumbers the rest, so the index alone is not it."""
    return (route.get("listener"), route.get("host"), route.get("path_prefix"), route.get("sni"), route.get("pool"))


class RouteRates:
    """Matches per second per route, from the `matched` counts of successive snapshots (pure: `now` comes in)."""

    def __init__(self) -> None:
        self._base: dict[tuple[Any, ...], tuple[float, int]] = {}
        self._rates: dict[tuple[Any, ...], float] = {}

    def update(self, routes: list[JSON], now: float) -> None:
        """Take a snapshot's routes; a rate moves once its window is at least MIN_RATE_WINDOW_S long."""
        seen = set()
        for route in routes:
            key = _route_key(route)
            seen.add(key)
            matched = int(route.get("matched") or 0)
            base = self._base.get(key)
            if base is None or matched < base[1]:  # new, or the engine restarted and counts from 0
                self._base[key] = (now, matched)
                self._rates.pop(key, None)
            elif now - base[0] >= MIN_RATE_WINDOW_S:
                self._rates[key] = (matched - base[1]) / (now - base[0])
                self._base[key] = (now, matched)
        for key in set(self._base) - seen:
            del self._base[key]
            self._rates.pop(key, None)

    def rate(self, route: JSON) -> float | None:
        """Matches per second over the last window, or None before a window has passed."""
        return self._rates.get(_route_key(route))
