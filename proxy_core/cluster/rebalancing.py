"""A rebalance through any instance of a fleet: planned once from the live views, then a change on the stream.

The instance taking it plans from the fleet's per-server totals (fleetplan.py) and appends the plan; every
instance applying the entry moves its own share at its part of the rate, and `GET /v1/rebalance` sums the parts
from the live views. `[rebalance] auto` takes a lock in Redis first, so the instances that all saw a server come
back start one fleet rebalance between them, not one each.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import TYPE_CHECKING, Any

from proxy_core.cluster.fleetplan import FleetPlan, fleet_plan, summed_status
from proxy_core.errors import Conflict, StoreUnavailable
from proxy_core.events import OperatorAction
from proxy_core.rebalance import Target, default_rate

if TYPE_CHECKING:
    from proxy_core.engine import Engine

# A rebalance entry applied this long after it was made (replayed after a restart or a partition) is skipped:
# the counts it was planned from are gone, and its share moved now would unbalance what the others balanced.
STALE_S = 10.0
# The answer to `POST /v1/rebalance` waits this long for every live instance to take its part; one that has not
# (cut off from the store while its live view has not expired yet) is named in a warning, the others move anyway.
PARTS_WAIT_S = 3.0
PARTS_POLL_S = 0.02
AUTO_LOCK_KEY = "wsproxy:rebalance:auto:"
# The lock is per fleet state (the last applied change and the eligible servers): instances notice a returning
# server within a few health-check intervals of each other (rise x interval), then each waits auto_delay_s of
# quiet; the first to get here takes it, the others see it taken. Kept this long, then a new state needs a new key.
AUTO_LOCK_S = 60.0


def counts_of(fleet: dict[str, Any]) -> dict[str, dict[str, int]]:
    """instance -> server -> live connections, for the live instances (the fleet view leaves the gone ones out)."""
    counts: dict[str, dict[str, int]] = {i["name"]: {} for i in fleet.get("instances", []) if i.get("alive")}
    for server in fleet.get("servers", []):
        for instance, n in server.get("instances", {}).items():
            counts.setdefault(instance, {})[server["name"]] = int(n)
    return counts


async def plan_fleet(engine: Engine, rate: float | None) -> tuple[FleetPlan, float, dict[str, Any]]:
    """The fleet's plan from the live views (this instance's fresh), the fleet rate, and the fleet view."""
    assert engine.cluster is not None
    fleet = await engine.cluster.fleet()
    targets = [Target(s.name, s.weight, s.max_conns) for s in engine.registry.eligible]
    planned = fleet_plan(engine.config.balance, counts_of(fleet), targets)
    if rate is None:
        rate = engine.config.rebalance.rate or default_rate(sum(planned.totals.values()), len(targets))
    return planned, rate, fleet


def local_rate(planned: FleetPlan, instance: str, rate: float, instances: int) -> float:
    """This instance's part of the fleet's rate: in proportion to its share (evenly with ip_hash)."""
    if planned.policy == "ip_hash" or not planned.connections:
        return rate / max(1, instances)
    return rate * sum(planned.share_of(instance).values()) / planned.connections


async def dry_run(engine: Engine, rate: float | None) -> dict[str, Any]:
    """The fleet's plan, and this instance's share as today's plan reads (what the dashboard shows)."""
    assert engine.cluster is not None
    planned, rate, _ = await plan_fleet(engine, rate)
    rebalancer, instance = engine.rebalancer, engine.cluster.instance
    saved = rebalancer.share, rebalancer.destinations
    if planned.policy != "ip_hash":
        rebalancer.share, rebalancer.destinations = planned.share_of(instance), planned.destinations()
    try:
        answer = rebalancer.dry_run()
    finally:
        rebalancer.share, rebalancer.destinations = saved
    note = None
    if planned.policy == "ip_hash":
        note = "ip_hash: each instance moves the clients the ring places elsewhere; the plan is this instance's part"
    return {**answer, "rate": rate, "fleet": {**planned.to_dict(), "instance": instance, "note": note}}


