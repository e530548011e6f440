"""Pure formatting of sizes, durations, shares and server states, so widgets stay dumb and testable."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

JSON = dict[str, Any]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
# Client-sent text (paths, user agents) shown longer than this is cut: one log line per handshake.
MAX_FIELD_CHARS = 48


def size(n: float | None) -> str:
    """Bytes as a short binary-unit string: 0 B, 999 B, 1.5 KiB, 12 MiB."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if abs(value) < 10 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float | None) -> str:
    """A duration at the precision an operator needs: 0.4s, 12s, 3m05s, 2h10m, 3d04h."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f}s"
    whole = int(s)
    if whole < 60:
        return f"{whole}s"
    minutes, sec = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def latency(ms: float | None) -> str:
    """Milliseconds with sensible precision: 0.42ms, 12ms, 1.2s."""
    if ms is None:
        return "-"
    if ms < 10:
        return f"{ms:.2f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.1f}s"


def percent(fraction: float | None) -> str:
    """A traffic share as a percentage; an ineligible server (share 0) shows a dash."""
    if not fraction:
        return "-"
    return f"{fraction * 100:.1f}%"


def clock(ts: float | None, tz: tzinfo | None = None) -> str:
    """Wall-clock HH:MM:SS of a unix time (local zone unless a zone is given)."""
    if ts is None:
        return "--:--:--"
    return datetime.fromtimestamp(ts, tz).strftime("%H:%M:%S")


def clean(text: object, limit: int = MAX_FIELD_CHARS) -> str:
    """Escape control characters in text a client sent, and cut it to one short field."""
    if text is None:
        return "-"
    raw = str(text)
    out = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in raw)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def eligible(server: JSON) -> bool:
    """A server takes new connections: active admin state, health up and a positive weight."""
    health = server.get("health") or {}
    return server.get("admin") == "active" and health.get("status") == "up" and int(server.get("weight") or 0) > 0


def share_with_weight(servers: list[JSON], name: str, weight: int) -> float:
    """The share `name` would get with `weight`, the others unchanged (the weight modal's preview)."""
    total = 0
    target: JSON | None = None
    for server in servers:
        if server.get("name") == name:
            target = server
            continue
        if eligible(server):
            total += int(server.get("weight") or 0)
    if target is None or weight <= 0 or not eligible({**target, "weight": weight}):
        return 0.0
    return weight / (total + weight)


def state_kind(server: JSON) -> str:
    """The state family used for colour: up, down, going-down, going-up, draining, drained, disabled."""
    admin = server.get("admin")
    health = server.get("health") or {}
    if admin == "disabled":
        return "disabled"
    if admin == "draining":
        return "drained" if int(server.get("active") or 0) == 0 else "draining"
    if health.get("status") == "up":
        return "going-down" if int(health.get("fall_count") or 0) > 0 else "up"
    return "going-up" if int(health.get("rise_count") or 0) > 0 else "down"


def state_label(server: JSON, now: float) -> str:
    """The state column: `up`, `going down 2/5`, `going up 1/2`, `draining 0:12 / 18s left`."""
    kind = state_kind(server)
    health = server.get("health") or {}
    if kind == "going-down":
        return f"going down {health.get('fall_count', 0)}/{health.get('fall', '?')}"
    if kind == "going-up":
        return f"going up {health.get('rise_count', 0)}/{health.get('rise', '?')}"
    if kind in ("draining", "drained"):
        drain = server.get("drain") or {}
        started = drain.get("started")
        label = "drained, safe to restart" if kind == "drained" else "draining"
        if started is not None and kind == "draining":
            label += f" {duration(now - float(started))}"
            deadline = drain.get("deadline")
            if deadline is not None:
                label += f", {duration(float(deadline) - now)} left"
        return label
    return kind


def drain_progress(server: JSON) -> str:
    """Connections left of those open when the drain began: `7/12`."""
    drain = server.get("drain") or {}
    start = drain.get("active_at_start")
    active = int(server.get("active") or 0)
    return f"{active}/{start}" if start is not None else str(active)


def check_summary(server: JSON) -> str:
    """Last check in one cell: latency when it passed, the reason when it failed."""
    health = server.get("health") or {}
    result = health.get("last_result")
    if result is None:
        return "not checked"
    if result == "ok":
        return f"ok {latency(health.get('last_latency_ms'))}"
    return f"fail: {clean(health.get('last_failure') or 'unknown', 32)}"
