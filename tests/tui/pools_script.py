"""A clock-free two-pool script (issue 15): chat (3 servers, n3 down) and notify (2), three routes, refusals.

Shaped like the pools contract (docs/control-api.md, /work briefs): `pools`, `routes`, `unrouted`, SERVER `pool`
and POOL/NAME names, events with `pool` and `route`. Built in code so the figures below are the assertions' source.
"""

from __future__ import annotations

import copy
from typing import Any

from textual.pilot import Pilot

from tui.app import DashboardApp
from tui.source import ScriptedSource

JSON = dict[str, Any]
START = 1764160000.0
END = 60.0
HALF = 30.0
LISTENER = "127.0.0.1:8000"
# (pool, server, port, weight, up, active at the end, total at the end)
SERVERS = (
    ("chat", "n1", 9101, 1, True, 12, 140),
    ("chat", "n2", 9102, 2, True, 20, 260),
    ("chat", "n3", 9103, 1, False, 0, 35),
    ("notify", "n1", 9201, 1, True, 5, 70),
    ("notify", "n2", 9202, 1, True, 4, 66),
)
BALANCE = {"chat": "least_conn", "notify": "round_robin"}
# (host, path_prefix, sni, pool, matched at t=30, matched at t=60)
ROUTES = (
    ("chat.example.com", None, None, "chat", 400, 460),
    (None, "/notify", None, "notify", 100, 130),
    (None, None, "push.example.com", "notify", 10, 16),
)
UNROUTED = {"not_found": 3, "misdirected": 1}


def _health(up: bool) -> JSON:
    return {
        "status": "up" if up else "down",
        "rise_count": 0,
        "fall_count": 0,
        "rise": 2,
        "fall": 3,
        "last_result": "ok" if up else "fail",
        "last_latency_ms": 0.5 if up else None,
        "last_failure": None if up else "connect refused",
        "last_check": START + END,
        "last_change": START + (0 if up else 20),
        "checks": 60,
        "failures": 0 if up else 40,
    }


def _server(pool: str, name: str, port: int, weight: int, up: bool, active: int, total: int) -> JSON:
    return {
        "name": f"{pool}/{name}",
        "pool": pool,
        "address": f"127.0.0.1:{port}",
        "host": "127.0.0.1",
        "port": port,
        "admin": "active",
        "state": "up" if up else "down",
        "health": _health(up),
        "weight": weight,
        "max_conns": None,
        "share": 0.0,
        "active": active,
        "total": total,
        "connect_failures": 0 if up else 4,
        "bytes_in": total * 512,
        "bytes_out": total * 2048,
        "handshakes": total,
        "drain": None,
    }


def status(at: float) -> JSON:
    """The two-pool `/v1/status` at fake second `at` (30 or 60); counts at 30 are half those at 60."""
    part = at / END
    servers = [_server(p, n, port, w, up, round(a * part), round(t * part)) for p, n, port, w, up, a, t in SERVERS]
    pools = []
    for pool in BALANCE:
        members = [s for s in servers if s["pool"] == pool]
        pools.append(
            {
                "name": pool,
                "balance": BALANCE[pool],
                "servers": len(members),
                "up": sum(1 for s in members if s["state"] == "up"),
                "active": sum(s["active"] for s in members),
                "total": sum(s["total"] for s in members),
                "default_for": [LISTENER] if pool == "chat" else [],
            }
        )
    routes = [
        {
            "index": i,
            "listener": None,
            "host": host,
            "path_prefix": path,
            "sni": sni,
            "pool": pool,
            "matched": half if at < END else full,
        }
        for i, (host, path, sni, pool, half, full) in enumerate(ROUTES)
    ]
    return {
        "engine": {
            "balance": "least_conn",
            "check": {"type": "websocket", "path": "/ws", "interval_ms": 1000, "rise": 2, "fall": 3},
            "control": "/run/user/0/wsproxy/control.sock",
            "pid": 4343,
            "started": START - 5,
            "uptime_s": 5 + at,
            "version": "0.1.0",
        },
        "listeners": [{"address": LISTENER, "active": 41, "total": 571}],
        "servers": servers,
        "pools": pools,
        "routes": routes,
        "unrouted": dict(UNROUTED) if at >= END else {"not_found": 1, "misdirected": 0},
        "totals": {
            "active": sum(s["active"] for s in servers),
            "total": sum(s["total"] for s in servers),
            "bytes_in": 0,
            "bytes_out": 0,
            "connect_failures": 4,
            "dropped_events": 0,
            "handshakes": 571,
        },
    }


def _handshake(ts: float, conn: int, server: str | None, route: int | None, status_code: int, path: str) -> JSON:
    pool = server.split("/", 1)[0] if server else None
    return {
        "type": "handshake",
        "ts": START + ts,
        "conn": conn,
        "client": f"127.0.0.{10 + conn % 5}:{40000 + conn}",
        "listener": LISTENER,
        "server": server,
        "pool": pool,
        "route": route,
        "kind": "websocket" if status_code == 101 else "http",
        "method": "GET",
        "path": path,
        "host": "chat.example.com" if route == 0 else "example.org",
        "status": status_code,
        "reason": {101: "Switching Protocols", 404: "Not Found", 421: "Misdirected Request"}[status_code],
        "subprotocol": None,
        "latency_ms": 0.4 if server else 0.05,
        "error": None,
    }


def _details() -> list[JSON]:
    """chat/n2's open connections (previews count them), one per client."""
    conns = [
        {
            "id": 100 + i,
            "client": f"127.0.0.{20 + i}:{41000 + i}",
            "listener": LISTENER,
            "kind": "websocket",
            "path": "/chat",
            "started": START + 10,
            "age_s": 50.0,
            "bytes_in": 100,
            "bytes_out": 200,
        }
        for i in range(20)
    ]
    return [{"name": "chat/n2", "history": [], "connections": conns}]


def frames() -> list[JSON]:
    """The whole script: two snapshots 30 s apart, the handshakes between them, chat/n2's connections."""
    events = [
        _handshake(31, 1, "chat/n2", 0, 101, "/chat"),
        _handshake(33, 2, "notify/n1", 1, 101, "/notify/feed"),
        _handshake(40, 3, None, None, 404, "/nowhere"),
        _handshake(45, 4, "chat/n1", None, 101, "/"),
        _handshake(50, 5, None, None, 421, "/chat"),
        _handshake(55, 6, "notify/n2", 2, 101, "/push"),
    ]
    script: list[JSON] = [{"start": START}, {"t": 30.0, "status": status(30.0)}]
    script += [{"t": e["ts"] - START, "event": e} for e in events]
    script += [{"t": 59.0, "detail": d} for d in _details()]
    script.append({"t": END, "status": status(END)})
    return copy.deepcopy(script)


def make_pools_app(read_only: bool = False) -> DashboardApp:
    """A dashboard over the two-pool script at its first snapshot (t=30); `to_end` plays the rest."""
    return DashboardApp(ScriptedSource(frames(), until=HALF), read_only=read_only, attach_hint="")


async def to_end(pilot: Pilot[Any]) -> DashboardApp:
    """Play the script to t=60 (a second snapshot, so route rates exist); notifications cleared."""
    app = pilot.app
    assert isinstance(app, DashboardApp) and isinstance(app.source, ScriptedSource)
    await pilot.pause()  # the main screen starts the source once mounted
    app.source.advance(END - HALF)
    await pilot.pause()
    app.clear_notifications()
    await pilot.pause()
    return app
