"""`wsproxy status` and `wsproxy events` text: columns line up, client text cannot drive the terminal."""

from __future__ import annotations

from proxy_core.cli.format import (
    clean,
    describe,
    format_event,
    format_pools,
    format_route,
    format_routes,
    format_status,
    health_label,
    last_check,
)

NOW = 1_000_000.0


def server(name: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": name, "address": "127.0.0.1:8001", "state": "up", "admin": "active", "weight": 1, "share": 0.5,
        "active": 3, "total": 10, "connect_failures": 0,
        "health": {"status": "up", "last_result": "ok", "last_latency_ms": 0.42, "last_check": NOW - 2},
    }  # fmt: skip
    base.update(fields)
    return base


def test_status_table_columns_line_up_and_show_failures() -> None:
    down = server(
        "node-long-name",
        state="down",
        progress="going up 1/2",
        health={"status": "down", "last_result": "fail", "last_check": NOW - 75, "last_failure": "connection refused"},
    )
    status = {
        "engine": {"version": "0.1", "pid": 42, "uptime_s": 3700, "balance": "round_robin",
                   "check": {"type": "tcp", "interval_ms": 3000, "rise": 2, "fall": 5}},
        "listeners": [{"address": "127.0.0.1:8000"}],
        "totals": {"active": 3, "total": 10, "connect_failures": 1},
        "servers": [server("b1"), down],
    }  # fmt: skip
    lines = format_status(status, NOW).splitlines()
    assert lines[0] == "wsproxy 0.1 pid 42, up 1h01m; listening on 127.0.0.1:8000; balance round_robin"
    assert "rise 2 fall 5" in lines[1] and "1 connect failures" in lines[1]
    header, first, second = lines[3], lines[4], lines[5]
    assert header.index("STATE") == first.index("up") == second.index("down (going up 1/2)")
    assert first.endswith("ok 0.4ms 2s ago")
    assert second.endswith("fail 1m15s ago: connection refused")


def test_control_characters_from_the_wire_are_escaped() -> None:
    assert clean("ok\x1b[2Jpwned\n") == "ok\\x1b[2Jpwned\\n"
    event = {"type": "handshake", "seq": 7, "ts": NOW, "conn": 1, "client": "127.0.0.1:5", "server": "b1",
             "kind": "http", "method": "GET", "path": "/\x1b[31mred", "status": 200, "reason": "OK",
             "latency_ms": 1.25}  # fmt: skip
    line = format_event(event)
    assert "\x1b" not in line and "/\\x1b[31mred" in line and line.endswith("200 OK 1.2ms")


def test_every_event_type_reads_as_one_line() -> None:
    events = [
        {"type": "state", "server": "b1", "old": "up", "new": "down", "reason": "5 checks failed: timeout"},
        {"type": "operator", "action": "drain", "server": "b2", "ok": False, "detail": "last eligible server"},
        {"type": "close", "conn": 3, "client": "c", "server": "b1", "closed_by": "client", "duration_s": 1.5,
         "bytes_in": 10, "bytes_out": 20, "reason": "client closed"},
        {"type": "connect_failed", "server": "b1", "client": "c", "attempt": 2, "reason": "connection refused"},
        {"type": "gap", "missed": 12},
        {"type": "future_kind", "x": 1},
    ]  # fmt: skip
    lines = [format_event({"seq": i, "ts": None, **e}) for i, e in enumerate(events)]
    assert all("\n" not in line for line in lines)
    assert lines[0].endswith("b1: up -> down (5 checks failed: timeout)")
    assert "drain b2 REFUSED: last eligible server" in lines[1]
    assert "closed by client after 1.5s, 10 B in, 20 B out (client closed)" in lines[2]
    assert "(attempt 2): connection refused" in lines[3]
    assert lines[4].endswith("12 event(s) missed") and lines[5].endswith('{"x": 1}')


def test_labels_name_admin_state_and_never_checked() -> None:
    assert health_label(server("b1", admin="draining", progress="going down 2/5")) == "up (going down 2/5), draining"
    assert last_check(server("b1", health={}), NOW) == "never"
    assert describe(server("b1")) == "b1 127.0.0.1:8001: up, weight 1, 3 active"


