"""How the `wsproxy` CLI prints status and events: pure functions from the API's JSON to lines of text."""

from __future__ import annotations

import json
import time
from typing import Any

JSON = dict[str, Any]


def clean(value: object) -> str:
    """Text a client or backend sent, with control characters escaped so it cannot drive the terminal."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def state_label(server: JSON) -> str:
    """ "up", "down (going up 1/2)", "draining (deadline in 12 s)"."""
    state = str(server.get("state", "?"))
    extra = []
    if server.get("progress"):
        extra.append(str(server["progress"]))
    drain = server.get("drain")
    if state == "draining" and isinstance(drain, dict) and drain.get("deadline"):
        extra.append(f"deadline in {max(0.0, float(drain['deadline']) - time.time()):.0f} s")
    return f"{state} ({', '.join(extra)})" if extra else state


def health_label(server: JSON) -> str:
    """What the health check says, with progress, and the admin state when it keeps traffic away anyway."""
    health = server.get("health") or {}
    text = str(health.get("status", "?"))
    if server.get("progress"):
        text += f" ({server['progress']})"
    if server.get("admin") not in (None, "active"):
        text += f", {server['admin']}"
    return text


def describe(server: JSON) -> str:
    """One line after a mutation: the server's new state."""
    return (
        f"{server.get('name')} {server.get('address')}: {state_label(server)}, weight {server.get('weight')}, "
        f"{server.get('active', 0)} active"
    )


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    return f"{_duration(max(0.0, now - ts))} ago"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def last_check(server: JSON, now: float) -> str:
    health = server.get("health") or {}
    result = health.get("last_result")
    if result is None:
        return "never"
    latency = health.get("last_latency_ms")
    timing = f" {latency:.1f}ms" if isinstance(latency, int | float) else ""
    text = f"{result}{timing} {_ago(health.get('last_check'), now)}"
    if result == "fail" and health.get("last_failure"):
        text += f": {clean(health['last_failure'])}"
    return text


COLUMNS = ("NAME", "ADDRESS", "STATE", "WEIGHT", "SHARE", "ACTIVE", "TOTAL", "FAILS", "LAST CHECK")


def format_status(status: JSON, now: float) -> str:
    """`wsproxy status`: a header about the engine and a table with one row per server."""
    engine = status.get("engine", {})
    totals = status.get("totals", {})
    check = engine.get("check", {})
    listeners = ", ".join(str(item.get("address")) for item in status.get("listeners", [])) or "-"
    pools = status.get("pools") or []
    balance = f"; balance {engine.get('balance')}" if len(pools) <= 1 else ""  # several: each pool's line says it
    checks = (
        f"check {check.get('type')} every {check.get('interval_ms')}ms, rise {check.get('rise')} "
        f"fall {check.get('fall')}; "
        if len(pools) <= 1
        else ""
    )
    lines = [
        f"wsproxy {engine.get('version')} pid {engine.get('pid')}, up {_duration(float(engine.get('uptime_s', 0)))}"
        f"{' (stopping)' if engine.get('stopping') else ''}; listening on {listeners}{balance}",
        f"{checks}connections {totals.get('active', 0)} active, {totals.get('total', 0)} total, "
        f"{totals.get('connect_failures', 0)} connect failures",
        "",
    ]
    rows = [list(COLUMNS)]
    servers = status.get("servers", [])
    groups: list[tuple[JSON | None, list[JSON]]] = [(None, servers)]
    if len(pools) > 1:  # a line per pool with its totals, then its servers
        groups = [(pool, [s for s in servers if s.get("pool") == pool.get("name")]) for pool in pools]
    headers: dict[int, list[str]] = {}  # the index of the row a pool's line is printed above
    for pool, members in groups:
        if pool is not None:
            headers.setdefault(len(rows), []).append(pool_line(pool))
        rows.extend(server_row(server, now) for server in members)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    for i, row in enumerate(rows):
        lines.extend(headers.get(i, []))
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    lines.extend(headers.get(len(rows), []))  # pools without a server, after the last row
    lines.extend(route_lines(status))
    return "\n".join(line.rstrip() for line in lines)


