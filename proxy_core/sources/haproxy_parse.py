"""HAProxy runtime API text -> the control API's `/v1/status` model: pure parsers, no sockets, time passed in.

Read against HAProxy 2.6.12's real answers (tests/unit/data/haproxy/). Server names are `backend/server`, so two
backends may each have an `s1`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

# `show stat typed` line: `S.3.1.17.status.1:SGP:str:UP` (object type, proxy id, server id, field pos, name,
# process; origin/nature/scope; type; value). The value may contain ':' (addresses) so split at most 3 times.
_TYPED = re.compile(r"^([FBSL])\.(\d+)\.(\d+)\.(\d+)\.([a-z0-9_]+)\.\d+$")
# `show sess` line: `0x55b7955efaf0: proto=tcpv4 src=127.0.0.1:44628 fe=fe be=be srv=s1 ts=00 ... age=1s ...`.
_SESS_ID = re.compile(r"^(0x[0-9a-fA-F]+):\s")
_SESS_FIELD = re.compile(r"\b(proto|src|fe|be|srv|age)=(\S+)")
_AGE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
# `show servers state` admin-state bits (src/server.h SRV_ADMF_*): forced/inherited maintenance and drain.
ADMF_MAINT = 0x01 | 0x02 | 0x04 | 0x20  # FMAINT, IMAINT, CMAINT, RMAINT
ADMF_DRAIN = 0x08 | 0x10  # FDRAIN, IDRAIN
# Check statuses that mean the last check passed (management.txt §9.1 check_status).
CHECK_OK = frozenset({"L4OK", "L6OK", "L7OK", "L7OKC"})
# Statuses that mean no check has a result yet.
CHECK_NONE = frozenset({"", "UNK", "INI"})
SERVER_TYPE = "2"


class ParseError(ValueError):
    """The runtime API answered something that is not the expected table (wrong command, old version)."""


def parse_info(text: str) -> dict[str, str]:
    """`show info`: `Key: value` lines."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            info[key.strip()] = value.strip()
    if "Pid" not in info:
        raise ParseError(f"show info: no Pid line in {text[:80]!r}")
    return info