def test_status_groups_servers_by_pool_with_totals_and_lists_routes() -> None:
    """With several pools each pool's line (balance, up, totals, default for) heads its servers; routes follow."""
    status = {
        "engine": {"version": "0.1", "pid": 42, "uptime_s": 5, "balance": "round_robin", "check": {}},
        "listeners": [{"address": "127.0.0.1:8000"}],
        "totals": {},
        "servers": [server("chat/n1", pool="chat"), server("api/n1", pool="api"), server("chat/n2", pool="chat")],
        "pools": [
            {"name": "chat", "balance": "least_conn", "servers": 2, "up": 2, "active": 6, "total": 20,
             "default_for": [], "check": {"type": "http", "path": "/health", "interval_ms": 3000, "rise": 2,
                                          "fall": 5}},
            {"name": "api", "balance": "round_robin", "servers": 1, "up": 1, "active": 3, "total": 10,
             "default_for": ["127.0.0.1:8000"]},
            {"name": "spare", "balance": "round_robin", "servers": 0, "up": 0, "active": 0, "total": 0,
             "default_for": []},
        ],
        "routes": [{"index": 0, "listener": None, "host": "chat.example.com", "path_prefix": None, "sni": None,
                    "pool": "chat", "matched": 20}],
        "unrouted": {"not_found": 4, "misdirected": 1},
    }  # fmt: skip
    lines = format_status(status, NOW).splitlines()
    assert lines[0] == "wsproxy 0.1 pid 42, up 5s; listening on 127.0.0.1:8000"  # each pool's line says its balance
    assert lines[1].startswith("connections ")  # and its check: the top-level one is nobody's
    lines = lines[3:]
    assert lines[0].startswith("NAME") and lines[7] == ""
    assert (
        lines[1] == "pool chat (least_conn): 2/2 up, 6 active, 20 total; check http /health every 3000ms, rise 2 fall 5"
    )
    assert lines[4] == "pool api (round_robin): 1/1 up, 3 active, 10 total; default for 127.0.0.1:8000"
    assert [lines[i].split()[0] for i in (2, 3, 5)] == ["chat/n1", "chat/n2", "api/n1"]
    assert lines[6] == "pool spare (round_robin): 0/0 up, 0 active, 0 total"
    assert lines[8:] == [
        "routes (first match wins):",
        "  1: host chat.example.com -> chat, 20 matched",
        "unrouted: 4 not found (404), 1 misdirected (421)",
    ]


def test_one_pool_prints_no_pool_line() -> None:
    """A single pool's status reads exactly as before: no pool line, no routes."""
    status = {
        "engine": {"version": "0.1", "pid": 1, "uptime_s": 1, "balance": "round_robin", "check": {}},
        "listeners": [], "totals": {}, "servers": [server("b1", pool="default")],
        "pools": [{"name": "default", "balance": "round_robin", "servers": 1, "up": 1}], "routes": [],
    }  # fmt: skip
    lines = format_status(status, NOW).splitlines()
    assert len(lines) == 5 and lines[4].startswith("b1 ")


def test_one_pool_keeps_balance_in_the_header() -> None:
    """With one pool the header still says its balance, as before pools existed."""
    status = {
        "engine": {"version": "0.1", "pid": 1, "uptime_s": 1, "balance": "ip_hash", "check": {}},
        "listeners": [], "totals": {}, "servers": [], "pools": [{"name": "default", "balance": "ip_hash"}],
    }  # fmt: skip
    assert format_status(status, NOW).splitlines()[0].endswith("; balance ip_hash")


def test_routes_are_listed_by_position_with_their_names() -> None:
    """`wsproxy routes`: the 1-based position commands take, the name, the conditions, the pool and the matches."""
    routes = [
        {"position": 1, "name": "chat", "host": "chat.example.com", "pool": "chat", "matched": 3},
        {"position": 2, "name": None, "listener": "127.0.0.1:8000", "path_prefix": "/n", "pool": "n", "matched": 0},
    ]
    assert format_routes({"routes": routes, "unrouted": {"not_found": 2}}).splitlines() == [
        "1 (chat): host chat.example.com -> chat, 3 matched",
        "2: listener 127.0.0.1:8000 path_prefix /n -> n, 0 matched",
        "unrouted: 2 not found (404), 0 misdirected (421)",
    ]
    assert format_routes({"routes": []}).splitlines()[0] == "no routes: every listener sends to its default pool"
    assert format_route({"index": 4, "pool": "p", "host": "\x1b[2J"}) == "5: host \\x1b[2J -> p"


def test_pools_table_marks_added_pools_and_shows_the_check() -> None:
    """`wsproxy pools`: a row per pool, columns aligned, the check summarised, runtime pools marked."""
    pools = [
        {"name": "default", "balance": "round_robin", "servers": 2, "up": 1, "active": 4, "total": 9,
         "check": {"type": "tcp", "interval_ms": 3000, "rise": 2, "fall": 5}, "default_for": ["127.0.0.1:8000"]},
        {"name": "chat", "balance": "ip_hash", "servers": 0, "up": 0, "added": True,
         "check": {"type": "http", "path": "/health", "interval_ms": 100, "rise": 1, "fall": 3}},
    ]  # fmt: skip
    header, first, second = format_pools(pools).splitlines()
    assert header.split() == ["POOL", "BALANCE", "UP", "ACTIVE", "TOTAL", "CHECK", "DEFAULT", "FOR"]
    assert first.split()[:5] == ["default", "round_robin", "1/2", "4", "9"] and first.endswith("127.0.0.1:8000")
    assert second.startswith("chat (added)") and "http /health every 100ms, rise 1 fall 3" in second
    assert header.index("BALANCE") == first.index("round_robin") == second.index("ip_hash")
