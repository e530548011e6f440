"""Impact previews and rebalances for the scripted pool, answered by the engine's own pure planner.

The scripted source must answer `?dry_run=true` and `POST /v1/rebalance` the way an engine would, on a fake
clock: the planner and the impact arithmetic are `proxy_core.rebalance` itself, fed the script's connections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from proxy_core.balancer import IpHash
from proxy_core.client import ControlError
from proxy_core.rebalance import MIN_AGE_S, Candidate, Placed, Plan, Target, default_rate, impact, plan
from proxy_core.spread import client_key

JSON = dict[str, Any]


@dataclass(frozen=True)
class _Pick:
    """What the hash ring needs of a server."""

    name: str
    weight: int
    active: int


def eligible(server: JSON) -> bool:
    """Takes new connections: active admin, health up, weight above 0."""
    return bool(
        server.get("admin", "active") == "active" and server["health"]["status"] == "up" and int(server["weight"]) > 0
    )


def connections(details: dict[str, JSON], name: str) -> list[JSON]:
    """The scripted connections open on one server."""
    conns: list[JSON] = details.get(name, {}).get("connections", [])
    return conns


def preview(servers: list[JSON], details: dict[str, JSON], action: str, name: str, weight: int | None) -> JSON:
    """The `?dry_run=true` answer for drain, disable, weight or remove of `name` (validation is the caller's)."""
    moved: dict[str, list[str]] = {}
    if action in ("drain", "disable", "remove"):
        moved[name] = [client_key(c.get("client")) for c in connections(details, name)]
    after = []
    for server in servers:
        if server["name"] == name and action == "remove":
            continue
        ok, w = eligible(server), int(server["weight"])
        if server["name"] == name:
            if action == "weight":
                w = int(weight or 0)
                ok = server.get("admin", "active") == "active" and server["health"]["status"] == "up" and w > 0
            else:
                ok = False
        after.append(Candidate(server["name"], w, ok))
    return {"dry_run": True, "action": action, "server": name, "impact": impact(moved, after)}


def make_plan(servers: list[JSON], details: dict[str, JSON], policy: str, now: float) -> Plan:
    """Which clients are on the wrong server now, as the engine's planner says."""
    targets = [Target(s["name"], int(s["weight"]), s.get("max_conns")) for s in servers if eligible(s)]
    placed = [
        Placed(int(c["id"]), client_key(c.get("client")), t.name, now - float(c.get("started") or now))
        for t in targets
        for c in connections(details, t.name)
    ]
    ring = IpHash()
    picks = [_Pick(t.name, t.weight, 0) for t in targets]

    def hash_pick(client: str) -> str | None:
        chosen = ring.pick(picks, client)
        return chosen.name if chosen is not None else None

    return plan(policy, placed, targets, hash_pick, MIN_AGE_S)


def dry_run(servers: list[JSON], details: dict[str, JSON], policy: str, now: float) -> JSON:
    """The `POST /v1/rebalance?dry_run=true` answer."""
    result = make_plan(servers, details, policy, now)
    moved: dict[str, list[str]] = {}
    for move in result.moves:
        moved.setdefault(move.source, []).extend([move.client] * len(move.conn_ids))
    after = [Candidate(s["name"], int(s["weight"]), eligible(s)) for s in servers]
    return {"dry_run": True, "plan": result.to_dict(), "impact": impact(moved, after)}


class SimRebalance:
    """A rebalance on the fake clock: moves planned clients at `rate` a second, like the engine's runner."""

    def __init__(self, first: Plan, rate: float | None, clients: int, servers: int, now: float) -> None:
        self.plan = first
        self.rate = rate if rate is not None else default_rate(clients, servers)
        self.state: JSON = {
            "state": "running",
            "reason": f"moving {first.clients} client(s) at {self.rate:g}/s",
            "started": now,
            "finished": None,
            "rate": self.rate,
            "planned_clients": first.clients,
            "moved_clients": 0,
            "left_clients": first.clients,
            "moved_connections": 0,
            "rounds": 1,
        }

    @property
    def running(self) -> bool:
        """Still moving clients."""
        return bool(self.state["state"] == "running")

    def due(self, now: float) -> int:
        """How many clients should have been moved by `now` at the rate (the engine's budget per second)."""
        elapsed = now - float(self.state["started"])
        return min(self.plan.clients, math.floor(elapsed * self.rate + 1e-9))

    def end(self, state: str, reason: str, now: float) -> JSON:
        """Stop or finish; the operator event the engine would publish."""
        self.state.update(state=state, reason=reason, finished=now)
        action = "rebalance-done" if state == "done" else "rebalance-stopped"
        moved, conns = self.state["moved_clients"], self.state["moved_connections"]
        detail = f"{reason}; moved {moved} client(s), {conns} connection(s)"
        return {"type": "operator", "action": action, "server": None, "ok": state == "done", "detail": detail}


def refuse_start(current: SimRebalance | None, servers: list[JSON]) -> None:
    """The engine's refusals of `POST /v1/rebalance`."""
    if current is not None and current.running:
        raise ControlError(409, "conflict", "a rebalance is already running; stop it first (DELETE /v1/rebalance)")
    if not any(eligible(s) for s in servers):
        raise ControlError(409, "conflict", "no eligible server to rebalance onto")
