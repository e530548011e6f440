"""Summing the workers' edge counters: nested counts add key by key, and a dead worker's stay in."""

from __future__ import annotations

from typing import Any

import pytest

from proxy_core.workers.edge import add_counters


@pytest.mark.parametrize(
    ("acc", "more", "expected"),
    [
        ({}, {"refused": 2}, {"refused": 2}),
        ({"refused": 2}, {"refused": 3, "accept_pauses": 1}, {"refused": 5, "accept_pauses": 1}),
        (
            {"listeners": {"a": {"handshake_failures": 1, "failures_by_reason": {"no shared cipher": 1}}}},
            {"listeners": {"a": {"handshake_failures": 2, "failures_by_reason": {"timeout": 2}}, "b": {"bad": 1}}},
            {
                "listeners": {
                    "a": {"handshake_failures": 3, "failures_by_reason": {"no shared cipher": 1, "timeout": 2}},
                    "b": {"bad": 1},
                }
            },
        ),
        ({"clients": {"127.0.0.2": 4}}, {"clients": {"127.0.0.2": 1, "127.0.0.3": 2}},
         {"clients": {"127.0.0.2": 5, "127.0.0.3": 2}}),
    ],
)  # fmt: skip
def test_add_counters(acc: dict[str, Any], more: dict[str, Any], expected: dict[str, Any]) -> None:
    """Ints are summed and dicts merged at every depth; what only one side has is kept."""
    add_counters(acc, more)
    assert acc == expected


def test_add_counters_leaves_its_input_alone() -> None:
    """A report added to the sums is not changed by later additions (the sums own their dicts)."""
    report = {"listeners": {"a": {"bad_headers": 1}}}
    sums: dict[str, Any] = {}
    add_counters(sums, report)
    add_counters(sums, report)
    assert report == {"listeners": {"a": {"bad_headers": 1}}} and sums["listeners"]["a"]["bad_headers"] == 2
