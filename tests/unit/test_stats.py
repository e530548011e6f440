"""The status page and metrics as pure functions: the nginx check module's layouts, filters and Prometheus text."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy_core import stats
from proxy_core.checkspec import CheckConfig
from proxy_core.config import ServerConfig
from proxy_core.health import CheckResult
from proxy_core.registry import Registry


def snapshot() -> dict[str, Any]:
    """A status dict shaped by the real Registry: b1 up, b2 down (4 failures), b3 disabled, b4 draining."""
    check = CheckConfig(type="http", rise=2, fall=3)
    registry = Registry(check)
    for i, name in enumerate(("b1", "b2", "b3", "b4")):
        registry.add(ServerConfig(name, "127.0.0.1", 8001 + i, weight=i + 1), 0.0, at_start=True)
    for _ in range(3):
        registry.record_check("b1", CheckResult(True, 2.5), 1.0)
    for _ in range(4):
        registry.record_check("b2", CheckResult(False, None, "connection refused"), 1.0)
    registry.disable("b3")
    registry.drain("b4", 30.0, 1.0)
    registry.get("b1").active = 2
    registry.get("b1").total = 9
    return {
        "engine": {
            "version": "0.1.0",
            "pid": 42,
            "started": 1000.0,
            "uptime_s": 75.0,
            "balance": "round_robin",
            "check": {"type": check.type, "path": "/", "interval_ms": 3000, "rise": 2, "fall": 3, "timeout_ms": 1000},
        },
        "listeners": [{"address": "127.0.0.1:8000", "active": 2, "total": 9}],
        "totals": {"active": 2, "total": 9, "connect_failures": 1, "bytes_in": 10, "bytes_out": 20,
                   "handshakes": 9, "dropped_events": 0, "last_seq": 12},
        "servers": registry.snapshot(),
    }  # fmt: skip


def test_json_layout_and_fields() -> None:
    """JSON has the check module's keys, in its order, one server per line, `name` the address, then `server_name`."""
    text = stats.render_json(snapshot())
    data = json.loads(text)["servers"]
    assert data["total"] == 4 and data["generation"] == 1
    nginx = ["index", "upstream", "name", "status", "rise", "fall", "type", "port"]
    assert list(data["server"][0]) == [*nginx, "server_name"]
    assert data["server"][0] == {
        "index": 0, "upstream": "websockets", "name": "127.0.0.1:8001", "status": "up",
        "rise": 3, "fall": 0, "type": "http", "port": 0, "server_name": "b1",
    }  # fmt: skip
    assert [s["server_name"] for s in data["server"]] == ["b1", "b2", "b3", "b4"]
    assert data["server"][1]["status"] == "down" and data["server"][1]["fall"] == 4
    assert text.startswith('{"servers": {\n  "total": 4,\n  "generation": 1,\n  "server": [\n    {"index": 0, ')
    assert text.endswith("}\n  ]\n}}\n")


@pytest.mark.parametrize(("only", "indexes"), [("up", [0, 2, 3]), ("down", [1]), (None, [0, 1, 2, 3])])
def test_status_filter_keeps_global_index_and_valid_json(only: str | None, indexes: list[int]) -> None:
    """`?status=` filters on health, keeps global indexes, counts `total` after the filter, never a trailing comma."""
    data = json.loads(stats.render_json(snapshot(), only))["servers"]
    assert [s["index"] for s in data["server"]] == indexes
    assert data["total"] == len(indexes)
    assert not stats.render_json(snapshot(), only).count(",\n  ]")


def test_csv_has_no_header_and_eight_columns() -> None:
    """CSV: `index,upstream,name,status,rise,fall,type,port`, one line per server, no header."""
    text = stats.render_csv(snapshot())
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == ["0", "websockets", "127.0.0.1:8001", "up", "3", "0", "http", "0"]
    assert len(lines) == 4 and all(len(line) == 8 for line in lines)
    assert stats.render_csv(snapshot(), "down") == "1,websockets,127.0.0.1:8002,down,0,4,http,0\n"


def test_csv_empty_result_is_empty() -> None:
    """A filter that keeps nothing gives an empty body, as the check module does."""
    status = snapshot()
    status["servers"] = []
    assert stats.render_csv(status) == ""
    assert json.loads(stats.render_json(status))["servers"] == {"total": 0, "generation": 1, "server": []}


def test_html_refreshes_escapes_and_colours() -> None:
    """The HTML page reloads itself every 3 s, marks rows by state and escapes what it shows."""
    status = snapshot()
    status["servers"][1]["health"]["last_failure"] = "<script>alert(1)</script>"
    page = stats.render_html(status)
    assert '<meta http-equiv="refresh" content="3">' in page
    assert "<th>Index</th><th>Upstream</th><th>Name</th><th>Status</th><th>Rise counts</th>" in page
    assert "Check upstream server number: 4, generation: 1" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    rows = [line for line in page.splitlines() if line.startswith("  <tr") and "<td>" in line]
    assert [r.split(">", 1)[0] for r in rows] == [
        "  <tr",
        '  <tr bgcolor="#FF0000"',
        '  <tr bgcolor="#C0C0C0"',
        '  <tr bgcolor="#FFFF00"',
    ]
    assert "down (going up" not in page and "<td>up (going down" not in page


