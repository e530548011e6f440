"""Write tests/tui/data/synthetic.jsonl: a seeded, engine-shaped minute of traffic for clock-free tests.

Run: .venv/bin/python tests/tui/make_script.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

JSON = dict[str, Any]
START = 1764160000.0
SECONDS = 60
OUT = Path(__file__).parent / "data" / "synthetic.jsonl"
LISTENER = "127.0.0.1:8000"
CLIENTS = 40  # distinct client addresses: previews and rebalance plans count clients, not connections
CHECK = {"type": "websocket", "path": "/ws", "interval_ms": 1000, "rise": 2, "fall": 3}


def make() -> list[JSON]:
    """Simulate four backends, churning WebSocket clients, and b4 dying at t=15."""
    rng = random.Random(7)
    weights = {"b1": 1, "b2": 2, "b3": 1, "b4": 1}
    servers: dict[str, JSON] = {}
    for i, name in enumerate(weights, start=1):
        servers[name] = {
            "name": name,
            "address": f"127.0.0.1:{9000 + i}",
            "host": "127.0.0.1",
            "port": 9000 + i,
            "admin": "active",
            "health": {
                "status": "up",
                "rise_count": 0,
                "fall_count": 0,
                "rise": 2,
                "fall": 3,
                "last_result": "ok",
                "last_latency_ms": 0.4,
                "last_failure": None,
                "last_check": START,
                "last_change": START,
                "checks": 1,
                "failures": 0,
            },
            "weight": weights[name],
            "max_conns": None,
            "active": 0,
            "total": 0,
            "connect_failures": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "handshakes": 0,
            "drain": None,
        }
    history: dict[str, list[JSON]] = {
        n: [{"ts": START, "from": "down", "to": "up", "reason": "2 consecutive successes"}] for n in servers
    }
    frames: list[JSON] = [{"start": START}]
    open_conns: dict[int, JSON] = {}
    conn_id = 0
    rr: list[str] = []
    rates: JSON = {
        "total": {k: [] for k in ("active", "connections", "handshakes", "bytes")},
        "servers": {n: {k: [] for k in ("active", "connections", "handshakes", "bytes")} for n in servers},
    }
    hs_total = 0
    for sec in range(SECONDS + 1):
        now = START + sec
        per_new = dict.fromkeys(servers, 0)
        per_bytes = dict.fromkeys(servers, 0)
        # health checks: b4 fails from t=15 and is down at t=17; b3 misses one check at t=60
        for name, server in servers.items():
            h = server["health"]
            h["checks"] += 1
            h["last_check"] = now
            failing = (name == "b4" and sec >= 15) or (name == "b3" and sec == SECONDS)
            if failing:
                h["failures"] += 1
                h["last_result"] = "fail"
                reason = "connection refused" if name == "b4" else "timeout after 1000 ms"
                h["last_failure"] = reason
                h["last_latency_ms"] = None
                if h["status"] == "up":
                    h["fall_count"] += 1
                    if h["fall_count"] >= h["fall"]:
                        h.update(status="down", fall_count=0, last_change=now)
                        why = f"3 consecutive failures: {reason}"
                        history[name].append({"ts": now, "from": "up", "to": "down", "reason": why})
                        frames.append(
                            {
                                "t": sec,
                                "event": {
                                    "type": "state",
                                    "ts": now,
                                    "server": name,
                                    "old": "up",
                                    "new": "down",
                                    "reason": why,
                                },
                            }
                        )
                        for cid, c in list(open_conns.items()):
                            if c["server"] == name:
                                frames.append({"t": sec, "event": close_event(c, now, "server", "backend reset")})
                                del open_conns[cid]
            else:
                h.update(last_result="ok", last_latency_ms=round(rng.uniform(0.2, 1.5), 2), fall_count=0)
        eligible = [n for n, s in servers.items() if s["health"]["status"] == "up"]
        rr = [n for n in eligible for _ in range(weights[n])] or rr
        for k in range(rng.randint(1, 4)):
            ts = now + k * 0.2
            conn_id += 1
            # Each client from its own loopback address (as a browser fleet would be), some with two connections.
            client = f"127.0.0.{10 + conn_id % CLIENTS}:{40000 + conn_id * 7 % 20000}"
            roll = rng.random()
            if roll < 0.08:
                frames.append(
                    {
                        "t": sec,
                        "event": handshake(
                            conn_id, ts, client, None, "GET", "/admin", 403, "Forbidden", None, 0.3, None, "websocket"
                        ),
                    }
                )
                hs_total += 1
                continue
            name = rr[conn_id % len(rr)]
            if roll < 0.16:
                frames.append(
                    {
                        "t": sec,
                        "event": handshake(conn_id, ts, client, name, "GET", "/", 200, "OK", None, 0.6, None, "http"),
                    }
                )
                hs_total += 1
                continue
            latency = round(rng.uniform(0.3, 3.0), 2)
            sub = "chat.v1" if rng.random() < 0.5 else None
            frames.append(
                {
                    "t": sec,
                    "event": handshake(
                        conn_id,
                        ts,
                        client,
                        name,
                        "GET",
                        "/ws",
                        101,
                        "Switching Protocols",
                        sub,
                        latency,
                        None,
                        "websocket",
                    ),
                }
            )
            hs_total += 1
            servers[name]["handshakes"] += 1
            servers[name]["total"] += 1
            per_new[name] += 1
            open_conns[conn_id] = {
                "id": conn_id,
                "client": client,
                "server": name,
                "listener": LISTENER,
                "started": ts,
                "life": rng.randint(4, 45),
                "bytes_in": 0,
                "bytes_out": 0,
                "kind": "websocket",
                "path": "/ws",
            }
        for cid, c in list(open_conns.items()):
            got = rng.randint(20, 400)
            c["bytes_in"] += got
            c["bytes_out"] += got + 4
            per_bytes[c["server"]] += 2 * got + 4
            servers[c["server"]]["bytes_in"] += got
            servers[c["server"]]["bytes_out"] += got + 4
            if now - c["started"] >= c["life"]:
                frames.append({"t": sec, "event": close_event(c, now, "client", "1000 normal")})
                del open_conns[cid]
        for name, server in servers.items():
            server["active"] = sum(1 for c in open_conns.values() if c["server"] == name)
            r = rates["servers"][name]
            r["active"].append(server["active"])
            r["connections"].append(per_new[name])
            r["handshakes"].append(per_new[name])
            r["bytes"].append(per_bytes[name])
        t = rates["total"]
        t["active"].append(len(open_conns))
        t["connections"].append(sum(per_new.values()))
        t["handshakes"].append(sum(per_new.values()))
        t["bytes"].append(sum(per_bytes.values()))
        frames.append({"t": sec, "status": status(servers, open_conns, now, hs_total)})
        if sec % 10 == 0:
            frames.append({"t": sec, "rates": {"interval_s": 1.0, "end": now, **json.loads(json.dumps(rates))}})
    for name in servers:
        conns = [
            {k: v for k, v in c.items() if k != "life"} | {"age_s": round(START + SECONDS - c["started"], 1)}
            for c in open_conns.values()
            if c["server"] == name
        ]
        frames.append({"t": SECONDS, "detail": {"name": name, "history": history[name], "connections": conns}})
    return frames


def handshake(
    conn: int,
    ts: float,
    client: str,
    server: str | None,
    method: str,
    path: str,
    status: int | None,
    reason: str | None,
    sub: str | None,
    latency: float,
    error: str | None,
    kind: str,
) -> JSON:
    """An engine-shaped handshake event."""
    return {
        "type": "handshake",
        "ts": ts,
        "conn": conn,
        "client": client,
        "listener": LISTENER,
        "server": server,
        "kind": kind,
        "method": method,
        "path": path,
        "host": "127.0.0.1:8000",
        "origin": None,
        "user_agent": "demo-load/1",
        "ws_version": "13" if kind == "websocket" else None,
        "ws_protocol": sub,
        "ws_extensions": None,
        "status": status,
        "reason": reason,
        "subprotocol": sub,
        "latency_ms": latency,
        "error": error,
    }


def close_event(c: JSON, now: float, by: str, reason: str) -> JSON:
    """An engine-shaped close event."""
    return {
        "type": "close",
        "ts": now,
        "conn": c["id"],
        "client": c["client"],
        "server": c["server"],
        "duration_s": round(now - c["started"], 1),
        "bytes_in": c["bytes_in"],
        "bytes_out": c["bytes_out"],
        "closed_by": by,
        "reason": reason,
    }


def status(servers: dict[str, JSON], open_conns: dict[int, JSON], now: float, hs: int) -> JSON:
    """An engine-shaped `GET /v1/status` answer."""
    eligible = [s for s in servers.values() if s["health"]["status"] == "up"]
    total_w = sum(s["weight"] for s in eligible)
    out = []
    for s in servers.values():
        up = s["health"]["status"] == "up"
        out.append(
            {**json.loads(json.dumps(s)), "state": s["health"]["status"], "share": s["weight"] / total_w if up else 0.0}
        )
    return {
        "engine": {
            "version": "0.1.0",
            "pid": 4242,
            "started": START - 5,
            "uptime_s": now - START + 5,
            "control": "/run/user/0/wsproxy/control.sock",
            "balance": "round_robin",
            "check": {**CHECK, "timeout_ms": 1000},
        },
        "listeners": [
            {"address": LISTENER, "active": len(open_conns), "total": sum(s["total"] for s in servers.values())}
        ],
        "totals": {
            "active": len(open_conns),
            "total": sum(s["total"] for s in servers.values()),
            "connect_failures": 0,
            "bytes_in": sum(s["bytes_in"] for s in servers.values()),
            "bytes_out": sum(s["bytes_out"] for s in servers.values()),
            "handshakes": hs,
            "dropped_events": 0,
        },
        "servers": out,
    }


def main() -> None:
    """Write the script file."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as f:
        for frame in make():
            f.write(json.dumps(frame, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
