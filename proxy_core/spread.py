"""Spreading closes over a window by client, not by connection.

A browser-like client holds several connections to one node at once (its WebSocket and idle keep-alive HTTP
connections). Closed one at a time, the client reconnects while another of its connections to the old node is
still open, starts a new session there over it, and its WebSocket upgrade then lands on another node ("Session
ID unknown"). So every spread close (drain deadline, shutdown, rebalance) closes all of one client's connections
in the same instant, and the clients are what is spread.

Clients are spaced evenly over the window in the order of a hash of their address. Processes that hold parts of
one client's connections (workers) are given the same offsets by whoever sees every client (the supervisor); a
client missing from them falls back to a position from its hash alone, which every process computes alike.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")

HASH_SPACE = 1 << 32


def client_key(address: str | None) -> str:
    """The client part of `host:port` (`[v6]:port` too): what ip_hash hashes, what groups a client's connections."""
    if not address:
        return ""
    host = address.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def group_by_client(items: Iterable[T], key: Callable[[T], str]) -> dict[str, list[T]]:
    """Items grouped by client key, in order of each client's first item."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def offset_in_window(client: str, window: float) -> float:
    """Where in a window of `window` seconds this client's connections are closed: the same in every process."""
    if window <= 0:
        return 0.0
    return zlib.crc32(client.encode()) / HASH_SPACE * window


def even_offsets(clients: Iterable[str], window: float) -> dict[str, float]:
    """Each client's instant: clients in hash order, evenly spaced from 0 over the window (0 for all if none)."""
    ordered = sorted(set(clients), key=lambda c: (zlib.crc32(c.encode()), c))
    step = window / len(ordered) if ordered and window > 0 else 0.0
    return {client: i * step for i, client in enumerate(ordered)}


def schedule_by_client(
    items: Iterable[T], key: Callable[[T], str], window: float, offsets: Mapping[str, float] | None = None
) -> list[tuple[float, list[T]]]:
    """(delay, one client's items) pairs, sorted by delay: each client once, all its items together.

    Without `offsets` the clients here are spaced evenly; with them, each client takes its given instant."""
    groups = group_by_client(items, key)
    if offsets is None:
        offsets = even_offsets(groups, window)
    entries = [(offsets.get(client, offset_in_window(client, window)), group) for client, group in groups.items()]
    return sorted(entries, key=_delay)


def _delay(entry: tuple[float, list[T]]) -> float:
    return entry[0]
