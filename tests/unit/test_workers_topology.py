"""What the supervisor pushes to workers: every pool, server, route and plan, laid over the replica exactly."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy_core.checkspec import CheckConfig
from proxy_core.config import ServerConfig
from proxy_core.registry import Registry
from proxy_core.routing import ListenerPlan, Route, decide
from proxy_core.workers import topology

NONE = CheckConfig(type="none", max_fails=0)
ROUTES = (Route("chat", host="chat.example.com"), Route("notify", path_prefix="/notify"))
PLANS = {"127.0.0.1:8080": ListenerPlan("127.0.0.1:0", "api", True, False, False)}


def supervisor(**members: list[str]) -> Registry:
    """The supervisor's registry: the first keyword is the first pool; notify balances by least_conn."""
    names = list(members)
    registry = Registry(CheckConfig(), pool=names[0])
    registry.qualified = len(names) > 1
    for name in names[1:]:
        registry.add_pool(name, "least_conn" if name == "notify" else "round_robin", CheckConfig())
    port = 9001
    for pool, servers in members.items():
        for server in servers:
            registry.add(ServerConfig(server, "127.0.0.1", port, max_conns=5), 0.0, at_start=True, pool=pool)
            port += 1
    return registry


def wire(registry: Registry, routes: tuple[Route, ...] = ROUTES) -> topology.State:
    """The state as a worker receives it: through orjson, as the link sends it."""
    state: topology.State = orjson.loads(orjson.dumps(topology.state(registry, routes, PLANS)))
    return state


def replica_of(state: topology.State, workers: int = 2) -> Registry:
    first, balance = state["pools"][0]
    replica = Registry(NONE, balance, first)
    topology.replicate(replica, state, NONE, workers, 0.0)
    return replica


def view(registry: Registry) -> list[tuple[Any, ...]]:
    return [(s.name, s.pool, s.short, s.weight, s.admin, s.health.up) for s in registry]


def test_the_replica_has_every_pool_with_its_servers_and_policy() -> None:
    """Pools, their balance, POOL/NAME servers and per-pool eligible sets match the supervisor's."""
    source = supervisor(chat=["b1", "b2"], notify=["b3"], api=["b4"])
    replica = replica_of(wire(source))
    assert view(replica) == view(source)
    assert {n: p.balance for n, p in replica.pools.items()} == {
        "chat": "round_robin",
        "notify": "least_conn",
        "api": "round_robin",
    }
    assert [s.name for s in replica.pools["notify"].eligible] == ["notify/b3"]
    assert replica.qualified and replica.default.name == "chat"
    assert replica.servers["chat/b1"].max_conns == 3  # ceil(5 / 2) per worker


def test_routes_and_plans_travel_whole_and_route_alike() -> None:
    """Routes and listener plans come back equal, so decide() gives the same pool in a worker."""
    state = wire(supervisor(chat=["b1"], notify=["b2"], api=["b3"]))
    routes, plans = topology.routes_of(state), topology.plans_of(state)
    assert routes == ROUTES and plans == PLANS
    plan = plans["127.0.0.1:8080"]
    for host, path, pool in [("chat.example.com", "/", "chat"), ("x", "/notify/a", "notify"), ("x", "/", "api")]:
        assert decide(routes, plan.listener, plan.default_pool, host=host, path=path).pool == pool


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r.drain("chat/b1", None, 1.0), {"chat/b1": "draining"}),
        (lambda r: r.set_weight("notify/b3", 7), {}),
        (lambda r: r.remove("chat/b2"), {}),
        (lambda r: r.disable("notify/b3", force=True), {"notify/b3": "disabled"}),
    ],
)
def test_a_change_in_one_pool_reaches_the_replica_and_leaves_the_other(change: Any, expected: dict[str, str]) -> None:
    """After any operation the replica equals the supervisor again; untouched servers keep their objects."""
    source = supervisor(chat=["b1", "b2"], notify=["b3", "b4"])
    replica = replica_of(wire(source))
    kept = replica.servers["notify/b4"]
    change(source)
    topology.replicate(replica, wire(source), NONE, 2, 1.0)
    assert view(replica) == view(source)
    assert replica.servers["notify/b4"] is kept
    assert {s.name: s.admin for s in replica if s.admin != "active"} == expected


