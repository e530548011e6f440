"""A pure in-memory pool that answers mutations like the engine does, so scripted runs can be steered."""

from __future__ import annotations

import copy
import math
import re
from typing import Any

from proxy_core.client import ControlError
from proxy_core.spread import client_key
from tui import sim_rebalance as sim

JSON = dict[str, Any]

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ADDRESS_RE = re.compile(r"^(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})$")
MAX_WEIGHT = 256
# A simulated drain empties in about this many seconds of fake time.
DRAIN_SIM_S = 8.0
# Why a rebalance stops when the fleet changes under it (the engine's words).
CHANGED = "a server changed state or weight during the rebalance"


def _health(status: str, rise: int, fall: int) -> JSON:
    return {
        "status": status,
        "rise_count": 0,
        "fall_count": 0,
        "rise": rise,
        "fall": fall,
        "last_result": None,
        "last_latency_ms": None,
        "last_failure": None,
        "last_check": None,
        "last_change": None,
        "checks": 0,
        "failures": 0,
    }


class PoolModel:
    """Servers, shares, totals and detail data; every mutation validates first and emits events."""

    def __init__(self, status: JSON, details: dict[str, JSON] | None = None) -> None:
        self.status: JSON = copy.deepcopy(status)
        self.details: dict[str, JSON] = copy.deepcopy(details or {})
        self.rebalance: sim.SimRebalance | None = None
        #: The fake clock's unix time, kept current by the scripted source (mutations other than drain get no `now`).
        self.clock = 0.0
        self.recompute()

    # Views

    @property
    def servers(self) -> list[JSON]:
        """The server list of the current snapshot."""
        servers: list[JSON] = self.status.setdefault("servers", [])
        return servers

    def find(self, name: str) -> JSON:
        """The server called `name`, or the engine's 404."""
        for server in self.servers:
            if server["name"] == name:
                return server
        raise ControlError(404, "not_found", f"no server named {name!r}")

    def detail(self, name: str) -> JSON:
        """The `GET /v1/servers/{name}` answer: server plus history and connections."""
        server = self.find(name)
        extra = self.details.get(name, {})
        return {
            **copy.deepcopy(server),
            "history": copy.deepcopy(extra.get("history", [])),
            "connections": copy.deepcopy(extra.get("connections", [])),
        }

    def recompute(self) -> None:
        """Recompute shares (within each pool), effective states and totals as the engine would."""
        for server in self.servers:
            admin = server.get("admin", "active")
            server["state"] = admin if admin != "active" else server["health"]["status"]
        for pool in {s.get("pool") for s in self.servers}:
            eligible = [s for s in self.servers if s.get("pool") == pool and _eligible(s)]
            total_weight = sum(int(s["weight"]) for s in eligible)
            for server in (s for s in self.servers if s.get("pool") == pool):
                share = int(server["weight"]) / total_weight if server in eligible and total_weight else 0.0
                server["share"] = share
        totals = self.status.setdefault("totals", {})
        totals["active"] = sum(int(s.get("active") or 0) for s in self.servers)
        for pool in self.status.get("pools") or []:
            members = [s for s in self.servers if s.get("pool") == pool.get("name")]
            pool["servers"] = len(members)
            pool["up"] = sum(1 for s in members if _eligible(s))
            pool["active"] = sum(int(s.get("active") or 0) for s in members)

    def _pool_named(self, pool: str | None) -> str | None:
        """The pool an add joins: the one named, else the only one; several and none named is the engine's 400."""
        names = [str(p["name"]) for p in self.status.get("pools") or []]
        if pool is not None:
            if names and pool not in names:
                raise ControlError(404, "not_found", f"no pool named {pool!r}")
            return pool
        if len(names) > 1:
            raise ControlError(400, "bad_request", f"name the pool (pools: {', '.join(names)})")
        return names[0] if names else None

    # Mutations: each returns (answer, events without seq/ts, filled in by the caller)

    def add(
        self, name: str, address: str, weight: int, max_conns: int | None, pool: str | None = None
    ) -> tuple[JSON, list[JSON]]:
        """Add a server after the engine's own checks (name, address, weight, duplicate); with several pools it is
        named POOL/NAME, like the engine names it."""
        if not NAME_RE.match(name):
            raise ControlError(400, "bad_name", "name must match [A-Za-z0-9_.-]{1,64}")
        match = ADDRESS_RE.match(address)
        if not match or not 0 < int(match["port"]) < 65536:
            raise ControlError(400, "bad_address", f"address must be HOST:PORT, got {address!r}")
        _check_weight(weight)
        home = self._pool_named(pool)
        if home is not None and len(self.status.get("pools") or []) > 1:
            name = f"{home}/{name}"
        if any(s["name"] == name for s in self.servers):
            raise ControlError(409, "duplicate", f"a server named {name!r} already exists")
        check = self.status.get("engine", {}).get("check", {})
        server: JSON = {
            "name": name,
            "address": address,
            "host": match["host"],
            "port": int(match["port"]),
            "state": "down",
            "admin": "active",
            "health": _health("down", int(check.get("rise", 2)), int(check.get("fall", 5))),
            "weight": weight,
            "max_conns": max_conns,
            "share": 0.0,
            "active": 0,
            "total": 0,
            "connect_failures": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "handshakes": 0,
            "drain": None,
        }
        if home is not None:
            server["pool"] = home
        self.servers.append(server)
        self.recompute()
        events = [_op("add", name, True, address), *self._interrupt(CHANGED, self.clock)]
        return copy.deepcopy(server), events

    def drain(self, name: str, deadline_s: float | None, now: float, force: bool = False) -> tuple[JSON, list[JSON]]:
        """Start draining: remember when and how many connections were open."""
        server = self.find(name)
        if server["admin"] == "disabled":
            raise ControlError(409, "conflict", f"{name} is disabled; enable it before draining")
        self._refuse_if_last(server, f"drain {name}", force)
        old = server["state"]
        server["admin"] = "draining"
        server["drain"] = {
            "started": now,
            "deadline": None if deadline_s is None else now + deadline_s,
            "active_at_start": int(server.get("active") or 0),
        }
        return self._changed(server, old, "drain", "operator drain")

    def undrain(self, name: str) -> tuple[JSON, list[JSON]]:
        """Stop draining."""
        server = self.find(name)
        old = server["state"]
        if server["admin"] == "draining":
            server["admin"] = "active"
        server["drain"] = None
        return self._changed(server, old, "undrain", "operator undrain")

    def disable(self, name: str, force: bool = False) -> tuple[JSON, list[JSON]]:
        """Maintenance."""
        server = self.find(name)
        self._refuse_if_last(server, f"disable {name}", force)
        old = server["state"]
        server["admin"], server["drain"] = "disabled", None
        return self._changed(server, old, "disable", "operator disable")

    def enable(self, name: str) -> tuple[JSON, list[JSON]]:
        """Back from maintenance."""
        server = self.find(name)
        old = server["state"]
        server["admin"], server["drain"] = "active", None
        return self._changed(server, old, "enable", "operator enable")

    def set_weight(self, name: str, weight: int, force: bool = False) -> tuple[JSON, list[JSON]]:
        """Absolute weight."""
        _check_weight(weight)
        server = self.find(name)
        if weight == 0:
            self._refuse_if_last(server, f"weight 0 on {name}", force)
        old = server["state"]
        server["weight"] = weight
        return self._changed(server, old, "weight", f"weight {weight}")

    def remove(self, name: str, force: bool) -> tuple[JSON, list[JSON]]:
        """Remove, refusing with 409 when no eligible server would remain."""
        server = self.find(name)
        self._refuse_if_last(server, f"remove {name}", force)
        self.servers.remove(server)
        self.details.pop(name, None)
        self.recompute()
        events = [_op("remove", name, True, "forced" if force else None), *self._interrupt(CHANGED, self.clock)]
        return {"removed": name}, events

    def close_connection(self, conn_id: int) -> tuple[JSON, list[JSON]]:
        """Close one connection listed in a server's detail."""
        for name, extra in self.details.items():
            conns = extra.get("connections", [])
            for conn in conns:
                if conn["id"] == conn_id:
                    conns.remove(conn)
                    server = self.find(name)
                    server["active"] = max(0, int(server["active"]) - 1)
                    self.recompute()
                    return {"closed": conn_id}, [_op("close", name, True, f"connection {conn_id}")]
        raise ControlError(404, "not_found", f"no connection {conn_id}")

    # Impact previews and rebalance (tui.sim_rebalance answers with the engine's planner)

    def preview(self, action: str, name: str, weight: int | None, force: bool = False) -> JSON:
        """`?dry_run=true`: the engine's refusals first, then what the action would move."""
        server = self.find(name)
        if action == "drain" and server["admin"] == "disabled":
            raise ControlError(409, "conflict", f"{name} is disabled; enable it before draining")
        if action == "weight":
            _check_weight(weight if weight is not None else -1)
        if action != "weight" or weight == 0:
            what = f"weight 0 on {name}" if action == "weight" else f"{action} {name}"
            self._refuse_if_last(server, what, force)
        siblings = [s for s in self.servers if s.get("pool") == server.get("pool")]
        return sim.preview(siblings, self.details, action, name, weight)

    def rebalance_plan(self, now: float) -> JSON:
        """`POST /v1/rebalance?dry_run=true`."""
        return sim.dry_run(self.servers, self.details, self._policy(), now)

    def start_rebalance(self, rate: float | None, now: float) -> tuple[JSON, list[JSON]]:
        """Start moving the clients on the wrong server; done at once when there are none."""
        sim.refuse_start(self.rebalance, self.servers)
        first = sim.make_plan(self.servers, self.details, self._policy(), now)
        eligible = [s for s in self.servers if _eligible(s)]
        clients = {client_key(c.get("client")) for s in eligible for c in sim.connections(self.details, s["name"])}
        self.rebalance = sim.SimRebalance(first, rate, len(clients), len(eligible), now)
        events = [_op("rebalance", None, True, self.rebalance.state["reason"])]
        if not first.moves:
            events.append(self.rebalance.end("done", "balanced: no client is on the wrong server", now))
        self.status["rebalance"] = copy.deepcopy(self.rebalance.state)
        return {"rebalance": copy.deepcopy(self.rebalance.state)}, events

    def stop_rebalance(self, now: float) -> tuple[JSON, list[JSON]]:
        """`DELETE /v1/rebalance`."""
        events = self._interrupt("stopped by operator", now)
        return {"rebalance": copy.deepcopy(self.status.get("rebalance"))}, events

    def _policy(self) -> str:
        return str(self.status.get("engine", {}).get("balance", "round_robin"))

    def _interrupt(self, reason: str, now: float) -> list[JSON]:
        """A running rebalance stops (the engine stops it when any server changes state or weight)."""
        if self.rebalance is None or not self.rebalance.running:
            return []
        event = self.rebalance.end("stopped", reason, now)
        self.status["rebalance"] = copy.deepcopy(self.rebalance.state)
        return [event]

    def _move_clients(self, now: float) -> list[JSON]:
        """Move the clients due by `now`: their connections leave the source and reopen on the target."""
        current = self.rebalance
        if current is None or not current.running:
            return []
        state = current.state
        for move in current.plan.moves[state["moved_clients"] : current.due(now)]:
            ids = set(move.conn_ids)
            source = sim.connections(self.details, move.source)
            moving = [c for c in source if c["id"] in ids]
            self.details[move.source]["connections"] = [c for c in source if c["id"] not in ids]
            target = self.details.setdefault(move.target, {"name": move.target, "connections": []})
            target.setdefault("connections", []).extend({**c, "started": now, "age_s": 0.0} for c in moving)
            self.find(move.source)["active"] -= len(moving)
            self.find(move.target)["active"] += len(moving)
            self.find(move.target)["total"] += len(moving)
            state["moved_clients"] += 1
            state["moved_connections"] += len(moving)
            state["left_clients"] -= 1
        events = []
        if state["moved_clients"] >= current.plan.clients:
            events.append(current.end("done", "balanced: every client is where the balancer places it", now))
        self.status["rebalance"] = copy.deepcopy(state)
        return events

    # Simulation on the fake clock

    def tick(self, now: float, dt: float) -> list[JSON]:
        """Advance fake time: drains empty, new servers pass their rise checks, a rebalance moves clients."""
        events: list[JSON] = self._move_clients(now)
        for server in self.servers:
            drain = server.get("drain")
            if drain and server["active"] > 0:
                step = max(1, math.ceil(drain["active_at_start"] * dt / DRAIN_SIM_S))
                deadline = drain.get("deadline")
                server["active"] = 0 if deadline and now >= deadline else server["active"] - step
                server["active"] = max(0, server["active"])
            health = server["health"]
            if health["status"] == "down" and health["last_result"] is None:
                health["rise_count"] = 1
                health["last_result"], health["checks"] = "ok", 1
            elif health["status"] == "down" and health["last_failure"] is None:
                health["rise_count"] += 1
                health["checks"] += 1
                if health["rise_count"] >= health["rise"]:
                    old = server["state"]
                    health.update(status="up", rise_count=0, last_change=now)
                    self.recompute()
                    events.append(_state(server["name"], old, server["state"], "checks passed"))
                    events += self._interrupt(CHANGED, now)
        self.recompute()
        return events

    def _refuse_if_last(self, server: JSON, what: str, force: bool) -> None:
        """The engine's interlock: never leave a pool without an eligible server unless forced."""
        pool = server.get("pool")
        others = [s for s in self.servers if s is not server and s.get("pool") == pool and _eligible(s)]
        if not force and _eligible(server) and not others:
            raise ControlError(
                409,
                "conflict",
                f"{what} would leave no eligible server in the pool; use force to do it anyway",
            )

    def _changed(self, server: JSON, old: str, action: str, why: str) -> tuple[JSON, list[JSON]]:
        self.recompute()
        events = [_op(action, server["name"], True, None)]
        if server["state"] != old:
            events.append(_state(server["name"], old, server["state"], why))
        events += self._interrupt(CHANGED, self.clock)
        return copy.deepcopy(server), events


_eligible = sim.eligible


def _check_weight(weight: int) -> None:
    if not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
        raise ControlError(400, "bad_weight", f"weight must be 0..{MAX_WEIGHT}")


def _op(action: str, server: str | None, ok: bool, detail: str | None) -> JSON:
    return {"type": "operator", "action": action, "server": server, "ok": ok, "detail": detail}


def _state(server: str, old: str, new: str, reason: str) -> JSON:
    return {"type": "state", "server": server, "old": old, "new": new, "reason": reason}


def with_pool(event: JSON, servers: list[JSON]) -> JSON:
    """Events naming a server carry its `pool` (the contract), when the servers have one."""
    name = event.get("server")
    pool = next((s.get("pool") for s in servers if s["name"] == name), None) if name else None
    return {**event, "pool": pool} if pool is not None else event