def server_row(server: JSON, now: float) -> list[str]:
    return [
        str(server.get("name")),
        str(server.get("address")),
        state_label(server),
        str(server.get("weight")),
        f"{float(server.get('share') or 0) * 100:.0f}%",
        str(server.get("active", 0)),
        str(server.get("total", 0)),
        str(server.get("connect_failures", 0)),
        last_check(server, now),
    ]


def pool_line(pool: JSON) -> str:
    """`pool chat (least_conn): 2/3 up, 120 active, 4512 total; default for 0.0.0.0:8000`."""
    default = pool.get("default_for") or []
    where = f"; default for {', '.join(map(str, default))}" if default else ""
    check = pool.get("check")
    checks = f"; check {check_label(check)}" if isinstance(check, dict) else ""
    return (
        f"pool {pool.get('name')} ({pool.get('balance')}): {pool.get('up', 0)}/{pool.get('servers', 0)} up, "
        f"{pool.get('active', 0)} active, {pool.get('total', 0)} total{checks}{where}"
    )


def route_lines(status: JSON) -> list[str]:
    """The routes in the order they are tried, with their matches, and the requests no route took."""
    routes = status.get("routes") or []
    if not routes:
        return []
    lines = ["", "routes (first match wins):"]
    lines.extend(f"  {format_route(route)}, {route.get('matched', 0)} matched" for route in routes)
    lines.append(unrouted_line(status.get("unrouted") or {}))
    return lines


def unrouted_line(unrouted: JSON) -> str:
    return (
        f"unrouted: {unrouted.get('not_found', 0)} not found (404), {unrouted.get('misdirected', 0)} misdirected (421)"
    )


def format_route(route: JSON) -> str:
    """`2 (chat): host chat.example.com -> chat`: its 1-based position (how commands name it), name, rule, pool."""
    position = route.get("position", int(route.get("index", 0)) + 1)
    name = f" ({clean(route['name'])})" if route.get("name") else ""
    conditions = [f"{key} {clean(route[key])}" for key in ("listener", "host", "path_prefix", "sni") if route.get(key)]
    return f"{position}{name}: {' '.join(conditions) or 'any'} -> {clean(route.get('pool'))}"


def format_routes(data: JSON) -> str:
    """`wsproxy routes`: every route in the order tried, with matches, then the requests no route took."""
    lines = [f"{format_route(r)}, {r.get('matched', 0)} matched" for r in data.get("routes") or []]
    return "\n".join(
        [*(lines or ["no routes: every listener sends to its default pool"]), unrouted_line(data.get("unrouted") or {})]
    )


POOL_COLUMNS = ("POOL", "BALANCE", "UP", "ACTIVE", "TOTAL", "CHECK", "DEFAULT FOR")


def check_label(check: JSON) -> str:
    """`http /health every 3000ms, rise 2 fall 5`."""
    if not check:
        return "-"
    path = f" {check.get('path')}" if check.get("type") in ("http", "websocket") else ""
    every = f" every {check.get('interval_ms')}ms, rise {check.get('rise')} fall {check.get('fall')}"
    return f"{check.get('type')}{path}{every if check.get('type') != 'none' else ''}"


def describe_pool(pool: JSON) -> str:
    """One line after `pool add`: `pool chat (least_conn), check http /health every 3000ms, rise 2 fall 5`."""
    return f"pool {clean(pool.get('name'))} ({pool.get('balance')}), check {check_label(pool.get('check') or {})}"


