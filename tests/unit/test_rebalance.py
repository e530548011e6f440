"""The rebalance planner and impact previews: who moves where, as tables of (placement, fleet) -> moves."""

from __future__ import annotations

from collections import Counter

import pytest

from proxy_core.balancer import IpHash
from proxy_core.rebalance import Candidate, Placed, Target, default_rate, impact, plan, shares

OLD = 60.0  # seconds: well past MIN_AGE_S


class Srv:
    """A candidate for the real ip_hash ring."""

    def __init__(self, name: str, weight: int = 1) -> None:
        self.name, self.weight, self.active = name, weight, 0


def hash_picker(names: list[str]):  # type: ignore[no-untyped-def]
    balancer, servers = IpHash(), [Srv(n) for n in names]

    def pick(client: str) -> str | None:
        chosen = balancer.pick(servers, client)
        return chosen.name if chosen is not None else None

    return pick


def conns(placement: dict[str, list[str]], age: float = OLD) -> list[Placed]:
    """{server: [client, ...]} into connections with ids in order."""
    out, next_id = [], 1
    for server, clients in placement.items():
        for client in clients:
            out.append(Placed(next_id, client, server, age))
            next_id += 1
    return out


TARGETS4 = [Target(n, 1) for n in ("b1", "b2", "b3", "b4")]
CLIENTS = [f"127.0.0.{i}" for i in range(2, 102)]


def test_ip_hash_moves_exactly_the_clients_the_ring_places_elsewhere() -> None:
    """After b4 came back empty, the clients moved are those the ring gives b4, all to b4, none else."""
    pick3, pick4 = hash_picker(["b1", "b2", "b3"]), hash_picker(["b1", "b2", "b3", "b4"])
    placement: dict[str, list[str]] = {"b1": [], "b2": [], "b3": [], "b4": []}
    for client in CLIENTS:
        placement[str(pick3(client))].append(client)
    result = plan("ip_hash", conns(placement), TARGETS4, pick4)
    expected = {c for c in CLIENTS if pick4(c) == "b4"}
    assert {m.client for m in result.moves} == expected
    assert {m.target for m in result.moves} == {"b4"}
    assert 10 <= len(expected) <= 40  # consistent hashing: about a quarter
    again = plan("ip_hash", conns({"b1": [], "b2": [], "b3": [], "b4": []}), TARGETS4, pick4)
    assert again.moves == ()


def test_ip_hash_moves_a_client_whole_and_skips_the_young() -> None:
    """Two connections of one client move together; a client with a young connection is left and counted."""
    pick = hash_picker(["b1", "b2"])
    targets = [Target("b1", 1), Target("b2", 1)]
    wrong_a = next(c for c in CLIENTS if pick(c) == "b2")
    wrong_b = next(c for c in CLIENTS if pick(c) == "b2" and c != wrong_a)
    placed = [
        Placed(1, wrong_a, "b1", OLD),
        Placed(2, wrong_a, "b1", OLD),
        Placed(3, wrong_b, "b1", OLD),
        Placed(4, wrong_b, "b1", 1.0),  # young: wrong_b stays
    ]
    result = plan("ip_hash", placed, targets, pick, min_age=5.0)
    assert [(m.client, m.source, m.target, m.conn_ids) for m in result.moves] == [(wrong_a, "b1", "b2", (1, 2))]
    assert result.skipped_young == 1
    assert (result.clients, result.connections) == (1, 2)


def test_ip_hash_respects_max_conns_of_the_target() -> None:
    """A client whose server-to-be is at max_conns stays where it is, and is counted as left for that reason."""
    pick = hash_picker(["b1", "b2"])
    wrong = [c for c in CLIENTS if pick(c) == "b2"][:3]
    targets = [Target("b1", 1), Target("b2", 1, max_conns=2)]
    result = plan("ip_hash", conns({"b1": wrong}), targets, pick)
    assert result.clients == 2 and result.skipped_full == 1


def test_connections_on_ineligible_servers_are_left_to_the_drain() -> None:
    """Connections on a server that is not a target (draining, disabled, down) are never planned."""
    pick = hash_picker(["b1"])
    result = plan("ip_hash", conns({"b9": CLIENTS[:10]}), [Target("b1", 1)], pick)
    assert result.moves == ()