def test_pools_added_and_removed_at_runtime_reach_the_replica() -> None:
    """A new pool with its server appears; a pool gone (servers first) goes; the first pool stays."""
    source = supervisor(chat=["b1"], notify=["b2"])
    replica = replica_of(wire(source))
    source.add_pool("api", "ip_hash", CheckConfig())
    source.add(ServerConfig("b9", "127.0.0.1", 9100), 0.0, pool="api")
    source.remove("notify/b2", force=True)
    source.remove_pool("notify")
    topology.replicate(replica, wire(source), NONE, 2, 1.0)
    assert list(replica.pools) == ["chat", "api"] and replica.pools["api"].balance == "ip_hash"
    assert view(replica) == view(source)


def test_a_server_replaced_at_the_same_address_joins() -> None:
    """Removing b1 and adding b5 at b1's address in one push: the old one goes first, so no conflict."""
    source = supervisor(chat=["b1", "b2"])
    replica = replica_of(wire(source))
    source.remove("b1")
    source.add(ServerConfig("b5", "127.0.0.1", 9001), 0.0, at_start=True)
    topology.replicate(replica, wire(source), NONE, 2, 1.0)
    assert [s.name for s in replica] == ["b2", "b5"]


def test_servers_trading_addresses_in_one_push_both_join() -> None:
    """b1 re-added elsewhere after b3 took its old address: the replica drops b1 before adding b3."""
    source = supervisor(chat=["b1", "b2"])
    replica = replica_of(wire(source))
    source.remove("b1")
    source.add(ServerConfig("b3", "127.0.0.1", 9001), 0.0, at_start=True)
    source.add(ServerConfig("b1", "127.0.0.1", 9050), 0.0, at_start=True)
    topology.replicate(replica, wire(source), NONE, 2, 1.0)
    assert [(s.name, s.port) for s in replica] == [("b2", 9002), ("b3", 9001), ("b1", 9050)]


def test_a_balance_change_replaces_the_pools_balancer() -> None:
    """A pool whose policy changed picks with a balancer of the new policy."""
    source = supervisor(chat=["b1"], notify=["b2"])
    replica = replica_of(wire(source))
    before = replica.pools["chat"].balancer
    source.pools["chat"].balance = "least_conn"
    topology.replicate(replica, wire(source), NONE, 2, 1.0)
    assert replica.pools["chat"].balance == "least_conn" and replica.pools["chat"].balancer is not before


@pytest.mark.parametrize(
    ("old", "counts", "new", "expected"),
    [
        (ROUTES, [3, 4], ROUTES, [3, 4]),
        (ROUTES, [3, 4], (Route("api", host="api.example.com"), *ROUTES), [0, 3, 4]),  # inserted first
        (ROUTES, [3, 4], ROUTES[1:], [4]),  # the first removed
        ((), [], ROUTES, [0, 0]),
        ((ROUTES[0], ROUTES[0]), [5, 0], (ROUTES[0],), [5]),  # identical routes are told apart
    ],
)
def test_route_counts_follow_their_route(
    old: tuple[Route, ...], counts: list[int], new: tuple[Route, ...], expected: list[int]
) -> None:
    """A route kept keeps its matches through inserts and removals around it; a new one starts at zero."""
    assert topology.carry_counts(old, counts, new) == expected


def test_route_keys_are_unique_and_content_based() -> None:
    """Each route has its own key; the same route keeps its key in another list."""
    keys = topology.route_keys((ROUTES[0], ROUTES[1], ROUTES[0]))
    assert len(set(keys)) == 3 and keys[0] == topology.route_keys(ROUTES)[0]
