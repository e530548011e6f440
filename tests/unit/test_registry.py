"""The pool's state rules: admin state apart from health, validation, interlocks and the events each change makes."""

from __future__ import annotations

import pytest

from proxy_core.checkspec import CheckConfig
from proxy_core.config import ServerConfig
from proxy_core.errors import BadRequest, Conflict, NotFound
from proxy_core.events import StateChanged
from proxy_core.health import CheckResult
from proxy_core.registry import Registry


def pool(*names: str, check: CheckConfig | None = None) -> Registry:
    registry = Registry(check or CheckConfig())
    for i, name in enumerate(names):
        registry.add(ServerConfig(name, "127.0.0.1", 9001 + i), 0.0, at_start=True)
    return registry


def test_configured_servers_start_up_runtime_ones_down() -> None:
    """Configured servers serve at once (HAProxy); runtime additions wait for `rise` passes (nginx check)."""
    registry = pool("a")
    server, events = registry.add(ServerConfig("b", "127.0.0.1", 9100), 1.0)
    assert registry.get("a").state == "up"
    assert server.state == "down" and server not in registry.eligible
    assert isinstance(events[0], StateChanged) and "up after 2 passing checks" in events[0].reason
    for _ in range(2):
        registry.record_check("b", CheckResult(True, 1.0), 2.0)
    assert server.state == "up" and server in registry.eligible


def test_checks_off_means_up() -> None:
    """With checks off a runtime-added server is up at once."""
    registry = pool("a", check=CheckConfig(type="none"))
    server, _ = registry.add(ServerConfig("b", "127.0.0.1", 9100), 1.0)
    assert server.state == "up"


@pytest.mark.parametrize("check", [CheckConfig(), CheckConfig(type="none")])
def test_unresolved_server_starts_down_with_the_reason(check: CheckConfig) -> None:
    """A configured server whose host did not resolve starts down, its last check saying why, and rises normally."""
    registry = pool("a", check=check)
    server, events = registry.add(
        ServerConfig("b", "nohost.invalid", 80), 1.0, at_start=True, unresolved="cannot resolve nohost.invalid"
    )
    health = server.health.to_dict()
    assert server.state == "down" and server not in registry.eligible
    assert (health["last_result"], health["last_failure"]) == ("fail", "cannot resolve nohost.invalid")
    assert isinstance(events[0], StateChanged) and "cannot resolve nohost.invalid" in events[0].reason
    for _ in range(check.rise):
        registry.record_check("b", CheckResult(True, 1.0), 2.0)
    assert server.state == "up" and server in registry.eligible


@pytest.mark.parametrize(
    ("config", "error", "fragment"),
    [
        (ServerConfig("a", "127.0.0.1", 9999), Conflict, "already exists"),
        (ServerConfig("z", "127.0.0.1", 9001), Conflict, "already in the pool as 'a'"),
        (ServerConfig("../etc", "127.0.0.1", 9999), BadRequest, "invalid server name"),
        (ServerConfig("z", "127.0.0.1", 0), BadRequest, "invalid port"),
        (ServerConfig("z", "127.0.0.1", 9999, weight=300), BadRequest, "0..256"),
    ],
)
def test_add_refuses_bad_input_and_changes_nothing(config: ServerConfig, error: type[Exception], fragment: str) -> None:
    """A duplicate or invalid server is refused with a clear error, and the pool is unchanged."""
    registry = pool("a", "b")
    with pytest.raises(error, match=fragment):
        registry.add(config, 1.0)
    assert list(registry.servers) == ["a", "b"]


def test_drain_undrain_keeps_health_apart() -> None:
    """Draining takes a server out of the eligible set; undrain restores it; health is untouched."""
    registry = pool("a", "b")
    server, events = registry.drain("a", 30.0, 10.0)
    assert server.state == "draining" and server.health.status == "up"
    assert server.drain_deadline == 40.0
    assert [s.name for s in registry.eligible] == ["b"]
    assert isinstance(events[0], StateChanged) and events[0].new == "draining"
    server, events = registry.undrain("a")
    assert server.state == "up" and server.drain_started is None
    assert [s.name for s in registry.eligible] == ["a", "b"]
    with pytest.raises(Conflict, match="not draining"):
        registry.undrain("a")


def test_last_eligible_server_interlock() -> None:
    """Draining, disabling, zero weight or removing the last eligible server is refused unless forced."""
    registry = pool("a", "b")
    registry.disable("b")
    for attempt in (
        lambda: registry.drain("a", None, 1.0),
        lambda: registry.disable("a"),
        lambda: registry.set_weight("a", 0),
        lambda: registry.remove("a"),
    ):
        with pytest.raises(Conflict, match="no eligible server"):
            attempt()
    assert registry.get("a").state == "up" and registry.get("a").weight == 1
    server, _ = registry.drain("a", None, 1.0, force=True)
    assert server.state == "draining" and registry.eligible == ()


def test_remove_refused_with_live_connections() -> None:
    """A server with live connections is removed only when forced."""
    registry = pool("a", "b")
    registry.get("a").active = 2
    with pytest.raises(Conflict, match="2 live connection"):
        registry.remove("a")
    server, events = registry.remove("a", force=True)
    assert server.removed and "a" not in registry.servers
    assert isinstance(events[0], StateChanged) and events[0].new == "removed"
    with pytest.raises(NotFound):
        registry.remove("a")


def test_weight_and_share() -> None:
    """Weights are absolute and the share is weight over the eligible total."""
    registry = pool("a", "b")
    registry.set_weight("b", 3)
    shares = {s["name"]: s["share"] for s in registry.snapshot()}
    assert shares == {"a": 0.25, "b": 0.75}
    with pytest.raises(BadRequest):
        registry.set_weight("b", -1)


def test_health_transitions_emit_state_events() -> None:
    """`fall` failures take a server down with the reason; the effective state follows admin precedence."""
    registry = pool("a", "b", check=CheckConfig(fall=2))
    registry.record_check("a", CheckResult(True, 0.5), 1.0)
    assert registry.record_check("a", CheckResult(False, None, "connection refused"), 2.0) == []
    events = registry.record_check("a", CheckResult(False, None, "connection refused"), 3.0)
    assert isinstance(events[0], StateChanged)
    assert (events[0].old, events[0].new) == ("up", "down")
    assert "connection refused" in events[0].reason
    registry.disable("a")
    assert registry.get("a").state == "disabled"


def test_passive_failures_mark_down() -> None:
    """Consecutive connect failures from traffic mark a server down (nginx max_fails); 0 turns it off."""
    registry = pool("a", "b", check=CheckConfig(max_fails=2))
    server = registry.get("a")
    assert registry.record_connect_failure(server, "connection refused", 1.0) == []
    events = registry.record_connect_failure(server, "connection refused", 2.0)
    assert server.state == "down" and events and server.connect_failures == 2
    off = pool("a", check=CheckConfig(max_fails=0))
    for _ in range(5):
        off.record_connect_failure(off.get("a"), "connection refused", 1.0)
    assert off.get("a").state == "up"
