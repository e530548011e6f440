"""Which clients a rebalance moves, and what an operator action would move: pure planning, no sockets.

After a rolling restart the last node restarted holds no clients, because WebSocket clients never leave a node by
themselves. A rebalance moves only the clients that are on the wrong server now:
- `ip_hash`: each client whose hash now picks another eligible server (afterwards every client is where the hash
  places it, so long-polling stays sticky);
- `round_robin` / `least_conn`: clients from the most to the least loaded servers until each is within one
  connection of its weighted share.
A client is moved whole (all its connections on that server), never when one of them is younger than `min_age`,
never onto a server past its `max_conns`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# A client connected this recently is left alone: it may still be in its handshake or upgrade, and moving it
# again so soon after it arrived would be a second disconnect in a row.
MIN_AGE_S = 5.0
# Clients a second when the operator gives no rate: a fifth of an average server's clients, so no second sees
# more than a fifth of a node's clients reconnect.
RATE_FRACTION = 0.2


@dataclass(frozen=True, slots=True)
class Placed:
    """A live connection as the planner sees it."""

    conn_id: int
    client: str  # the client address key (spread.client_key); "" when unknown
    server: str
    age_s: float


@dataclass(frozen=True, slots=True)
class Target:
    """An eligible server: where clients may be placed."""

    name: str
    weight: int
    max_conns: int | None = None


@dataclass(frozen=True, slots=True)
class Move:
    """One client's connections on `source`, to be closed together; the balancer then places it on `target`."""

    client: str
    source: str
    target: str
    conn_ids: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"client": self.client, "from": self.source, "to": self.target, "connections": len(self.conn_ids)}


@dataclass(frozen=True, slots=True)
class Plan:
    moves: tuple[Move, ...] = ()
    skipped_young: int = 0  # clients on the wrong server left alone because they connected too recently
    skipped_full: int = 0  # clients left alone because their server-to-be is at max_conns

    @property
    def clients(self) -> int:
        return len(self.moves)

    @property
    def connections(self) -> int:
        return sum(len(m.conn_ids) for m in self.moves)

    def to_dict(self) -> dict[str, Any]:
        return {
            "moves": [m.to_dict() for m in self.moves],
            "clients": self.clients,
            "connections": self.connections,
            "skipped_young": self.skipped_young,
            "skipped_full": self.skipped_full,
        }


def plan(
    policy: str,
    conns: Iterable[Placed],
    targets: Sequence[Target],
    hash_pick: Callable[[str], str | None] | None = None,
    min_age: float = MIN_AGE_S,
) -> Plan:
    """The moves that put every client where the policy would place it now (see the module docstring)."""
    names = {t.name for t in targets}
    groups: dict[tuple[str, str], list[Placed]] = {}
    for conn in conns:
        if conn.server in names:  # draining, disabled or down servers are the drain's business, not ours
            groups.setdefault((conn.client, conn.server), []).append(conn)
    if policy == "ip_hash":
        if hash_pick is None:
            raise ValueError("ip_hash planning needs hash_pick")
        return _plan_hash(groups, targets, hash_pick, min_age)
    return _plan_weighted(groups, targets, min_age)


def _counts(groups: Mapping[tuple[str, str], list[Placed]], targets: Sequence[Target]) -> dict[str, int]:
    counts = {t.name: 0 for t in targets}
    for (_, server), group in groups.items():
        counts[server] += len(group)
    return counts


def _room(target: Target, count: int, n: int) -> bool:
    return target.max_conns is None or count + n <= target.max_conns


def _plan_hash(
    groups: Mapping[tuple[str, str], list[Placed]],
    targets: Sequence[Target],
    hash_pick: Callable[[str], str | None],
    min_age: float,
) -> Plan:
    by_name = {t.name: t for t in targets}
    counts = _counts(groups, targets)
    moves: list[Move] = []
    young = full = 0
    for (client, server), group in sorted(groups.items()):
        want = hash_pick(client) if client else None
        if want is None or want == server or want not in by_name:
            continue
        if min(c.age_s for c in group) < min_age:
            young += 1
            continue
        if not _room(by_name[want], counts[want], len(group)):
            full += 1
            continue
        counts[want] += len(group)
        counts[server] -= len(group)
        moves.append(Move(client, server, want, tuple(sorted(c.conn_id for c in group))))
    return Plan(tuple(moves), young, full)