def test_query_rules_follow_the_check_module() -> None:
    """`format` and `status` are case-insensitive; unknown values are ignored (HTML, no filter)."""
    assert stats.parse_query("JSON", "Down") == ("json", "down")
    assert stats.parse_query("xml", "sideways") == ("html", None)
    assert stats.parse_query(None, None) == ("html", None)
    body, content_type = stats.render_page(snapshot(), "csv")
    assert content_type == "text/plain" and body.startswith("0,websockets")


def test_metrics_parse_and_carry_every_server() -> None:
    """The Prometheus text parses; per-server series carry server and address labels and scaled latency."""
    families = {f.name: f for f in text_string_to_metric_families(stats.render_metrics(snapshot()).decode())}
    up = {s.labels["server"]: s.value for s in families["wsproxy_server_up"].samples}
    assert up == {"b1": 1.0, "b2": 0.0, "b3": 1.0, "b4": 1.0}
    active = {s.labels["server"]: s.value for s in families["wsproxy_server_active_connections"].samples}
    assert active["b1"] == 2.0
    total = [s for s in families["wsproxy_server_connections"].samples if s.name.endswith("_total")]
    assert {s.labels["server"]: s.value for s in total}["b1"] == 9.0
    latency = {s.labels["server"]: s.value for s in families["wsproxy_server_check_latency_seconds"].samples}
    assert latency["b1"] == pytest.approx(0.0025) and "b2" not in latency
    state = {(s.labels["server"], s.labels["state"]): s.value for s in families["wsproxy_server_state"].samples}
    assert state[("b3", "disabled")] == 1.0 and state[("b3", "up")] == 0.0 and state[("b4", "draining")] == 1.0
    assert families["wsproxy_server_received_bytes"].type == "counter"
    assert [s.labels["version"] for s in families["wsproxy_build_info"].samples] == ["0.1.0"]


def test_every_metric_field_is_in_the_table() -> None:
    """One table: each per-server metric comes from a FIELDS entry, and nginx fields lead in their order."""
    assert [f.key for f in stats.NGINX_FIELDS] == [
        "index",
        "upstream",
        "name",
        "status",
        "rise",
        "fall",
        "type",
        "port",
    ]
    assert stats.FIELDS[: len(stats.NGINX_FIELDS)] == stats.NGINX_FIELDS
    names = {f"wsproxy_{f.metric}" for f in stats.FIELDS if f.metric}
    families = {f.name for f in text_string_to_metric_families(stats.render_metrics(snapshot()).decode())}
    assert names <= families


def two_pools() -> dict[str, Any]:
    """The snapshot's servers split into pools chat (b1, b2) and api (b3, b4), with one route and refusals."""
    status = snapshot()
    for server in status["servers"]:
        server["pool"] = "chat" if server["name"] in ("b1", "b2") else "api"
    status["pools"] = [
        {"name": "chat", "balance": "round_robin", "servers": 2, "up": 1, "active": 2, "total": 9, "default_for": []},
        {"name": "api", "balance": "least_conn", "servers": 2, "up": 0, "active": 0, "total": 0, "default_for": []},
    ]
    status["routes"] = [{"index": 0, "listener": None, "host": "chat.example.com", "path_prefix": None, "sni": None,
                         "pool": "chat", "matched": 9}]  # fmt: skip
    status["unrouted"] = {"not_found": 3, "misdirected": 1}
    return status


def test_upstream_is_the_pool_or_the_seeds_name() -> None:
    """nginx's upstream field names the pool; one pool named default keeps `websockets`, a named one its name."""
    data = json.loads(stats.render_json(two_pools()))
    assert [row["upstream"] for row in data["servers"]["server"]] == ["chat", "chat", "api", "api"]
    single = snapshot()
    single["pools"] = [{"name": "default"}]
    assert {row[1] for row in csv.reader(io.StringIO(stats.render_csv(single)))} == {"websockets"}
    for server in single["servers"]:
        server["pool"] = "chat"
    assert {row[1] for row in csv.reader(io.StringIO(stats.render_csv(single)))} == {"chat"}


def test_html_groups_servers_under_their_pool() -> None:
    """The HTML page heads each pool's rows with its line; the engine's indexes are kept."""
    page = stats.render_html(two_pools())
    chat, api = page.index("pool chat (round_robin): 1/2 up"), page.index("pool api (least_conn): 0/2 up")
    assert chat < page.index("127.0.0.1:8002") < api < page.index("127.0.0.1:8004")


def test_metrics_are_labelled_with_the_pool_and_count_routes() -> None:
    """Every server series has a pool label; pools, routes and unrouted requests have series of their own."""
    families = {f.name: f for f in text_string_to_metric_families(stats.render_metrics(two_pools()).decode())}
    active = {s.labels["server"]: s.labels["pool"] for s in families["wsproxy_server_active_connections"].samples}
    assert active == {"b1": "chat", "b2": "chat", "b3": "api", "b4": "api"}
    up = {s.labels["pool"]: s.value for s in families["wsproxy_pool_servers_up"].samples}
    assert up == {"chat": 1.0, "api": 0.0}
    assert [(s.labels, s.value) for s in families["wsproxy_route_matched"].samples] == [
        ({"route": "0", "pool": "chat"}, 9.0)
    ]
    unrouted = {s.labels["status"]: s.value for s in families["wsproxy_unrouted"].samples}
    assert unrouted == {"404": 3.0, "421": 1.0}
