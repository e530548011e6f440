"""Pools and routes at runtime, the pure parts: route references and edits, who uses a pool, the state file's
pool and route keys and how they are laid over the configuration."""

from __future__ import annotations

import pytest

from proxy_core import statefile
from proxy_core.checkspec import CheckConfig
from proxy_core.errors import BadRequest, ConfigError, Conflict, NotFound, WsproxyError
from proxy_core.poolconfig import (
    MAX_ROUTES,
    PoolConfig,
    check_route_target,
    check_to_dict,
    find_route,
    insert_route,
    pool_users,
    route_key,
    status_classes,
)
from proxy_core.routing import Route

CHAT = Route("chat", host="chat.example.com", name="chat")
NOTIFY = Route("notify", path_prefix="/notify")
API = Route("api", listener="127.0.0.1:8000")
ROUTES = (CHAT, NOTIFY, API)


@pytest.mark.parametrize(
    ("ref", "index"),
    [("1", 0), ("3", 2), ("chat", 0)],
)
def test_a_route_is_found_by_position_or_name(ref: str, index: int) -> None:
    """A number is a 1-based position, anything else a name."""
    assert find_route(ROUTES, ref) == index


@pytest.mark.parametrize(
    ("routes", "ref", "fragment"),
    [
        (ROUTES, "0", "no route at position 0 (1..3)"),
        (ROUTES, "4", "no route at position 4 (1..3)"),
        ((), "1", "no route at position 1 (there are no routes)"),
        (ROUTES, "ghost", "no route named 'ghost' (named routes: chat)"),
    ],
)
def test_an_unknown_route_is_a_404_saying_what_there_is(routes: tuple[Route, ...], ref: str, fragment: str) -> None:
    with pytest.raises(NotFound) as caught:
        find_route(routes, ref)
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("position", "order"),
    [
        (None, ["chat", "notify", "api", "new"]),
        (1, ["new", "chat", "notify", "api"]),
        (3, ["chat", "notify", "new", "api"]),
        (4, ["chat", "notify", "api", "new"]),
    ],
)
def test_insert_puts_the_route_at_its_1_based_position(position: int | None, order: list[str]) -> None:
    routes = insert_route(ROUTES, Route("new", host="new.example.com"), position)
    assert [r.pool for r in routes] == order
    assert ROUTES == (CHAT, NOTIFY, API)  # the old tuple is untouched: the change is a swap


@pytest.mark.parametrize(
    ("routes", "route", "position", "error", "fragment"),
    [
        (ROUTES, Route("x"), 0, BadRequest, "field 'position': use 1..4"),
        (ROUTES, Route("x"), 5, BadRequest, "field 'position': use 1..4"),
        (ROUTES, Route("x", name="chat"), None, Conflict, "a route named 'chat' already exists"),
        ((Route("x"),) * MAX_ROUTES, Route("x"), None, Conflict, f"the most an engine takes ({MAX_ROUTES})"),
    ],
)
def test_insert_refuses_bad_positions_names_and_too_many(
    routes: tuple[Route, ...], route: Route, position: int | None, error: type[WsproxyError], fragment: str
) -> None:
    with pytest.raises(error) as caught:
        insert_route(routes, route, position)
    assert fragment in caught.value.message


def test_a_route_target_must_exist() -> None:
    """A missing pool is a 409 naming the pools (one may be added first); a missing listener a 400."""
    check_route_target(CHAT, ["chat"], [])
    with pytest.raises(Conflict) as pool:
        check_route_target(CHAT, ["api", "notify"], [])
    assert pool.value.message == "route.pool: no pool named 'chat' (pools: api, notify); add the pool first"
    with pytest.raises(BadRequest) as listener:
        check_route_target(API, ["api"], ["127.0.0.1:9000"])
    assert "no listener '127.0.0.1:8000' (listeners: 127.0.0.1:9000)" in listener.value.message


@pytest.mark.parametrize(
    ("pool", "defaults", "servers", "expected"),
    [
        ("spare", {}, [], None),
        ("chat", {}, [], "pool 'chat' cannot be removed: route 1 (chat) point(s) at it (remove those routes first)"),
        ("spare", {"127.0.0.1:8000": "spare"}, [], "it is the default_pool of listener(s) 127.0.0.1:8000"),
        ("spare", {}, ["spare/n1", "spare/n2"], "it still has server(s) spare/n1, spare/n2 (remove them first)"),
        ("notify", {"0.0.0.0:80": "notify"}, ["n1"], "route 2 point(s) at it (remove those routes first); it is the "
         "default_pool of listener(s) 0.0.0.0:80; it still has server(s) n1"),
    ],
)  # fmt: skip
def test_pool_users_name_every_route_listener_and_server(
    pool: str, defaults: dict[str, str | None], servers: list[str], expected: str | None
) -> None:
    problem = pool_users(pool, ROUTES, defaults, servers)
    assert problem == expected if expected is None else expected in str(problem)


