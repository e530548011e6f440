"""Pure one-line renderings of control-API events for the handshake log and the events pane."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from tui.format import clean, clock, duration, latency, size
from tui.pools import route_label

JSON = dict[str, Any]

# Event types that belong in the handshake log; the rest go to the events pane.
TRAFFIC_TYPES = frozenset({"handshake", "close"})
EVENT_TYPES = frozenset({"state", "operator", "connect_failed"})
# A handshake event with no server and one of these statuses is the engine's own refusal of an unrouted request.
UNROUTED = {404: "no route (not found)", 421: "misdirected (SNI and Host disagree)"}


def _routed(event: JSON) -> str:
    """` [chat, route 2]`: the pool and the route that chose it, on engines with pools (nothing before them)."""
    if "route" not in event and "pool" not in event:
        return ""
    if event.get("pool") is None and event.get("server") is None:
        return " [no route]"
    where = clean(event.get("pool"), 24) if event.get("pool") is not None else "-"
    return f" [{where}, {route_label(event)}]"


def gap_line(event: JSON, tz: tzinfo | None = None) -> str:
    """A visible marker where events were dropped for this reader."""
    return f"{clock(event.get('ts'), tz)} ── gap: {event.get('missed', '?')} events missed ──"


def handshake_line(event: JSON, tz: tzinfo | None = None) -> str:
    """time client → backend method path status subprotocol latency (or the refusal reason)."""
    status = event.get("status")
    server = event.get("server") or "-"
    head = f"{clock(event.get('ts'), tz)} {clean(event.get('client'), 24)} → {clean(server, 24)}{_routed(event)}"
    request = f"{clean(event.get('method') or '-', 8)} {clean(event.get('path') or '-')}"
    if event.get("error"):
        outcome = f"refused: {clean(event.get('error'), 60)}"
    elif event.get("server") is None and status in UNROUTED:
        outcome = f"{status} {UNROUTED[status]}"
    elif status is None:
        outcome = "no answer"
    elif status == 101:
        sub = event.get("subprotocol")
        outcome = "101" + (f" [{clean(sub, 24)}]" if sub else "")
    else:
        reason = event.get("reason")
        outcome = f"{status}" + (f" {clean(reason, 32)}" if reason else "")
    kind = event.get("kind") or "?"
    return f"{head} {kind} {request} {outcome} {latency(event.get('latency_ms'))}"


def close_line(event: JSON, tz: tzinfo | None = None) -> str:
    """time #conn client ✕ backend after duration, bytes each way, who closed and why."""
    reason = event.get("reason")
    return (
        f"{clock(event.get('ts'), tz)} #{event.get('conn', '?')} "
        f"{clean(event.get('client'), 24)} ✕ {clean(event.get('server') or '-', 24)}{_routed(event)} "
        f"after {duration(event.get('duration_s'))}, in {size(event.get('bytes_in'))} "
        f"out {size(event.get('bytes_out'))}, closed by {event.get('closed_by') or '?'}"
        + (f": {clean(reason, 40)}" if reason else "")
    )


def traffic_line(event: JSON, tz: tzinfo | None = None) -> str | None:
    """The handshake-log line for an event, or None if it does not belong there."""
    kind = event.get("type")
    if kind == "handshake":
        return handshake_line(event, tz)
    if kind == "close":
        return close_line(event, tz)
    if kind == "gap":
        return gap_line(event, tz)
    return None


def event_line(event: JSON, tz: tzinfo | None = None) -> str | None:
    """The events-pane line for a state change, operator action or connect failure."""
    kind = event.get("type")
    ts = clock(event.get("ts"), tz)
    if kind == "state":
        reason = event.get("reason")
        text = f"{ts} {clean(event.get('server'))} {event.get('old')} → {event.get('new')}"
        return text + (f": {clean(reason, 80)}" if reason else "")
    if kind == "operator":
        action = event.get("action")
        result = "ok" if event.get("ok") else ("stopped" if action == "rebalance-stopped" else "FAILED")
        detail = event.get("detail")
        server = event.get("server")
        text = f"{ts} operator {action}{' ' + clean(server) if server else ''}: {result}"
        return text + (f" ({clean(detail, 80)})" if detail else "")
    if kind == "connect_failed":
        return (
            f"{ts} {clean(event.get('server'))} connect failed"
            f" (attempt {event.get('attempt', '?')}, client {clean(event.get('client'), 24)}):"
            f" {clean(event.get('reason'), 60)}"
        )
    if kind == "gap":
        return gap_line(event, tz)
    return None


def action_line(ts: float, action: str, target: str, result: str, tz: tzinfo | None = None) -> str:
    """A dashboard-side record of an operator action and its result."""
    return f"{clock(ts, tz)} you: {action} {clean(target)} → {clean(result, 100)}"
