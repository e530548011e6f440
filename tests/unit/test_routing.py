"""Route matching and pool-qualified names: tables of (routes, request) -> pool or status."""

from __future__ import annotations

import pytest

from proxy_core.errors import BadRequest, NotFound
from proxy_core.naming import qualified, resolve
from proxy_core.routing import (
    MISDIRECTED,
    NOT_FOUND,
    Decision,
    Route,
    RouteTable,
    decide,
    host_name,
    name_matches,
    path_matches,
    plan_listener,
)

ROUTES = [
    Route("chat", host="chat.example.com"),
    Route("api", host="*.example.com", path_prefix="/api"),
    Route("notify", path_prefix="/notify"),
    Route("tenants", sni="*.tenants.example.net"),
    Route("internal", listener="127.0.0.1:9443"),
]


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("Chat.Example.COM", "chat.example.com"),
        ("chat.example.com:8443", "chat.example.com"),
        ("chat.example.com.", "chat.example.com"),
        ("[::1]:8000", "[::1]"),
        ("[::1]", "[::1]"),
        ("10.0.0.1:80", "10.0.0.1"),
        ("", None),
        (None, None),
    ],
)
def test_host_name(value: str | None, name: str | None) -> None:
    """Host headers and SNI compare case-insensitively, without the port or a trailing dot."""
    assert host_name(value) == name


@pytest.mark.parametrize(
    ("pattern", "name", "ok"),
    [
        ("chat.example.com", "chat.example.com", True),
        ("chat.example.com", "www.chat.example.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "badexample.com", False),
        ("*.Example.com", "a.example.com", True),
        ("chat.example.com", None, False),
    ],
)
def test_name_patterns(pattern: str, name: str | None, ok: bool) -> None:
    """Exact names and `*.domain` (any name below it, never the apex or a look-alike)."""
    assert name_matches(pattern, name) is ok


@pytest.mark.parametrize(
    ("prefix", "path", "ok"),
    [
        ("/chat", "/chat", True),
        ("/chat", "/chat/room/1", True),
        ("/chat", "/chat?transport=polling", True),
        ("/chat", "/chatroom", False),
        ("/chat/", "/chat/x", True),
        ("/chat/", "/chat", False),
        ("/", "/anything", True),
        ("/chat", None, False),
    ],
)
def test_path_prefix_is_segment_aware(prefix: str, path: str | None, ok: bool) -> None:
    """ "/chat" takes /chat and what is below it, not /chatroom; a prefix ending in / is a plain prefix."""
    assert path_matches(prefix, path) is ok


@pytest.mark.parametrize(
    ("request_", "pool", "route"),
    [
        ({"host": "chat.example.com", "path": "/socket.io/"}, "chat", 0),
        ({"host": "CHAT.example.com:443", "path": "/api/x"}, "chat", 0),  # first match wins
        ({"host": "www.example.com", "path": "/api/v1"}, "api", 1),
        ({"host": "www.example.com", "path": "/apix"}, "web", None),  # default pool
        ({"host": "other.org", "path": "/notify/stream"}, "notify", 2),
        ({"sni": "acme.tenants.example.net"}, "tenants", 3),  # passthrough: SNI only
        ({}, "web", None),  # raw TCP: the listener's default
    ],
)
def test_first_matching_route_wins(request_: dict[str, str], pool: str, route: int | None) -> None:
    """Routes are tried in order; every condition of a route must hold; otherwise the listener's default pool."""
    decision = decide(ROUTES, "0.0.0.0:443", "web", **request_)  # type: ignore[arg-type]
    assert (decision.pool, decision.route, decision.status) == (pool, route, None)


def test_listener_condition() -> None:
    """A route for one listener does not catch another's connections."""
    assert decide(ROUTES, "127.0.0.1:9443", None).pool == "internal"
    assert decide(ROUTES, "0.0.0.0:443", None).status == NOT_FOUND


def test_no_route_and_no_default_is_404_with_a_reason() -> None:
    """Nothing matches and the listener has no default pool: 404 naming what was asked for."""
    decision = decide(ROUTES, "0.0.0.0:80", None, host="nowhere.org", path="/x")
    assert decision.pool is None and decision.status == NOT_FOUND
    assert "nowhere.org" in decision.reason and "/x" in decision.reason


def test_sni_and_host_disagreeing_is_421_when_terminated() -> None:
    """On a TLS connection wsproxy decrypted, a Host for another site than the SNI is misdirected (421)."""
    decision = decide(ROUTES, "0.0.0.0:443", "web", host="chat.example.com", sni="api.example.com", terminated=True)
    assert decision.status == MISDIRECTED and decision.pool is None
    same = decide(ROUTES, "0.0.0.0:443", "web", host="chat.example.com:443", sni="chat.example.com", terminated=True)
    assert same.pool == "chat"
    # Not terminated (plaintext, or the SNI of a passthrough): no such check.
    assert decide(ROUTES, "0.0.0.0:443", "web", host="chat.example.com", sni="api.example.com").pool == "chat"


POOLS = {"chat": ["n1", "n2"], "notify": ["n2", "n3"], "websockets": ["node1"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chat/n2", ("chat", "n2")),
        ("notify/n2", ("notify", "n2")),
        ("n1", ("chat", "n1")),
        ("node1", ("websockets", "node1")),
    ],
)
def test_resolve_names(text: str, expected: tuple[str, str]) -> None:
    """`POOL/NAME` always; a bare name when exactly one pool has it."""
    assert resolve(text, POOLS) == expected


def test_ambiguous_bare_name_names_the_candidates() -> None:
    """A bare name in two pools is refused with both qualified names, so the operator can pick."""
    with pytest.raises(BadRequest, match=r"'n2' is in several pools: chat/n2, notify/n2"):
        resolve("n2", POOLS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x9", "no server named 'x9'"),
        ("mail/n1", "no pool named 'mail'"),
        ("chat/n3", "no server named 'n3' in pool 'chat'"),
    ],
)
def test_unknown_names(text: str, message: str) -> None:
    """Unknown pools and servers are 404s that say which part is unknown."""
    with pytest.raises(NotFound, match=message):
        resolve(text, POOLS)
    assert qualified("chat", "n1") == "chat/n1"


