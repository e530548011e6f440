"""The HAProxy runtime API parsers and the model they build, on outputs captured from HAProxy 2.6.12."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy_core.sources import haproxy_parse as hp
from proxy_core.sources.history import RateHistory

DATA = Path(__file__).parent / "data" / "haproxy"
NOW = 1_800_000_000.0


def read(name: str) -> str:
    return (DATA / name).read_text()


def status(stat: str, state: str = "servers_state_up.txt", sess: str = "sess_two.txt") -> dict:
    return hp.build_status(
        hp.parse_stat_typed(read(stat)),
        hp.parse_servers_state(read(state)),
        hp.parse_sess(read(sess)),
        hp.parse_info(read("info.txt")),
        NOW,
        "/tmp/admin.sock",
    )


def server(data: dict, name: str) -> dict:
    return next(s for s in data["servers"] if s["name"] == name)


@pytest.mark.parametrize(
    ("stat", "state_file", "name", "state", "admin", "progress", "haproxy_status"),
    [
        ("stat_up.txt", "servers_state_up.txt", "be/s2", "up", "active", "", "UP"),
        ("stat_going_down.txt", "servers_state_up.txt", "be/s2", "up", "active", "going down 1/3", "UP 2/3"),
        ("stat_down.txt", "servers_state_up.txt", "be/s2", "down", "active", "", "DOWN"),
        ("stat_going_up.txt", "servers_state_up.txt", "be/s2", "down", "active", "going up 1/2", "DOWN 1/2"),
        ("stat_drain.txt", "servers_state_drain.txt", "be/s1", "draining", "draining", "", "DRAIN"),
        ("stat_maint.txt", "servers_state_maint.txt", "be/s1", "disabled", "disabled", "", "MAINT"),
        ("stat_nolb.txt", "servers_state_up.txt", "be/s1", "draining", "draining", "", "NOLB"),
    ],
)
def test_server_states(
    stat: str, state_file: str, name: str, state: str, admin: str, progress: str, haproxy_status: str
) -> None:
    """Each HAProxy status string (UP, UP 2/3, DOWN, DOWN 1/2, DRAIN, MAINT, NOLB) maps to the model's state."""
    s = server(status(stat, state_file), name)
    assert (s["state"], s["admin"], s["progress"], s["haproxy_status"]) == (state, admin, progress, haproxy_status)


def test_check_fields_and_counts() -> None:
    """A DOWN server carries the check's status, description and reason; counts and address come through."""
    data = status("stat_down.txt")
    s2 = server(data, "be/s2")
    assert s2["health"]["last_result"] == "fail"
    assert s2["health"]["check_status"] == "L4CON"
    assert "Connection refused" in s2["health"]["last_failure"]
    assert (s2["host"], s2["port"], s2["pool"]) == ("127.0.0.1", 18102, "be")
    s1 = server(data, "be/s1")
    assert s1["health"]["last_result"] == "ok" and s1["health"]["rise"] == 2 and s1["health"]["fall"] == 3
    assert data["engine"]["kind"] == "haproxy" and data["engine"]["version"].startswith("2.6")
    assert data["engine"]["balance"] == "roundrobin"
    assert data["listeners"][0]["address"] == "fe"


def test_share_counts_only_eligible_servers() -> None:
    """Share is weight over the eligible servers of the same backend (a DOWN server gets 0)."""
    down = status("stat_down.txt")
    assert server(down, "be/s1")["share"] == 1.0 and server(down, "be/s2")["share"] == 0.0
    up = status("stat_up.txt")
    assert server(up, "be/s1")["share"] == pytest.approx(1 / 6, abs=1e-3)


def test_sessions_skip_cli_and_keep_ids() -> None:
    """`show sess` gives one entry per client session with its id; the CLI's own session is left out."""
    sessions = hp.parse_sess(read("sess_two.txt"))
    assert [s["server"] for s in sessions] == ["be/s2", "be/s1"]
    assert all(s["id"].startswith("0x") and s["client"].startswith("127.0.0.1:") for s in sessions)


def test_state_events_between_polls() -> None:
    """A change between two polls is a `state` event with the check's reason; appeared/vanished servers too."""
    up, down = status("stat_up.txt"), status("stat_down.txt")
    events = hp.state_events(up, down, NOW)
    assert [(e["type"], e["server"], e["old"], e["new"]) for e in events] == [("state", "be/s2", "up", "down")]
    assert "Layer4 connection problem" in events[0]["reason"]
    assert hp.state_events(None, up, NOW) == []
    fewer = {**down, "servers": [server(down, "be/s1")]}
    assert [(e["action"], e["server"]) for e in hp.state_events(up, fewer, NOW)] == [("remove", "be/s2")]


@pytest.mark.parametrize(
    "text", ["", "Unknown command.\n", "F.2.0.0.pxname.1:KNS:str\n", "garbage line with no fields\n"]
)
def test_garbage_is_a_parse_error(text: str) -> None:
    """An answer that is not the table asked for is a ParseError naming the command, not a crash."""
    with pytest.raises(hp.ParseError):
        if text:
            hp.parse_stat_typed(text)
        else:
            hp.parse_info(text)
    with pytest.raises(hp.ParseError):
        hp.parse_servers_state(text)


def test_rate_history_per_second_deltas() -> None:
    """Rates are per-second deltas of total sessions and bytes; active is the count."""
    history = RateHistory()
    first = status("stat_up.txt")
    history.add(first, NOW)
    later = {**first, "servers": [{**s, "total": s["total"] + 4, "active": 2} for s in first["servers"]]}
    history.add(later, NOW + 2.0)
    rates = history.as_json()
    assert rates["servers"]["be/s1"]["connections"] == [2.0]
    assert rates["servers"]["be/s1"]["active"] == [2.0]
    assert rates["total"]["connections"] == [4.0]


def test_backend_rows_become_pools() -> None:
    """Each BACKEND row is a POOL: its name, HAProxy's algorithm as balance, servers up/total, active and total."""
    data = status("stat_down.txt")
    assert [p["name"] for p in data["pools"]] == ["be"]
    pool = data["pools"][0]
    assert pool["balance"] == "roundrobin"
    assert pool["servers"] == len(data["servers"])
    assert pool["up"] == sum(1 for s in data["servers"] if s["state"] == "up")
    assert all(s["pool"] == "be" for s in data["servers"])
