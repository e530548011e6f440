"""Applying the fleet's changes to this engine, and the document an instance starts from.

Entries are applied forced: the refusals that depend on what one instance sees (health, its own connections)
were made once, by the instance that took the change, so every instance reaches the same admin state.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from proxy_core import statefile
from proxy_core.cluster import rebalancing
from proxy_core.cluster.model import DEFAULT_POOL, DOC_VERSION
from proxy_core.cluster.scope import CHANGE_SCOPE, STREAM
from proxy_core.errors import WsproxyError

if TYPE_CHECKING:
    from proxy_core.engine import Engine


def document(engine: Engine, version: str | None) -> dict[str, Any]:
    """The desired admin state of this engine's pool, as the fleet stores it."""
    pool = statefile.snapshot(engine.registry, engine.removed)
    first = engine.registry.default.name
    servers = [s for s in pool["servers"] if s.get("pool", first) == first]  # pools added --local stay local
    return {
        "version": DOC_VERSION,
        "applied": version,
        "pools": {DEFAULT_POOL: {"servers": servers, "removed": pool["removed"]}},
    }


async def apply_change(engine: Engine, change: dict[str, Any]) -> Any:
    """One entry, through the engine's own operations (events, state file, workers) as this instance."""
    token = CHANGE_SCOPE.set(STREAM)
    try:
        return await _apply(engine, change)
    finally:
        CHANGE_SCOPE.reset(token)


async def _apply(engine: Engine, change: dict[str, Any]) -> Any:
    op, name = change["op"], str(change.get("name"))
    if op == "reset":
        apply_document(engine, change["doc"])
        engine.save_state()
        return None
    if op == "rebalance":
        return await rebalancing.apply_entry(engine, change)
    if op == "rebalance_stop":
        return engine.rebalancer.stop("stopped through the fleet")
    engine.local_overrides.discard(name)
    if op == "add":
        return await engine.add_server(name, change["address"], change.get("weight", 1), change.get("max_conns"))
    if op == "drain":
        deadline = change.get("deadline")
        left = None if deadline is None else max(0.0, float(deadline) - time.time())
        return await engine.drain(name, left, force=True)
    if op == "undrain":
        return await engine.undrain(name)
    if op == "disable":
        return await engine.disable(name, force=True)
    if op == "enable":
        return await engine.enable(name)
    if op == "weight":
        return await engine.set_weight(name, int(change["weight"]), force=True)
    if op == "remove":
        return await engine.remove(name, force=True)
    raise ValueError(f"no way to apply {op!r}")


def apply_document(engine: Engine, doc: dict[str, Any]) -> None:
    """Make this pool what the document says: servers added, removed, re-weighted, drained or disabled."""
    pool = doc.get("pools", {}).get(DEFAULT_POOL)
    if not isinstance(pool, dict):
        return
    saved = statefile.parse({"version": statefile.STATE_VERSION, **pool})
    registry, now = engine.registry, time.time()
    wanted = {s.config.name: s for s in saved.servers}
    for server in list(registry):
        if server.pool != registry.default.name:
            continue  # the document is the first pool's; another pool's servers were added with --local
        entry = wanted.get(server.name)
        if entry is None or entry.config.address != server.address:
            registry.remove(server.name, force=True)
            engine.checker.remove(server.name)
            for client in list(server.conns):
                client.finish("proxy", "server removed by the fleet")
    for entry in saved.servers:
        found = registry.servers.get(entry.config.name)
        if found is None:
            try:
                found, events = registry.add(entry.config, now, at_start=True)
            except WsproxyError:
                continue
            engine.bus.publish_all(events)
            engine.checker.add(found.name, found.host, found.port)
        server = found
        server.weight = entry.config.weight
        server.max_conns = entry.config.max_conns
        if server.admin != entry.admin:
            server.admin = entry.admin
            server.drain_started = now if entry.admin == "draining" else None
        server.drain_deadline = entry.drain_deadline if entry.admin == "draining" else None
    engine.removed = saved.removed & engine.configured
    engine.local_overrides.clear()
    registry.refresh()