@pytest.mark.parametrize(
    ("routes", "listener", "default", "tls", "plan"),
    [
        ([], "127.0.0.1:8000", "default", False, None),  # one pool, no routes: today's path
        ([], "127.0.0.1:8000", "api", False, (False, False)),  # a default other than the first pool
        ([Route("chat", host="chat.example.com")], "127.0.0.1:8000", "api", False, (True, False)),
        ([Route("chat", path_prefix="/c")], "127.0.0.1:8000", None, False, (True, False)),
        ([Route("t", sni="*.t.example")], "127.0.0.1:8443", "default", False, (False, True)),
        ([Route("t", sni="*.t.example")], "127.0.0.1:8443", "default", True, (False, False)),
        ([Route("chat", host="c", listener="127.0.0.1:9")], "127.0.0.1:8000", "default", False, None),
    ],
)
def test_listener_plans(
    routes: list[Route], listener: str, default: str | None, tls: bool, plan: tuple[bool, bool] | None
) -> None:
    """Only a listener with Host/path routes waits for the head; a passthrough one with SNI routes peeks."""
    result = plan_listener(routes, listener, default, "default", tls)
    assert (None if result is None else (result.wait_head, result.peek_sni)) == plan


def route_matches(route: Route, listener: str, host: str | None, path: str | None, sni: str | None) -> bool:
    """The rule for one route as the README states it: every condition given must hold."""
    if route.listener is not None and route.listener != listener:
        return False
    if route.host is not None and not name_matches(route.host, host):
        return False
    if route.path_prefix is not None and not path_matches(route.path_prefix, path):
        return False
    return route.sni is None or name_matches(route.sni, sni)


def reference_decide(
    routes: tuple[Route, ...], listener: str, default: str | None, host: str | None, path: str | None, sni: str | None
) -> Decision:
    """The rule as written: each route's conditions in order, through the table-tested name_matches and
    path_matches, nothing compiled or cached; RouteTable must decide exactly as this does."""
    name, server_name = host_name(host), host_name(sni)
    for index, route in enumerate(routes):
        if route_matches(route, listener, name, path, server_name):
            return Decision(route.pool, route=index)
    if default is not None:
        return Decision(default)
    what = f"host {name}" if name else "this connection"
    return Decision(None, status=NOT_FOUND, reason=f"no route for {what}{f' path {path}' if path else ''}")


def test_route_table_decides_as_the_rule_reads_over_every_combination() -> None:
    """Hosts (case, port, trailing dot, wildcard depth), paths (segments, query, fragment), SNI and listeners,
    against routes of every kind: the compiled table and the rule agree on every one, cache or not."""
    routes = (
        *ROUTES,
        Route(pool="dir", path_prefix="/static/"),
        Route(pool="deep", host="*.A.Example.org.", path_prefix="/x"),
        Route(pool="sni", sni="*.tls.example.com"),
    )
    hosts = [None, "", "chat.example.com", "CHAT.example.com:8443", "chat.example.com.", "a.b.a.example.org",
             "a.example.org", "[::1]:80", "api.example.com", "x.tls.example.com"]  # fmt: skip
    paths = [None, "/", "/chat", "/chat/", "/chatroom", "/chat?x=1", "/chat#f", "/static", "/static/a", "/x/y", "/x?q"]
    snis = [None, "chat.example.com", "x.tls.example.com", "api.example.com"]
    listeners = ["0.0.0.0:443", "127.0.0.1:9443", "0.0.0.0:80"]
    table = RouteTable(routes)
    for listener in listeners:
        for host in hosts:
            for path in paths:
                for sni in snis:
                    for _ in range(2):  # the second time from the names' cache
                        got = table.decide(listener, "web", host=host, path=path, sni=sni)
                        assert got == reference_decide(routes, listener, "web", host, path, sni), (host, path, sni)
                    nowhere = table.decide(listener, None, host=host, path=path, sni=sni)
                    assert nowhere == reference_decide(routes, listener, None, host, path, sni)