def parse_stat_typed(text: str) -> list[dict[str, str]]:
    """`show stat typed`: one dict of field name -> value per object (frontend, backend, server), in order."""
    objects: dict[tuple[str, str, str], dict[str, str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":", 3)
        match = _TYPED.match(parts[0]) if len(parts) == 4 else None
        if match is None:
            raise ParseError(f"show stat typed: unexpected line {line[:80]!r}")
        kind, px, sv, _pos, name = match.groups()
        row = objects.setdefault((kind, px, sv), {"_kind": kind})
        row[name] = parts[3]
    return list(objects.values())


def parse_servers_state(text: str) -> dict[str, JSON]:
    """`show servers state`: `backend/server` -> admin state bits, weights, address and port."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((line for line in lines if line.startswith("# ")), None)
    if header is None:
        raise ParseError(f"show servers state: no header in {text[:80]!r}")
    names = header[2:].split()
    result: dict[str, JSON] = {}
    for line in lines:
        if line.startswith("#") or line.strip().isdigit():
            continue
        values = line.split()
        if len(values) < len(names):
            raise ParseError(f"show servers state: short line {line[:80]!r}")
        row = dict(zip(names, values, strict=False))
        result[f"{row['be_name']}/{row['srv_name']}"] = {
            "admin_bits": int(row["srv_admin_state"]),
            "op_state": int(row["srv_op_state"]),
            "uweight": int(row["srv_uweight"]),
            "iweight": int(row["srv_iweight"]),
            "addr": row["srv_addr"],
            "port": int(row["srv_port"]) if row.get("srv_port", "-").isdigit() else 0,
        }
    return result


def _age_s(text: str) -> float:
    match = _AGE.match(text)
    if not match or not text:
        return 0.0
    d, h, m, s = (int(x or 0) for x in match.groups())
    return float(((d * 24 + h) * 60 + m) * 60 + s)


def parse_sess(text: str) -> list[JSON]:
    """`show sess`: the client sessions bound to a server (`id` is what `shutdown session` takes)."""
    sessions: list[JSON] = []
    for line in text.splitlines():
        head = _SESS_ID.match(line)
        if head is None:
            continue
        fields = dict(_SESS_FIELD.findall(line))
        srv = fields.get("srv", "<none>")
        if srv.startswith("<") or fields.get("be", "<NONE>").startswith("<"):
            continue  # CLI sessions, or not yet assigned to a server
        sessions.append(
            {
                "id": head.group(1),
                "client": fields.get("src", ""),
                "frontend": fields.get("fe", ""),
                "server": f"{fields['be']}/{srv}",
                "age_s": _age_s(fields.get("age", "")),
            }
        )
    return sessions


def _int(row: dict[str, str], key: str, default: int = 0) -> int:
    try:
        return int(row.get(key, default))
    except ValueError:
        return default


def split_address(addr: str) -> tuple[str, int]:
    """`127.0.0.1:8001` or `[::1]:8001` -> host, port."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def health_of(row: dict[str, str], now: float) -> JSON:
    """The control API's `health` object from a server's check fields (`check_health` is 0..rise+fall-1)."""
    rise, fall = _int(row, "check_rise", 1) or 1, _int(row, "check_fall", 1) or 1
    hp = _int(row, "check_health", rise + fall - 1)
    status_text = row.get("status", "")
    checked = "check_health" in row
    up = hp >= rise if checked else not status_text.startswith("DOWN")
    check = row.get("check_status", "").lstrip("* ")
    result = None if check in CHECK_NONE or not checked else ("ok" if check in CHECK_OK else "fail")
    reason = ", ".join(x for x in (row.get("check_desc", ""), row.get("last_chk", "")) if x) or check
    return {
        "status": "up" if up else "down",
        # Counted like wsproxy (results so far): HAProxy's "UP 2/3" (2 failures left) is "going down 1/3".
        "rise_count": 0 if up else hp,
        "fall_count": (rise + fall - 1 - hp) if up and checked else 0,
        "rise": rise,
        "fall": fall,
        "last_result": result,
        "last_latency_ms": float(_int(row, "check_duration")) if result is not None else None,
        "last_failure": f"{check}: {reason}" if result == "fail" else None,
        "last_check": None,  # HAProxy does not say when the last check ran
        "last_change": now - _int(row, "lastchg") if "lastchg" in row else None,
        "checks": None,
        "failures": _int(row, "chkfail"),
        "check_status": check,
        "check_code": row.get("check_code"),
        "check_desc": row.get("check_desc", ""),
    }


def admin_of(status_text: str, admin_bits: int) -> str:
    """`disabled` (MAINT), `draining` (DRAIN, or NOLB: up but out of load balancing) or `active`."""
    if admin_bits & ADMF_MAINT or status_text.startswith("MAINT"):
        return "disabled"
    if admin_bits & ADMF_DRAIN or status_text.startswith(("DRAIN", "NOLB")):
        return "draining"
    return "active"


def progress_of(health: JSON) -> str:
    if health["status"] == "up" and health["fall_count"]:
        return f"going down {health['fall_count']}/{health['fall']}"
    if health["status"] == "down" and health["rise_count"]:
        return f"going up {health['rise_count']}/{health['rise']}"
    return ""


def eligible(server: JSON) -> bool:
    """Takes new connections: healthy, active and weighted (the same rule as the engine's)."""
    return bool(server["state"] == "up" and int(server["weight"]) > 0)


@dataclass
class Tracked:
    """Drains this process started (HAProxy keeps no drain start time or deadline)."""

    drains: dict[str, JSON] = field(default_factory=dict)


def build_status(
    stats: list[dict[str, str]],
    states: dict[str, JSON],
    sessions: list[JSON],
    info: dict[str, str],
    now: float,
    target: str,
    tracked: Tracked | None = None,
) -> JSON:
    """The `/v1/status` JSON (docs/control-api.md) from one poll of the four commands."""
    tracked = tracked or Tracked()
    per_server: dict[str, int] = {}
    for sess in sessions:
        per_server[sess["server"]] = per_server.get(sess["server"], 0) + 1
    servers: list[JSON] = []
    listeners: list[JSON] = []
    algos: dict[str, str] = {}
    backends: list[dict[str, str]] = []
    for row in stats:
        kind, px = row["_kind"], row.get("pxname", "")
        if kind == "F":
            listeners.append({"address": px, "active": _int(row, "scur"), "total": _int(row, "stot")})
        elif kind == "B":
            algos[px] = row.get("algo", "")
            backends.append(row)
        elif kind == "S" and row.get("type", SERVER_TYPE) == SERVER_TYPE:
            servers.append(_server(row, states, now, tracked))
    for pool in {s["pool"] for s in servers}:
        members = [s for s in servers if s["pool"] == pool]
        total = sum(int(s["weight"]) for s in members if eligible(s))
        for s in members:
            s["share"] = round(int(s["weight"]) / total, 4) if total and eligible(s) else 0.0
    uptime = float(_int(info, "Uptime_sec"))
    return {
        "engine": {
            "kind": "haproxy",
            "version": info.get("Version", "?"),
            "pid": _int(info, "Pid"),
            # Start_time_sec is stable across polls (now - uptime drifts by a second): it is the identity.
            "started": float(_int(info, "Start_time_sec")) or now - uptime,
            "uptime_s": uptime,
            "control": target,
            "balance": ",".join(sorted(set(algos.values()))) or "?",
            "stopping": info.get("Stopping", "0") != "0",
            "node": info.get("node", ""),
        },
        "listeners": listeners,
        "totals": {
            "active": sum(s["active"] for s in servers),
            "total": sum(s["total"] for s in servers),
            "connect_failures": sum(s["connect_failures"] for s in servers),
            "bytes_in": sum(s["bytes_in"] for s in servers),
            "bytes_out": sum(s["bytes_out"] for s in servers),
            "handshakes": 0,
            "dropped_events": 0,
            "last_seq": 0,
        },
        "servers": servers,
        "pools": [pool_of(row, servers) for row in backends],
        "sessions": per_server,
    }


def pool_of(backend: dict[str, str], servers: list[JSON]) -> JSON:
    """A BACKEND row as the control API's POOL: counts from the backend, `up` from its servers' states.

    `balance` is HAProxy's own algorithm name (`roundrobin`, `leastconn`, `source`...), left out when the stats do
    not say; `default_for` is left out because the stats do not say which frontend defaults to which backend.
    """
    name = backend.get("pxname", "")
    members = [s for s in servers if s["pool"] == name]
    pool: JSON = {
        "name": name,
        "servers": len(members),
        "up": sum(1 for s in members if eligible(s)),
        "active": _int(backend, "scur"),
        "total": _int(backend, "stot"),
    }
    if backend.get("algo"):
        pool["balance"] = backend["algo"]
    return pool


def _server(row: dict[str, str], states: dict[str, JSON], now: float, tracked: Tracked) -> JSON:
    name = f"{row['pxname']}/{row['svname']}"
    state = states.get(name, {})
    status_text = row.get("status", "")
    health = health_of(row, now)
    admin = admin_of(status_text, int(state.get("admin_bits", 0)))
    addr = row.get("addr") or f"{state.get('addr', '')}:{state.get('port', 0)}"
    host, port = split_address(addr)
    drain = tracked.drains.get(name) if admin == "draining" else None
    return {
        "name": name,
        "pool": row["pxname"],
        "address": addr,
        "host": host,
        "port": port,
        "state": admin if admin != "active" else health["status"],
        "admin": admin,
        "progress": progress_of(health),
        "health": health,
        "haproxy_status": status_text,
        "weight": _int(row, "weight"),
        "uweight": _int(row, "uweight", int(state.get("uweight", 0))),
        "max_conns": _int(row, "slim") or None,
        "share": 0.0,
        "active": _int(row, "scur"),
        "total": _int(row, "stot"),
        "connect_failures": _int(row, "econ"),
        "bytes_in": _int(row, "bin"),
        "bytes_out": _int(row, "bout"),
        "handshakes": 0,
        "rate": _int(row, "rate"),
        "drain": drain,
    }


def state_events(old: JSON | None, new: JSON, now: float) -> list[JSON]:
    """`state` events for every server whose effective state changed between two polls, with the check's reason;
    servers that appeared or vanished (add/del server by anyone) become `operator` events."""
    if old is None:
        return []
    before = {s["name"]: s for s in old.get("servers", [])}
    after = {s["name"]: s for s in new.get("servers", [])}
    events: list[JSON] = []
    for name, server in after.items():
        prev = before.get(name)
        if prev is None:
            events.append(_operator(now, "add", name, f"{server['address']} appeared"))
        elif prev["state"] != server["state"]:
            events.append(
                {
                    "type": "state",
                    "ts": now,
                    "server": name,
                    "old": prev["state"],
                    "new": server["state"],
                    "reason": reason_of(prev, server),
                }
            )
    for name in before.keys() - after.keys():
        events.append(_operator(now, "remove", name, "no longer listed"))
    return events


def reason_of(prev: JSON, server: JSON) -> str:
    """Why a state changed: the admin state if that moved, else the check's description."""
    if prev["admin"] != server["admin"]:
        return f"HAProxy status {server['haproxy_status'] or server['admin']}"
    health = server["health"]
    desc = health.get("check_desc") or health.get("check_status") or "check"
    code = f" ({health['check_status']})" if health.get("check_status") else ""
    return f"{desc}{code}"


def _operator(now: float, action: str, name: str, detail: str) -> JSON:
    return {"type": "operator", "ts": now, "action": action, "server": name, "ok": True, "detail": detail}
