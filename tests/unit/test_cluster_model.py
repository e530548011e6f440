"""The fleet's pure model: stream ids, change payloads, the store URL shown without a password, the fleet view."""

from __future__ import annotations

import pytest

from proxy_core.cluster.model import (
    InstanceRow,
    all_applied,
    applied_at_least,
    decode_change,
    encode_change,
    fleet_view,
    holders,
    instance_rows,
    parse_id,
    redact_url,
)
from proxy_core.config import parse_cluster
from proxy_core.errors import ConfigError


@pytest.mark.parametrize(
    ("entry", "expected"),
    [(None, (0, 0)), ("", (0, 0)), ("1700000000000-0", (1700000000000, 0)), ("5-12", (5, 12)), ("x-y", (0, 0))],
)
def test_parse_id(entry: str | None, expected: tuple[int, int]) -> None:
    """Stream ids compare as (ms, seq) numbers, not as text; nothing applied sorts first."""
    assert parse_id(entry) == expected


def test_applied_at_least_compares_numbers_not_text() -> None:
    """'10-0' is after '9-5' although it sorts before it as text."""
    assert applied_at_least("10-0", "9-5")
    assert not applied_at_least("9-5", "10-0")
    assert applied_at_least("9-5", "9-5")
    assert not applied_at_least(None, "1-0")


def test_change_round_trip_names_the_default_pool() -> None:
    """A change carries its pool (one today: default), origin and fields; garbage decodes to None, never raises."""
    change = decode_change(encode_change("weight", "b1", "n1", weight=3))
    assert change == {"op": "weight", "pool": "default", "name": "b1", "origin": "n1", "weight": 3}
    for garbage in ("", "{", "[]", '{"op": "explode"}', b"\xff"):
        assert decode_change(garbage) is None
    with pytest.raises(ValueError):
        encode_change("explode", None, "n1")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:hunter2@10.0.0.5:6379/1", "redis://10.0.0.5:6379/1"),
        ("rediss://app:hunter2@cache.example:6380/0", "rediss://app:***@cache.example:6380/0"),
        ("redis://:pw@[::1]:6379/0", "redis://[::1]:6379/0"),
    ],
)
def test_redact_url_never_shows_the_password(url: str, shown: str) -> None:
    """Logs, status and errors show the store without its password."""
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url)


def test_parse_cluster_table() -> None:
    """`[cluster]` takes url, instance and password_file; a bad one is named, the password kept out of the error."""
    config = parse_cluster({"url": "redis://127.0.0.1:6379/0", "instance": "n1", "password_file": "/run/pw"})
    assert (config.url, config.instance, config.password_file) == ("redis://127.0.0.1:6379/0", "n1", "/run/pw")
    with pytest.raises(ConfigError, match=r"cluster\.url") as bad:
        parse_cluster({"url": "http://:hunter2@127.0.0.1:6379"})
    assert "hunter2" not in bad.value.message
    with pytest.raises(ConfigError, match=r"cluster\.instance"):
        parse_cluster({"url": "redis://h:1/0", "instance": "no spaces"})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_cluster({"host": "x"})


def _view(name: str, applied: str, **servers: tuple[int, str]) -> dict[str, object]:
    return {
        "name": name,
        "heartbeat": 100.0,
        "applied": applied,
        "servers": [{"name": s, "active": n, "total": n, "health": h, "state": h} for s, (n, h) in servers.items()],
    }


def test_fleet_view_sums_live_instances_and_warns_of_gone_ones_and_disagreement() -> None:
    """Totals are the live instances' sum with a breakdown; a gone instance is left out with a warning; one
    instance seeing a server down while the others see it up is flagged."""
    views = {
        "n1": _view("n1", "5-0", b1=(2, "up"), b2=(0, "up")),
        "n2": _view("n2", "4-0", b1=(3, "up"), b2=(1, "down")),
    }
    rows = instance_rows({"n1": 100.0, "n2": 100.0, "n3": 90.0}, views)
    assert [(r.name, r.alive) for r in rows] == [("n1", True), ("n2", True), ("n3", False)]
    fleet = fleet_view(rows, now=101.0)
    b1, b2 = fleet["servers"]
    assert (b1["active"], b1["instances"], b1["health_disagrees"]) == (5, {"n1": 2, "n2": 3}, False)
    assert b2["health_disagrees"] and b2["active"] == 1
    assert any("n3 is gone (last heartbeat 11.0 s ago)" in w for w in fleet["warnings"])
    assert any("health of b2 disagrees (n1 sees up, n2 sees down)" in w for w in fleet["warnings"])
    assert holders(fleet, "b1") == {"n1": 2, "n2": 3}
    assert holders(fleet, "b2") == {"n2": 1}
    assert holders(fleet, "nope") == {}
    assert all_applied(fleet, "5-0") == ["n2"]
    assert all_applied(fleet, "4-0") == []


def test_fleet_view_of_a_gone_instance_without_heartbeat() -> None:
    """An instance with no recorded heartbeat is still listed, gone."""
    fleet = fleet_view([InstanceRow("n9", False, 0.0, {})], now=5.0)
    assert fleet["instances"][0]["alive"] is False and fleet["instances"][0]["heartbeat_age_s"] is None
    assert fleet["warnings"] == ["instance n9 is gone: left out of the totals"]