async def start(engine: Engine, rate: float | None) -> dict[str, Any]:
    """Plan from the fleet, append the plan, answer once every live instance has taken its part."""
    cluster = engine.cluster
    assert cluster is not None
    if not engine.registry.eligible:
        raise Conflict("no eligible server to rebalance onto")
    planned, rate, fleet = await plan_fleet(engine, rate)
    running = [
        i["name"] for i in fleet["instances"] if i.get("alive") and (i.get("rebalance") or {}).get("state") == "running"
    ]
    if running:
        raise Conflict(f"a rebalance is already running on {', '.join(running)}; stop it first (DELETE /v1/rebalance)")
    fleet_id = f"{cluster.instance}-{os.getpid()}-{time.time_ns()}"
    alive = sum(1 for i in fleet["instances"] if i.get("alive"))
    await cluster.submit("rebalance", None, id=fleet_id, plan=planned.to_dict(), rate=rate, instances=alive)
    return await _parts_taken(engine, fleet_id)


async def _parts_taken(engine: Engine, fleet_id: str) -> dict[str, Any]:
    """The summed status once every live instance shows its part (bounded: the laggards named in a warning)."""
    assert engine.cluster is not None
    deadline = time.monotonic() + PARTS_WAIT_S
    expected: set[str] | None = None  # the instances alive when it was made; one gone since is still behind
    while True:
        fleet = await engine.cluster.fleet()
        alive = {i["name"] for i in fleet["instances"] if i.get("alive")}
        expected = alive if expected is None else expected
        taken = {
            i["name"]
            for i in fleet["instances"]
            if i.get("alive") and (i.get("rebalance") or {}).get("fleet") == fleet_id
        }
        behind = sorted(expected - taken)
        if not behind or time.monotonic() >= deadline:
            break
        await asyncio.sleep(PARTS_POLL_S)
    summed = summed_status(fleet["instances"], fleet_id) or engine.rebalancer.status() or {}
    if behind:
        summed["warning"] = (
            f"not taken within {PARTS_WAIT_S:g} s by {', '.join(behind)} (behind, or cut off from the store): "
            "the others move their shares"
        )
    return summed


async def apply_entry(engine: Engine, change: dict[str, Any]) -> dict[str, Any] | None:
    """A rebalance entry, applied: this instance's share moved; skipped (and said) when too old to act on."""
    assert engine.cluster is not None
    age = time.time() - float(change.get("at") or 0.0)
    if age > STALE_S:
        detail = (
            f"fleet rebalance {change.get('id')} skipped: made {age:.0f} s ago, the counts it was planned from are gone"
        )
        engine.bus.publish(OperatorAction(action="rebalance", server=None, ok=False, detail=detail))
        return engine.rebalancer.status()
    planned = FleetPlan.from_dict(change["plan"])
    instance = engine.cluster.instance
    share = None if planned.policy == "ip_hash" else planned.share_of(instance)
    rate = local_rate(planned, instance, float(change["rate"]), int(change.get("instances") or 1))
    await engine.rebalancer.fresh()  # with --workers: the workers' connection lists, current
    return engine.rebalancer.join_fleet(str(change["id"]), share, planned.destinations(), rate)


async def stop(engine: Engine) -> dict[str, Any] | None:
    assert engine.cluster is not None
    await engine.cluster.submit("rebalance_stop", None, wait_applied=True)
    return await status(engine)


async def status(engine: Engine) -> dict[str, Any] | None:
    """This instance's rebalance; when it is part of a fleet one, the live instances' parts summed."""
    local = engine.rebalancer.status()
    if engine.cluster is None or local is None or not local.get("fleet"):
        return local
    try:
        fleet = await engine.cluster.fleet()
    except StoreUnavailable as exc:
        return {**local, "reason": f"{local['reason']} (this instance's part only: {exc.message})"}
    return summed_status(fleet["instances"], str(local["fleet"])) or local


async def auto(engine: Engine) -> None:
    """`[rebalance] auto` in a fleet: one instance takes the lock and starts a fleet rebalance for all."""
    cluster = engine.cluster
    assert cluster is not None
    cluster.refuse_if_offline()
    eligible = ",".join(sorted(s.name for s in engine.registry.eligible))
    state = hashlib.sha1(f"{cluster.applied}|{eligible}".encode(), usedforsecurity=False).hexdigest()[:16]
    if not await cluster.take_lock(AUTO_LOCK_KEY + state, AUTO_LOCK_S):
        engine.bus.publish(
            OperatorAction(
                action="rebalance", server=None, ok=True, detail="auto rebalance: another instance started it"
            )
        )
        return
    await start(engine, None)
