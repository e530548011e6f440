"""A fleet-wide rebalance, planned once from the fleet's per-server totals: pure, no I/O.

The instance that takes `wsproxy rebalance` reads every live instance's connections per eligible server (their
live views) and plans how many connections leave each over-loaded server by the rule one instance uses alone
(rebalance.py: from the most to the least loaded until each is within one connection of its weighted share),
but on the fleet's totals. Each surplus is split among the instances holding it in proportion to their own excess
over their share (largest remainder, ties by name): the shares add up to the fleet's surplus exactly, never exceed
what an instance holds, and an instance that is balanced itself moves nothing (its clients would come back to
where they were). The plan travels in the stream entry, so every instance moves the share planned for it.
`ip_hash` needs no split: every instance moves the clients the ring (the same everywhere) places elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy_core.rebalance import Target

STATE_KEYS = ("planned_clients", "moved_clients", "left_clients", "moved_connections")


@dataclass(frozen=True, slots=True)
class Flow:
    """Connections the fleet moves off `source`; the balancers place them, on `target` by the plan."""

    source: str
    target: str
    connections: int


@dataclass(frozen=True, slots=True)
class FleetPlan:
    policy: str
    totals: Mapping[str, int]  # fleet connections per eligible server, as planned from
    after: Mapping[str, int]  # the same once the flows are made
    flows: tuple[Flow, ...] = ()
    shares: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # instance -> server -> connections
    skipped_full: int = 0  # connections left on a loaded server: the under-loaded one is full fleet-wide

    @property
    def connections(self) -> int:
        return sum(f.connections for f in self.flows)

    def share_of(self, instance: str) -> dict[str, int]:
        return {s: n for s, n in self.shares.get(instance, {}).items() if n}

    def destinations(self) -> dict[str, str]:
        """Each source's main target (the largest flow off it): what a move off it is reported as going to."""
        best: dict[str, Flow] = {}
        for flow in self.flows:
            if flow.source not in best or flow.connections > best[flow.source].connections:
                best[flow.source] = flow
        return {s: f.target for s, f in best.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "totals": dict(self.totals),
            "after": dict(self.after),
            "flows": [{"from": f.source, "to": f.target, "connections": f.connections} for f in self.flows],
            "shares": {i: dict(s) for i, s in self.shares.items()},
            "connections": self.connections,
            "skipped_full": self.skipped_full,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FleetPlan:
        """The plan as the stream entry carries it; raises ValueError (KeyError, TypeError) when malformed."""
        flows = tuple(Flow(str(f["from"]), str(f["to"]), int(f["connections"])) for f in data.get("flows", []))
        shares = {str(i): {str(s): int(n) for s, n in row.items()} for i, row in data.get("shares", {}).items()}
        return cls(
            str(data["policy"]),
            {str(k): int(v) for k, v in data.get("totals", {}).items()},
            {str(k): int(v) for k, v in data.get("after", {}).items()},
            flows,
            shares,
            int(data.get("skipped_full", 0)),
        )


def fleet_plan(policy: str, counts: Mapping[str, Mapping[str, int]], targets: Sequence[Target]) -> FleetPlan:
    """The fleet's flows and each instance's share, from `counts` (instance -> server -> connections).

    Only eligible servers (the targets) count; a target's `max_conns` is per instance, so the fleet's room on it
    is that times the number of instances."""
    names = [t.name for t in targets]
    totals = {n: sum(int(row.get(n, 0)) for row in counts.values()) for n in names}
    if policy == "ip_hash":
        return FleetPlan(policy, totals, dict(totals))
    total, total_weight = sum(totals.values()), sum(t.weight for t in targets)
    if not total or not total_weight:
        return FleetPlan(policy, totals, dict(totals))
    fair = {t.name: total * t.weight / total_weight for t in targets}
    room = {t.name: None if t.max_conns is None else t.max_conns * len(counts) for t in targets}
    after, moved, full = _flows(totals, fair, room)
    shed: dict[str, int] = {}
    for (source, _), n in moved.items():
        shed[source] = shed.get(source, 0) + n
    weights = {t.name: t.weight for t in targets}
    shares: dict[str, dict[str, int]] = {i: {} for i in sorted(counts)}
    for source, amount in sorted(shed.items()):
        excess = {i: max(0.0, _excess(row, source, weights, total_weight)) for i, row in counts.items()}
        held = {i: int(row.get(source, 0)) for i, row in counts.items()}
        for instance, n in apportion(amount, excess, held).items():
            if n:
                shares[instance][source] = n
    flows = tuple(Flow(s, t, n) for (s, t), n in sorted(moved.items()))
    return FleetPlan(policy, totals, after, flows, shares, full)


def _flows(
    totals: Mapping[str, int], fair: Mapping[str, float], room: Mapping[str, int | None]
) -> tuple[dict[str, int], dict[tuple[str, str], int], int]:
    """From the most to the least loaded, in bulk, until each is within one connection of its fair share."""
    after = dict(totals)
    moved: dict[tuple[str, str], int] = {}
    blocked: set[str] = set()
    full = 0
    for _ in range(4 * len(after) * len(after) + 4):  # each step settles a source, a target, or blocks one
        open_targets = [n for n in after if n not in blocked]
        if not open_targets:
            break
        source = max(after, key=lambda n: (after[n] - fair[n], n))
        target = min(open_targets, key=lambda n: (after[n] - fair[n], n))
        excess, deficit = after[source] - fair[source], fair[target] - after[target]
        if (excess <= 1 and deficit <= 1) or source == target:
            break
        step = max(1, math.floor(min(excess, deficit)))
        limit = room[target]
        if limit is not None and step > limit - after[target]:
            if limit - after[target] <= 0:
                blocked.add(target)
                full += max(0, math.floor(deficit))
                continue
            step = limit - after[target]
        after[source] -= step
        after[target] += step
        moved[(source, target)] = moved.get((source, target), 0) + step
    return after, moved, full


def _excess(row: Mapping[str, int], server: str, weights: Mapping[str, int], total_weight: int) -> float:
    """How far over its own fair share of `server` one instance is (its connections spread by weight)."""
    held = sum(int(row.get(n, 0)) for n in weights)
    return int(row.get(server, 0)) - held * weights[server] / total_weight


def apportion(amount: int, weights: Mapping[str, float], caps: Mapping[str, int]) -> dict[str, int]:
    """Split `amount` by `weights` into integers that add up to it (largest remainder, ties by name), none over
    its cap; what the weights cannot place goes to whoever still has room, the most room first."""
    out = {k: 0 for k in caps}
    total = sum(w for w in weights.values() if w > 0)
    amount = min(amount, sum(caps.values()))
    if total > 0:
        exact = {k: amount * weights.get(k, 0.0) / total for k in caps}
        out = {k: min(caps[k], math.floor(v)) for k, v in exact.items()}
        by_remainder = sorted(caps, key=lambda k: (-(exact[k] - math.floor(exact[k])), k))
        for key in by_remainder:
            if sum(out.values()) >= amount:
                break
            if exact[key] > out[key] and out[key] < caps[key]:
                out[key] += 1
    for key in sorted(caps, key=lambda k: (-(caps[k] - out[k]), k)):
        left = amount - sum(out.values())
        if left <= 0:
            break
        out[key] += min(left, caps[key] - out[key])
    return out


def summed_status(instances: Iterable[Mapping[str, Any]], fleet_id: str) -> dict[str, Any] | None:
    """One fleet rebalance as the operator sees it: the live instances' parts of it, summed."""
    parts = {
        str(i["name"]): i["rebalance"]
        for i in instances
        if i.get("alive") and isinstance(i.get("rebalance"), dict) and i["rebalance"].get("fleet") == fleet_id
    }
    if not parts:
        return None
    states = {p.get("state") for p in parts.values()}
    state = "running" if "running" in states else "stopped" if "stopped" in states else "done"
    summed: dict[str, Any] = {k: sum(int(p.get(k) or 0) for p in parts.values()) for k in STATE_KEYS}
    finished = [p.get("finished") for p in parts.values()]
    reason = "; ".join(f"{name} {p.get('state')}: {p.get('reason')}" for name, p in sorted(parts.items()))
    return {
        "state": state,
        "reason": f"fleet rebalance over {len(parts)} instance(s): {reason}",
        "started": min(float(p.get("started") or 0.0) for p in parts.values()),
        "finished": None if state == "running" or None in finished else max(float(f or 0) for f in finished),
        "rate": round(sum(float(p.get("rate") or 0.0) for p in parts.values()), 3),
        "rounds": max(int(p.get("rounds") or 0) for p in parts.values()),
        **summed,
        "fleet": fleet_id,
        "instances": {
            name: {"state": p.get("state"), "share": p.get("share"), **{k: p.get(k) for k in STATE_KEYS}}
            for name, p in sorted(parts.items())
        },
    }
