"""Spread closes by client: grouping, the client key, and a window position every process agrees on."""

from __future__ import annotations

import pytest

from proxy_core.spread import client_key, even_offsets, group_by_client, offset_in_window, schedule_by_client


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("127.0.0.2:53412", "127.0.0.2"),
        ("[::1]:8000", "::1"),
        ("::1:8000", "::1"),  # the relay's unbracketed form
        ("10.0.0.1:1", "10.0.0.1"),
        (None, ""),
        ("", ""),
    ],
)
def test_client_key(address: str | None, key: str) -> None:
    """The client part of an address is what ip_hash hashes: IPv4, IPv6 bracketed or not, none."""
    assert client_key(address) == key


def test_group_by_client_keeps_first_seen_order() -> None:
    """Each client's connections end up together, clients in the order their first connection came."""
    conns = ["a:1", "b:1", "a:2", "c:1", "b:2"]
    assert group_by_client(conns, client_key) == {"a": ["a:1", "a:2"], "b": ["b:1", "b:2"], "c": ["c:1"]}


def test_offset_is_stable_and_within_window() -> None:
    """A client's instant depends only on its address and the window (workers and instances agree)."""
    for i in range(200):
        client = f"127.0.0.{i}"
        offset = offset_in_window(client, 3.0)
        assert 0.0 <= offset < 3.0
        assert offset == offset_in_window(client, 3.0)
    assert offset_in_window("127.0.0.9", 0.0) == 0.0
    assert offset_in_window("127.0.0.9", -1.0) == 0.0


def test_schedule_closes_each_client_once_with_all_its_connections() -> None:
    """Every connection is scheduled exactly once, one client's all at the same delay, delays sorted."""
    conns = [f"127.0.0.{i % 25 + 2}:{40000 + i}" for i in range(100)]
    schedule = schedule_by_client(conns, client_key, 3.0)
    assert len(schedule) == 25
    assert sorted(c for _, group in schedule for c in group) == sorted(conns)
    for _, group in schedule:
        assert len({client_key(c) for c in group}) == 1
        assert len(group) == 4
    delays = [delay for delay, _ in schedule]
    assert delays == sorted(delays)


@pytest.mark.parametrize("clients", [1, 2, 8, 25, 1000])
def test_schedule_spaces_clients_evenly_over_the_window(clients: int) -> None:
    """Clients are spaced window/n apart from 0: no second of a drain sees more than its share reconnect."""
    conns = [f"10.{i // 250}.{i % 250}.1:{5000 + k}" for i in range(clients) for k in range(2)]
    delays = [delay for delay, _ in schedule_by_client(conns, client_key, 2.0)]
    assert delays == pytest.approx([i * 2.0 / clients for i in range(clients)])


def test_given_offsets_win_and_unknown_clients_fall_back_to_their_hash() -> None:
    """A supervisor's offsets place every client it knows; one it missed gets its hash position, same everywhere."""
    offsets = even_offsets(["a", "b"], 1.0)
    schedule = dict((group[0], delay) for delay, group in schedule_by_client(["a:1", "c:1"], client_key, 1.0, offsets))
    assert schedule == {"a:1": offsets["a"], "c:1": offset_in_window("c", 1.0)}
    assert sorted(offsets.values()) == [0.0, 0.5]


def test_zero_window_closes_everyone_at_once() -> None:
    """With no spread every client's delay is 0 (a forced removal closes everything now)."""
    assert {d for d, _ in schedule_by_client(["a:1", "b:2"], client_key, 0)} == {0.0}