def test_a_check_round_trips_through_its_table() -> None:
    """check_to_dict gives `[pool.check]` keys that parse back to the same check; statuses as classes."""
    from proxy_core.config import parse_check

    check = CheckConfig("http", "/health", 500, 1, 3, 200, frozenset([*range(200, 300), 404]), "h.example", 0)
    table = check_to_dict(check)
    assert table["expect_status"] == ["2xx", 404] and table["host"] == "h.example"
    assert parse_check(table) == check
    assert status_classes(CheckConfig().expect_status) == ["2xx", "3xx"]


def test_route_keys_are_names_else_the_rule() -> None:
    assert route_key(CHAT) == "name=chat"
    assert route_key(NOTIFY) == "listener=;host=;path_prefix=/notify;sni=;pool=notify"


# -- the state file ---------------------------------------------------------------------------------

WEB = PoolConfig("web", ())
MAIN = PoolConfig("main", ())
TOPOLOGY = statefile.Topology(
    pools=(PoolConfig("chat", (), "ip_hash", CheckConfig(interval_ms=100)),),
    removed_pools=frozenset({"web"}),
    routes=(Route("chat", host="chat.example.com", name="c"), NOTIFY),
    configured_routes=(NOTIFY, API),
    removed_routes=frozenset({route_key(API)}),
)


def saved(data: dict[str, object]) -> statefile.SavedState:
    return statefile.parse({"version": 1, "servers": [], **data})


def test_topology_is_written_and_read_back() -> None:
    """Pools added, pools and routes removed and the route order survive the file, `added` marking runtime routes."""
    data = statefile.topology_dict(TOPOLOGY)
    assert data["routes"] == [
        {"name": "c", "host": "chat.example.com", "pool": "chat", "added": True},
        {"path_prefix": "/notify", "pool": "notify", "added": False},
    ]
    state = saved(data)
    assert state.pools == list(TOPOLOGY.pools) and state.removed_pools == {"web"}
    assert state.routes == [(TOPOLOGY.routes[0], True), (NOTIFY, False)]  # type: ignore[index]
    assert state.removed_routes == {route_key(API)}


def test_an_old_state_file_has_no_topology() -> None:
    """A file from an engine before runtime pools: no pools, routes as configured."""
    state = saved({"removed": ["b1"]})
    assert (state.pools, state.removed_pools, state.routes, state.removed_routes) == ([], set(), None, set())
    assert statefile.merge_routes((NOTIFY, API), state, {"notify", "api"}, set()) == ((NOTIFY, API), [])
    assert statefile.topology_dict(statefile.Topology()) == {}


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"pools": [{"name": "x", "balance": "fastest"}]}, "state.pools[0].balance"),
        ({"pools": [{"name": "x", "server": []}]}, "state.pools[0]"),
        ({"pools": [{"name": "x", "check": {"rise": 0}}]}, "check.rise"),
        ({"routes": [{"pool": "x", "host": "a b"}]}, "state.routes[0].host"),
        ({"routes": [{"pool": "x", "added": "yes"}]}, "state.routes[0].added"),
        ({"routes": {}}, "state.routes"),
        ({"removed_pools": "web"}, "state.removed_pools"),
    ],
)
def test_a_bad_topology_in_the_file_names_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        saved(data)
    assert caught.value.key == key


def test_pools_merge_keeps_the_first_and_the_files_definitions() -> None:
    """Removed configured pools stay removed (never the first); a runtime pool the file now defines is the file's."""
    state = saved({"pools": [{"name": "chat"}, {"name": "web", "balance": "ip_hash"}], "removed_pools": ["main", "x"]})
    merged = statefile.merge_pools((MAIN, WEB), state)
    assert [(p.name, p.balance) for p in merged] == [
        ("main", "round_robin"),
        ("web", "round_robin"),
        ("chat", "round_robin"),
    ]
    state.removed_pools = {"web"}
    assert [p.name for p in statefile.merge_pools((MAIN, WEB), state)] == ["main", "chat"]


def test_routes_merge_keeps_the_saved_order_and_places_new_configured_routes() -> None:
    """The saved order; a configured route gone from the file is dropped, one new in it goes after the configured
    route before it, a removed one stays removed, a runtime route to a vanished pool is dropped with a line."""
    new = Route("api", host="new.example.com")
    gone = Route("old", host="old.example.com")
    runtime = Route("chat", host="chat.example.com", name="c")
    orphan = Route("ghost", host="ghost.example.com")
    state = statefile.SavedState(
        routes=[(runtime, True), (gone, False), (NOTIFY, False), (orphan, True)],
        removed_routes={route_key(API)},
    )
    routes, dropped = statefile.merge_routes((NOTIFY, new, API), state, {"chat", "notify", "api"}, set())
    assert routes == (runtime, NOTIFY, new)
    assert dropped == ["saved route to pool ghost dropped: its pool or listener is gone"]
    first = Route("api", host="first.example.com")
    routes, _ = statefile.merge_routes((first, NOTIFY), state, {"chat", "notify", "api"}, set())
    assert routes == (first, runtime, NOTIFY)  # no configured route before it: first