def _plan_weighted(groups: Mapping[tuple[str, str], list[Placed]], targets: Sequence[Target], min_age: float) -> Plan:
    total_weight = sum(t.weight for t in targets)
    counts = _counts(groups, targets)
    total = sum(counts.values())
    if not total_weight or not total:
        return Plan()
    share = {t.name: total * t.weight / total_weight for t in targets}
    by_name = {t.name: t for t in targets}
    # Each server's movable clients, oldest first (the longest-lived connections have had their session).
    movable: dict[str, list[tuple[str, list[Placed]]]] = {t.name: [] for t in targets}
    young = 0
    for (client, server), group in groups.items():
        if min(c.age_s for c in group) < min_age:
            young += 1
        else:
            movable[server].append((client, group))
    for candidates in movable.values():
        candidates.sort(key=lambda item: (-max(c.age_s for c in item[1]), item[0]))
    moves: list[Move] = []
    full = 0
    for _ in range(total):  # each round moves one client; bounded however the numbers fall
        source = max(counts, key=lambda n: (counts[n] - share[n], n))
        target = min(counts, key=lambda n: (counts[n] - share[n], n))
        excess, deficit = counts[source] - share[source], share[target] - counts[target]
        if excess <= 1 and deficit <= 1:
            break
        limit = max(1, round(min(excess, deficit)))
        pick = next((i for i, (_, g) in enumerate(movable[source]) if len(g) <= limit), None)
        if pick is None:
            break
        client, group = movable[source][pick]
        if not _room(by_name[target], counts[target], len(group)):
            full += 1
            break
        del movable[source][pick]
        counts[source] -= len(group)
        counts[target] += len(group)
        moves.append(Move(client, source, target, tuple(sorted(c.conn_id for c in group))))
    return Plan(tuple(moves), young, full)


def plan_share(
    conns: Iterable[Placed],
    share: Mapping[str, int],
    destinations: Mapping[str, str],
    min_age: float = MIN_AGE_S,
) -> Plan:
    """This instance's part of a fleet rebalance: up to `share[s]` connections off each server s, never more.

    Clients go whole and oldest first, as in `plan`; a client too big for what is left of the share stays. The
    balancer places each one as it reconnects; `destinations` only names where the fleet's plan sends them."""
    groups: dict[tuple[str, str], list[Placed]] = {}
    for conn in conns:
        if share.get(conn.server, 0) > 0:
            groups.setdefault((conn.client, conn.server), []).append(conn)
    candidates = sorted(groups.items(), key=lambda item: (-max(c.age_s for c in item[1]), item[0]))
    left = dict(share)
    moves: list[Move] = []
    young = 0
    for (client, server), group in candidates:
        if left[server] <= 0:
            continue
        if min(c.age_s for c in group) < min_age:
            young += 1
            continue
        if len(group) > left[server]:
            continue
        left[server] -= len(group)
        target = destinations.get(server, "")
        moves.append(Move(client, server, target, tuple(sorted(c.conn_id for c in group))))
    return Plan(tuple(moves), young, 0)


def default_rate(clients: int, servers: int) -> float:
    """Clients moved per second when none is given: a fifth of an average server's clients, at least one."""
    if servers <= 0:
        return 1.0
    return max(1.0, clients / servers * RATE_FRACTION)


# -- impact previews -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A server as a preview sees it: its weight and whether it takes new connections, before and after."""

    name: str
    weight: int
    eligible: bool


def shares(servers: Iterable[Candidate]) -> dict[str, float]:
    """Each server's share of new connections: its weight over the eligible servers' total (0 when ineligible)."""
    servers = list(servers)
    total = sum(s.weight for s in servers if s.eligible)
    return {s.name: (s.weight / total if s.eligible and total else 0.0) for s in servers}


def impact(moved: Mapping[str, Sequence[str]], after: Iterable[Candidate]) -> dict[str, Any]:
    """What an action moves (per server: connections and distinct clients) and the shares it leaves.

    `moved` maps a server to the client keys of the live connections the action takes off it (one entry per
    connection)."""
    per_server = {name: {"connections": len(keys), "clients": len(set(keys))} for name, keys in moved.items() if keys}
    all_clients = {(name, key) for name, keys in moved.items() for key in keys}
    return {
        "connections": sum(len(keys) for keys in moved.values()),
        "clients": len({key for _, key in all_clients}),
        "from": per_server,
        "share_after": {name: round(share, 4) for name, share in shares(after).items()},
    }
