"""Several pools in one registry: POOL/NAME names, per-pool eligible sets, interlocks, checks and shares."""

from __future__ import annotations

import pytest

from proxy_core.checkspec import CheckConfig
from proxy_core.config import ServerConfig
from proxy_core.errors import BadRequest, Conflict, NotFound
from proxy_core.events import StateChanged
from proxy_core.registry import Registry


def pools(**members: list[str]) -> Registry:
    """A qualified registry: the first keyword is the first pool; servers on distinct ports."""
    names = list(members)
    registry = Registry(CheckConfig(), pool=names[0])
    registry.qualified = True
    for name in names[1:]:
        registry.add_pool(name, "least_conn", CheckConfig(type="none", max_fails=1))
    port = 9001
    for pool, servers in members.items():
        for server in servers:
            registry.add(ServerConfig(server, "127.0.0.1", port), 0.0, at_start=True, pool=pool)
            port += 1
    return registry


def test_servers_are_named_pool_slash_name_and_kept_apart() -> None:
    """With several pools the registry keys POOL/NAME; each pool's eligible set holds its own servers only."""
    registry = pools(chat=["n1", "n2"], notify=["n1"])
    assert list(registry.servers) == ["chat/n1", "chat/n2", "notify/n1"]
    assert [s.name for s in registry.pools["chat"].eligible] == ["chat/n1", "chat/n2"]
    assert [s.name for s in registry.pools["notify"].eligible] == ["notify/n1"]
    assert registry.get("chat/n2").short == "n2" and registry.get("n2").name == "chat/n2"


@pytest.mark.parametrize(
    ("name", "error", "fragment"),
    [
        ("n1", BadRequest, "chat/n1, notify/n1"),
        ("nope", NotFound, "no server named 'nope'"),
        ("other/n1", NotFound, "no pool named 'other'"),
        ("notify/n2", NotFound, "no server named 'n2' in pool 'notify'"),
    ],
)
def test_names_that_do_not_resolve_are_refused(name: str, error: type[Exception], fragment: str) -> None:
    """Ambiguous bare names, unknown names and unknown pools are refused naming what is wrong."""
    registry = pools(chat=["n1", "n2"], notify=["n1"])
    with pytest.raises(error, match=fragment):
        registry.get(name)


def test_the_interlock_is_per_pool() -> None:
    """A pool's last eligible server cannot be drained, disabled, weighted 0 or removed, whatever other pools hold."""
    registry = pools(chat=["n1"], notify=["n1", "n2"])
    for refused in (
        lambda: registry.drain("chat/n1", None, 1.0),
        lambda: registry.disable("chat/n1"),
        lambda: registry.set_weight("chat/n1", 0),
        lambda: registry.remove("chat/n1"),
    ):
        with pytest.raises(Conflict, match="the pool chat"):
            refused()
    registry.drain("notify/n1", None, 1.0)  # notify keeps n2
    with pytest.raises(Conflict, match="the pool notify"):
        registry.drain("notify/n2", None, 1.0)
    assert registry.get("chat/n1").state == "up"


def test_same_address_in_two_pools_is_allowed_not_twice_in_one() -> None:
    """One backend may serve two pools; the same address twice in one pool is a conflict."""
    registry = pools(chat=["n1"], notify=[])
    registry.add(ServerConfig("x", "127.0.0.1", 9001), 0.0, pool="notify")
    with pytest.raises(Conflict, match="already in the pool as 'chat/n1'"):
        registry.add(ServerConfig("y", "127.0.0.1", 9001), 0.0, pool="chat")


def test_each_pool_has_its_own_check_and_events_name_the_pool() -> None:
    """A pool with checks off adds servers up at once; its events carry the pool."""
    registry = pools(chat=["n1"], notify=[])
    server, events = registry.add(ServerConfig("n9", "127.0.0.1", 9100), 0.0, pool="notify")
    assert server.state == "up"
    assert isinstance(events[0], StateChanged) and (events[0].server, events[0].pool) == ("notify/n9", "notify")
    failed = registry.record_connect_failure(server, "connection refused", 1.0)  # max_fails 1 in notify
    assert [e.new for e in failed if isinstance(e, StateChanged)] == ["down"]


def test_shares_are_within_a_pool() -> None:
    """A server's share is its weight over its own pool's eligible weight."""
    registry = pools(chat=["n1", "n2"], notify=["n1"])
    shares = {s["name"]: s["share"] for s in registry.snapshot()}
    assert shares == {"chat/n1": 0.5, "chat/n2": 0.5, "notify/n1": 1.0}
    assert {s["pool"] for s in registry.snapshot()} == {"chat", "notify"}


def test_pools_are_added_and_removed_with_checks() -> None:
    """A duplicate pool is a conflict; a pool with servers, or the first pool, cannot be removed."""
    registry = pools(chat=["n1"], notify=["n1"])
    with pytest.raises(Conflict, match="already exists"):
        registry.add_pool("chat", "round_robin", CheckConfig())
    with pytest.raises(Conflict, match="still has server"):
        registry.remove_pool("notify")
    with pytest.raises(Conflict, match="first pool"):
        registry.remove_pool("chat")
    registry.remove("notify/n1", force=True)
    registry.remove_pool("notify")
    assert list(registry.pools) == ["chat"]


def test_one_pool_keeps_bare_names_and_takes_its_qualified_form() -> None:
    """An unqualified registry names servers bare, as before, and also finds `default/NAME`."""
    registry = Registry(CheckConfig())
    registry.add(ServerConfig("b1", "127.0.0.1", 9001), 0.0, at_start=True)
    assert list(registry.servers) == ["b1"] and registry.get("default/b1").name == "b1"
    with pytest.raises(NotFound, match="no server named 'b9'"):
        registry.get("b9")


def test_the_last_server_of_a_pool_nothing_sends_to_is_removed_without_force() -> None:
    """The interlock guards pools in use: once no route or default sends to a pool, emptying it takes nothing away;
    a live connection is still refused."""
    registry = pools(chat=["n1"], spare=["s1"], old=["o1"])
    with pytest.raises(Conflict):
        registry.remove("spare/s1")  # "in use" until the engine says otherwise
    registry.pool_in_use = lambda pool: pool == "chat"
    registry.get("old/o1").active = 1
    with pytest.raises(Conflict) as live:
        registry.remove("old/o1")
    assert "1 live connection(s)" in live.value.message
    registry.remove("spare/s1")
    with pytest.raises(Conflict):
        registry.remove("chat/n1")
    assert list(registry.servers) == ["chat/n1", "old/o1"]
