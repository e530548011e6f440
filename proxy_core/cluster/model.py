"""The fleet's data model, pure: changes, the desired-state document, stream ids and the fleet view.

A change is one operator action on one pool, encoded as JSON in a Redis Stream entry; every instance applies
the entries in stream order, so the stream is the order of concurrent changes. The document is the fold of
the stream (the snapshot a new or long-gone instance starts from), versioned by the last entry folded in.
Live views are what each instance publishes of itself; the fleet view sums them. No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from proxy_core.errors import BadRequest

DEFAULT_POOL = "default"  # one pool per engine today; pools (issue 15) add more names
OPS = ("reset", "add", "drain", "undrain", "disable", "enable", "weight", "remove", "rebalance", "rebalance_stop")
DOC_VERSION = 1


def parse_id(entry_id: str | None) -> tuple[int, int]:
    """A stream id `ms-seq` as a comparable pair; None (nothing applied) sorts first."""
    if not entry_id:
        return (0, 0)
    ms, _, seq = entry_id.partition("-")
    try:
        return (int(ms), int(seq or 0))
    except ValueError:
        return (0, 0)


def applied_at_least(applied: str | None, target: str) -> bool:
    return parse_id(applied) >= parse_id(target)


def encode_change(op: str, name: str | None, origin: str, **fields: Any) -> str:
    """One stream entry's payload; `at` is the wall-clock instant it was made (drain deadlines are absolute)."""
    if op not in OPS:
        raise ValueError(f"unknown change {op!r}")
    return json.dumps({"op": op, "pool": DEFAULT_POOL, "name": name, "origin": origin, **fields}, sort_keys=True)


def decode_change(raw: str | bytes) -> dict[str, Any] | None:
    """A stream entry's payload, or None for one this version cannot apply (skipped, and said so)."""
    try:
        change = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(change, dict) or change.get("op") not in OPS:
        return None
    return change


def redact_url(url: str) -> str:
    """The store's URL without a password: what logs, status and errors may show."""
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_url(url: str) -> str:
    """`redis://HOST:PORT/DB` or `rediss://...`; raises BadRequest naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise BadRequest(f"cluster store {redact_url(url)!r}: expected redis://HOST:PORT/DB or rediss://HOST:PORT/DB")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise BadRequest(f"cluster store {redact_url(url)!r}: the database after / must be a number")
    return url


# -- the fleet view -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One instance as the fleet sees it: its last live view, or only its last heartbeat once gone."""

    name: str
    alive: bool
    heartbeat: float
    view: Mapping[str, Any]


def instance_rows(seen: Mapping[str, float], views: Mapping[str, Mapping[str, Any]]) -> list[InstanceRow]:
    """Every instance ever seen, alive when its TTL key still exists, sorted by name."""
    rows = []
    for name in sorted(set(seen) | set(views)):
        view = views.get(name)
        heartbeat = float(view.get("heartbeat", 0.0)) if view else float(seen.get(name, 0.0))
        rows.append(InstanceRow(name, view is not None, heartbeat, view or {}))
    return rows


def fleet_view(rows: Iterable[InstanceRow], now: float) -> dict[str, Any]:
    """Per-server fleet totals with a per-instance breakdown, instances, and the warnings an operator needs."""
    rows = list(rows)
    servers: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for row in rows:
        if not row.alive:
            ago = now - row.heartbeat if row.heartbeat else None
            since = f" (last heartbeat {ago:.1f} s ago)" if ago is not None else ""
            warnings.append(f"instance {row.name} is gone{since}: left out of the totals")
            continue
        for server in row.view.get("servers", []):
            entry = servers.setdefault(
                server["name"], {"name": server["name"], "active": 0, "total": 0, "instances": {}, "health": {}}
            )
            entry["active"] += int(server.get("active", 0))
            entry["total"] += int(server.get("total", 0))
            entry["instances"][row.name] = int(server.get("active", 0))
            entry["health"][row.name] = server.get("health", "unknown")
            entry.setdefault("state", server.get("state"))
    for entry in servers.values():
        seen = set(entry["health"].values())
        entry["health_disagrees"] = len(seen) > 1
        if entry["health_disagrees"]:
            views = ", ".join(f"{i} sees {h}" for i, h in sorted(entry["health"].items()))
            warnings.append(f"health of {entry['name']} disagrees ({views}): a partition looks like this")
    applied = {row.name: row.view.get("applied") for row in rows if row.alive}
    return {
        "instances": [instance_dict(row, now) for row in rows],
        "servers": [servers[name] for name in sorted(servers)],
        "applied": applied,
        "warnings": warnings,
    }


def instance_dict(row: InstanceRow, now: float) -> dict[str, Any]:
    view = row.view
    return {
        "name": row.name,
        "alive": row.alive,
        "heartbeat": row.heartbeat,
        "heartbeat_age_s": round(now - row.heartbeat, 3) if row.heartbeat else None,
        "applied": view.get("applied"),
        "active": view.get("active"),
        "workers": view.get("workers"),
        "listen": view.get("listen"),
        "pid": view.get("pid"),
        "local_overrides": view.get("local_overrides", []),
        "rebalance": view.get("rebalance"),
    }


def holders(fleet: Mapping[str, Any], name: str) -> dict[str, int]:
    """The live instances still holding connections to server `name`, with their counts."""
    for server in fleet.get("servers", []):
        if server["name"] == name:
            return {i: n for i, n in sorted(server["instances"].items()) if n}
    return {}


def all_applied(fleet: Mapping[str, Any], target: str) -> list[str]:
    """The live instances that have not applied `target` yet (empty: every live instance has)."""
    return sorted(i for i, applied in fleet.get("applied", {}).items() if not applied_at_least(applied, target))
