"""Pure text of impact previews, rebalance plans and rebalance progress (tui/impact.py): table tests."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pytest
from tui_support import ROOT  # noqa: F401  (puts the repo on sys.path)

from tui import impact

JSON = dict[str, Any]
SERVERS = [{"name": "b1", "share": 0.5, "active": 4}, {"name": "b2", "share": 0.5, "active": 1}]


@pytest.mark.parametrize(
    ("moved", "expected"),
    [
        ({"connections": 0, "clients": 0, "from": {}}, "Moves no live connection."),
        (
            {"connections": 1, "clients": 1, "from": {"b1": {"connections": 1, "clients": 1}}},
            "Moves 1 live connection of 1 distinct client off b1.",
        ),
        (
            {
                "connections": 5,
                "clients": 3,
                "from": {"b2": {"connections": 2, "clients": 1}, "b1": {"connections": 3, "clients": 2}},
            },
            "Moves 5 live connections of 3 distinct clients, from b1 3 (2 clients), b2 2 (1 client).",
        ),
    ],
)
def test_moved_line(moved: JSON, expected: str) -> None:
    """Connections and distinct clients moved, named by server when there are several."""
    assert impact.moved_line(moved) == expected


@pytest.mark.parametrize(
    ("share_after", "expected"),
    [
        ({"b1": 1.0, "b2": 0.0}, "New connections: b1 50.0% → 100.0% · b2 50.0% → -"),
        ({"b1": 0.5, "b2": 0.5}, "New connections: b1 50.0% · b2 50.0%"),
        ({"b2": 1.0}, "New connections: b1 50.0% → gone · b2 50.0% → 100.0%"),
        ({"b1": 0.25, "b2": 0.25, "b3": 0.5}, "New connections: b1 50.0% → 25.0% · b2 50.0% → 25.0% · b3 - → 50.0%"),
    ],
)
def test_shares_line(share_after: JSON, expected: str) -> None:
    """Each server's share now → after; unchanged shares once; a removed server is "gone"."""
    assert impact.shares_line({"share_after": share_after}, SERVERS) == expected


def test_plan_text_groups_routes_and_counts_after() -> None:
    """A plan is shown by route (largest first), with skipped clients and each server's connections after."""
    moves = [
        {"client": "127.0.0.2", "from": "b1", "to": "b2", "connections": 2},
        {"client": "127.0.0.3", "from": "b1", "to": "b2", "connections": 1},
    ]
    answer = {"plan": {"moves": moves, "clients": 2, "connections": 3, "skipped_young": 1, "skipped_full": 0}}
    assert impact.plan_text(answer, SERVERS, 2.0).splitlines() == [
        "Moves 2 clients (3 connections), at most 2 clients a second; a client's connections close together.",
        "  b1 → b2: 2 clients, 3 connections",
        "Left alone: 1 client connected too recently.",
        "Connections: b1 4 → 1 · b2 1 → 4",
    ]


def test_plan_text_in_a_fleet_says_the_plan_is_the_fleets_and_this_is_one_part() -> None:
    """A fleet's dry run: a first line with the fleet's moves and how many instances share them, then the part."""
    fleet = {"policy": "least_conn", "connections": 12, "instance": "n1", "shares": {"n1": {"b1": 4}, "n2": {}}}
    answer = {"plan": {"moves": [], "clients": 0, "connections": 0}, "fleet": fleet}
    lines = impact.plan_text(answer, SERVERS, None).splitlines()
    assert lines[0] == "Fleet-wide: 12 connections move, shared by 1 instance. n1's part:"
    fleet_hash = {"policy": "ip_hash", "instance": "n2"}
    assert impact.plan_text({"plan": {}, "fleet": fleet_hash}, SERVERS, None).startswith("Fleet-wide: each instance")


def test_plan_text_nothing_to_move() -> None:
    """An empty plan says so instead of listing routes."""
    answer = {"plan": {"moves": [], "clients": 0, "connections": 0}, "impact": {"share_after": {"b1": 0.5}}}
    assert impact.plan_text(answer, SERVERS, None).splitlines()[0] == (
        "Nothing to move: every client is where the balancer places it."
    )


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (
            {"state": "running", "started": 100.0, "finished": None, "rate": 2.0},
            "rebalance running 4.0s · moved 3/9 clients (4 connections) · 6 left · 2/s",
        ),
        (
            {"state": "done", "started": 100.0, "finished": 103.0, "rate": 2.0, "reason": "balanced"},
            "rebalance done at 00:01:43 after 3.0s: balanced · moved 3/9 clients (4 connections) · 6 left",
        ),
        (
            {"state": "stopped", "started": 100.0, "finished": 101.5, "reason": "stopped by operator"},
            "rebalance stopped at 00:01:41 after 1.5s: stopped by operator"
            " · moved 3/9 clients (4 connections) · 6 left",
        ),
    ],
)
def test_progress_text(state: JSON, expected: str) -> None:
    """The progress line: elapsed time, moved of planned, left and rate; how it ended once it has."""
    rebalance = {"planned_clients": 9, "moved_clients": 3, "left_clients": 6, "moved_connections": 4, **state}
    assert impact.progress_text(rebalance, now=104.0, tz=UTC) == expected