def format_pools(pools: list[JSON]) -> str:
    """`wsproxy pools`: a row per pool; `(added)` marks a pool added at run time."""
    rows = [list(POOL_COLUMNS)]
    for pool in pools:
        rows.append(
            [
                clean(pool.get("name")) + (" (added)" if pool.get("added") else ""),
                str(pool.get("balance")),
                f"{pool.get('up', 0)}/{pool.get('servers', 0)}",
                str(pool.get("active", 0)),
                str(pool.get("total", 0)),
                check_label(pool.get("check") or {}),
                ", ".join(map(str, pool.get("default_for") or [])) or "-",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(POOL_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def format_event(event: JSON) -> str:
    """One readable line per event; unknown types are printed as JSON."""
    ts = event.get("ts")
    stamp = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int((ts % 1) * 1000):03d}" if ts else "--:--:--"
    head = f"{stamp} #{event.get('seq', '?')} {event.get('type')}"
    kind = event.get("type")
    if kind == "state":
        body = f"{event['server']}: {event['old']} -> {event['new']} ({clean(event.get('reason'))})"
    elif kind == "operator":
        verdict = "ok" if event.get("ok") else "REFUSED"
        body = f"{event.get('action')} {event.get('server') or ''} {verdict}: {clean(event.get('detail'))}"
    elif kind == "handshake":
        status = event.get("status")
        body = (
            f"conn {event.get('conn')} {event.get('client')} -> {event.get('server')} {event.get('kind')} "
            f"{clean(event.get('method') or '')} {clean(event.get('path') or '')} "
            f"{status if status is not None else '-'} {clean(event.get('reason') or '')}"
        )
        if event.get("latency_ms") is not None:
            body += f" {event['latency_ms']:.1f}ms"
        if event.get("error"):
            body += f" error: {clean(event['error'])}"
    elif kind == "close":
        body = (
            f"conn {event.get('conn')} {event.get('client')} -> {event.get('server')} closed by "
            f"{event.get('closed_by')} after {event.get('duration_s')}s, {event.get('bytes_in')} B in, "
            f"{event.get('bytes_out')} B out ({clean(event.get('reason'))})"
        )
    elif kind == "connect_failed":
        body = (
            f"{event.get('server')}: connect for {event.get('client')} failed (attempt {event.get('attempt')}): "
            f"{clean(event.get('reason'))}"
        )
    elif kind == "gap":
        body = f"{event.get('missed')} event(s) missed"
    else:
        body = json.dumps({k: v for k, v in event.items() if k not in ("seq", "ts", "type")})
    return f"{head} {' '.join(body.split())}"


def format_impact(impact: JSON) -> list[str]:
    """An impact preview: what moves, from where, and each server's share of new connections afterwards."""
    clients = impact.get("clients")
    who = f"{impact.get('connections', 0)} live connection(s)"
    if clients is not None:
        who += f" of {clients} client(s)"
    lines = [f"moves {who}"]
    for name, moved in sorted((impact.get("from") or {}).items()):
        per = f"{moved.get('connections', 0)} connection(s)"
        if moved.get("clients") is not None:
            per += f", {moved['clients']} client(s)"
        lines.append(f"  from {clean(name)}: {per}")
    shares = impact.get("share_after") or {}
    if shares:
        parts = [f"{clean(name)} {float(share) * 100:.0f}%" for name, share in sorted(shares.items())]
        lines.append("share of new connections after: " + ", ".join(parts))
    return lines


def format_preview(preview: JSON) -> str:
    """`--dry-run` of drain, disable, weight or remove."""
    head = f"dry run (nothing changed): {preview.get('action')} {clean(preview.get('server'))} "
    lines = format_impact(preview.get("impact") or {})
    return "\n".join([head + lines[0], *lines[1:]])


def format_plan(answer: JSON) -> str:
    """`wsproxy rebalance --dry-run`: the moves, grouped by from -> to, then the impact."""
    plan = answer.get("plan") or {}
    routes: dict[tuple[str, str], list[int]] = {}
    for move in plan.get("moves") or []:
        counts = routes.setdefault((str(move.get("from")), str(move.get("to"))), [0, 0])
        counts[0] += 1
        counts[1] += int(move.get("connections", 0))
    if not routes:
        lines = ["dry run: balanced, no client is on the wrong server"]
    else:
        lines = [f"dry run: would move {plan.get('clients', 0)} client(s), {plan.get('connections', 0)} connection(s)"]
        for (source, target), (clients, conns) in sorted(routes.items()):
            lines.append(f"  {clean(source)} -> {clean(target)}: {clients} client(s), {conns} connection(s)")
    for key, why in (("skipped_young", "connected too recently"), ("skipped_full", "their server is at max_conns")):
        if plan.get(key):
            lines.append(f"  left alone: {plan[key]} client(s), {why}")
    lines.extend(format_impact(answer.get("impact") or {})[-1:])
    return "\n".join(lines)


def rebalance_line(state: JSON) -> str:
    """One progress line of a rebalance."""
    return (
        f"rebalance {state.get('state')}: moved {state.get('moved_clients', 0)} of "
        f"{state.get('planned_clients', 0)} client(s), {state.get('left_clients', 0)} left, "
        f"{float(state.get('rate') or 0):g}/s ({clean(state.get('reason'))})"
    )