@pytest.mark.parametrize(
    ("counts", "weights", "expected_after"),
    [
        ((54, 33, 13, 0), (1, 1, 1, 1), (25, 25, 25, 25)),  # the HAProxy ending, 100 clients
        ((10, 0), (1, 1), (5, 5)),
        ((9, 0, 0), (1, 1, 1), (3, 3, 3)),
        ((0, 40), (3, 1), (30, 10)),  # weighted share
        ((6, 5, 5), (1, 1, 1), (6, 5, 5)),  # already within one: nothing moves
        ((3, 3), (1, 1), (3, 3)),
    ],
)
def test_weighted_plan_ends_within_one_connection_of_each_share(
    counts: tuple[int, ...], weights: tuple[int, ...], expected_after: tuple[int, ...]
) -> None:
    """round_robin/least_conn: from the most to the least loaded until each is within one of its share."""
    names = [f"b{i + 1}" for i in range(len(counts))]
    placement = {n: [f"10.{i}.0.{k}" for k in range(c)] for i, (n, c) in enumerate(zip(names, counts, strict=True))}
    targets = [Target(n, w) for n, w in zip(names, weights, strict=True)]
    result = plan("least_conn", conns(placement), targets)
    after = Counter({n: c for n, c in zip(names, counts, strict=True)})
    for move in result.moves:
        after[move.source] -= len(move.conn_ids)
        after[move.target] += len(move.conn_ids)
    total = sum(counts)
    for name, weight in zip(names, weights, strict=True):
        assert abs(after[name] - total * weight / sum(weights)) <= 1, (name, after)
    if counts == expected_after:
        assert result.moves == ()
    assert len({(m.client, m.source) for m in result.moves}) == len(result.moves)  # nobody moved twice


def test_weighted_plan_moves_oldest_clients_first() -> None:
    """The longest-connected clients move first; the young are left and counted."""
    placed = [Placed(1, "a", "b1", 100.0), Placed(2, "b", "b1", 50.0), Placed(3, "c", "b1", 1.0)]
    result = plan("round_robin", placed, [Target("b1", 1), Target("b2", 1)], min_age=5.0)
    assert [m.client for m in result.moves] == ["a"]
    assert result.skipped_young == 1


def test_ip_hash_needs_the_ring() -> None:
    """Planning ip_hash without a hash lookup is a programming error, said at once."""
    with pytest.raises(ValueError, match="hash_pick"):
        plan("ip_hash", [], TARGETS4)


@pytest.mark.parametrize(
    ("clients", "servers", "rate"), [(100, 4, 5.0), (1000, 4, 50.0), (3, 4, 1.0), (0, 0, 1.0), (50_000, 4, 2500.0)]
)
def test_default_rate_is_a_fifth_of_a_server_per_second(clients: int, servers: int, rate: float) -> None:
    """No second sees more than a fifth of an average node's clients reconnect; at least one a second."""
    assert default_rate(clients, servers) == rate


def test_shares_count_only_eligible_weight() -> None:
    """Share after: weight over the eligible total; an ineligible server takes 0."""
    after = [Candidate("b1", 1, True), Candidate("b2", 3, True), Candidate("b3", 5, False)]
    assert shares(after) == {"b1": 0.25, "b2": 0.75, "b3": 0.0}
    assert shares([Candidate("b1", 1, False)]) == {"b1": 0.0}


def test_impact_counts_connections_and_distinct_clients() -> None:
    """A preview says how many live connections and distinct clients move, per server, and the shares after."""
    moved = {"b2": ["127.0.0.2", "127.0.0.2", "127.0.0.3"], "b3": []}
    result = impact(moved, [Candidate("b1", 1, True), Candidate("b2", 1, False)])
    assert result == {
        "connections": 3,
        "clients": 2,
        "from": {"b2": {"connections": 3, "clients": 2}},
        "share_after": {"b1": 1.0, "b2": 0.0},
    }


def test_planner_lookup_agrees_with_the_balancer() -> None:
    """The planner's hash lookup is where the balancer sends that client's next connection."""
    pick = hash_picker(["b1", "b2", "b3"])
    servers = [Srv(n) for n in ("b1", "b2", "b3")]
    balancer = IpHash()
    for client in CLIENTS[:20]:
        chosen = balancer.pick(servers, client)
        assert chosen is not None and pick(client) == chosen.name
