"""Balancer policies: exact round-robin order, least-conn choice, consistent-hash ring traits."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import get_args

import pytest

from proxy_core.balancer import (
    POINTS_PER_WEIGHT,
    POLICIES,
    BalancePolicy,
    Balancer,
    IpHash,
    LeastConn,
    RoundRobin,
    make_balancer,
    server_points,
)


@dataclass(frozen=True, slots=True)
class Srv:
    name: str
    weight: int = 1
    active: int = 0


def pool(spec: str) -> list[Srv]:
    """'a5 b1 c1' -> servers a (weight 5), b, c."""
    return [Srv(tok[0], int(tok[1:] or 1)) for tok in spec.split()]


def names(b: Balancer, servers: list[Srv], n: int, key: str = "") -> str:
    out = []
    for _ in range(n):
        s = b.pick(servers, key)
        out.append(s.name if s else "-")
    return "".join(out)


def ip_keys(n: int, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    return [f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}" for _ in range(n)]


RING = [f"127.0.0.1:{9001 + i}" for i in range(5)]
KEYS = ip_keys(10_000)


def test_policies_match_literal() -> None:
    """POLICIES lists exactly the BalancePolicy literal values, and each builds a balancer."""
    assert set(POLICIES) == set(get_args(BalancePolicy))
    assert [type(make_balancer(p)) for p in ("round_robin", "least_conn", "ip_hash")] == [
        RoundRobin,
        LeastConn,
        IpHash,
    ]


def test_unknown_policy_raises() -> None:
    """An unknown policy name is rejected rather than silently defaulted."""
    with pytest.raises(ValueError, match="random"):
        make_balancer("random")  # type: ignore[arg-type]


# --- round robin -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "n", "expected"),
    [
        ("a5 b1 c1", 7, "aabacaa"),  # nginx's documented smooth sequence
        ("a5 b1 c1", 14, "aabacaa" * 2),  # and it repeats with period = total weight
        ("a1 b1 c1", 6, "abcabc"),
        ("a2 b1", 6, "abaaba"),
        ("a3 b2", 5, "ababa"),
        ("a1", 3, "aaa"),
    ],
)
def test_round_robin_exact_sequence(spec: str, n: int, expected: str) -> None:
    """Smooth weighted RR interleaves picks in exactly nginx's order."""
    assert names(RoundRobin(), pool(spec), n) == expected


@pytest.mark.parametrize(("spec", "rounds"), [("a5 b1 c1", 10), ("a4 b3 c2 d1", 7)])
def test_round_robin_share_equals_weight(spec: str, rounds: int) -> None:
    """Over whole periods each server gets exactly weight/total of the picks."""
    servers = pool(spec)
    total = sum(s.weight for s in servers)
    got = Counter(names(RoundRobin(), servers, total * rounds))
    assert got == {s.name: s.weight * rounds for s in servers}


def test_round_robin_empty_list() -> None:
    """No eligible server means None, for every policy."""
    for policy in POLICIES:
        assert make_balancer(policy).pick([], "10.0.0.1") is None


@pytest.mark.parametrize(
    ("spec", "exclude", "expected"),
    [
        ("a1 b1 c1", {"a"}, "bcbc"),
        ("a5 b1 c1", {"a"}, "bcbc"),
        ("a1 b1 c1", {"a", "b"}, "cccc"),
        ("a1 b1", {"a", "b"}, "----"),
    ],
)
def test_round_robin_exclude(spec: str, exclude: set[str], expected: str) -> None:
    """Names already tried for this connection are never picked; all tried gives None."""
    b, servers = RoundRobin(), pool(spec)
    got = "".join(getattr(b.pick(servers, "", exclude), "name", "-") for _ in range(4))
    assert got == expected


def test_round_robin_removed_server_leaves_rotation() -> None:
    """A server dropped from the eligible list is no longer picked and its state is forgotten."""
    b, servers = RoundRobin(), pool("a1 b1 c1")
    assert names(b, servers, 2) == "ab"
    assert names(b, servers[:2], 4) == "abab"
    assert "c" not in b._current


def test_round_robin_returning_server_starts_fresh() -> None:
    """A server that comes back rejoins the interleaving instead of bursting on stale credit."""
    b, servers = RoundRobin(), pool("a1 b1")
    names(b, servers, 3)
    assert names(b, servers[:1], 3) == "aaa"
    assert names(b, servers, 4) in ("abab", "baba")


def test_round_robin_skips_zero_weight() -> None:
    """A weight-0 candidate (drained by weight) is never chosen."""
    assert names(RoundRobin(), [Srv("a", 0), Srv("b", 1)], 3) == "bbb"


def test_pick_returns_caller_object() -> None:
    """pick() hands back the caller's own server object, not a copy."""
    servers = pool("a1 b1")
    for policy in POLICIES:
        assert make_balancer(policy).pick(servers, "10.0.0.1") in servers


# --- least connections -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ([Srv("a", 1, 3), Srv("b", 1, 1), Srv("c", 1, 2)], "b"),
        ([Srv("a", 1, 0), Srv("b", 1, 5)], "a"),
        ([Srv("a", 3, 5), Srv("b", 1, 2)], "a"),  # 5/3 < 2/1: weight scales capacity
        ([Srv("a", 1, 1), Srv("b", 4, 3)], "b"),  # 3/4 < 1/1
        ([Srv("a", 2, 4), Srv("b", 1, 3)], "a"),  # 2 < 3
    ],
)
def test_least_conn_prefers_least_loaded_per_weight(servers: list[Srv], expected: str) -> None:
    """least_conn picks the minimum active/weight."""
    assert getattr(LeastConn().pick(servers, ""), "name", None) == expected


def test_least_conn_ties_use_weighted_round_robin() -> None:
    """Equally loaded servers are taken in smooth weighted RR order (nginx)."""
    assert names(LeastConn(), pool("a5 b1 c1"), 7) == "aabacaa"
    assert names(LeastConn(), pool("a1 b1 c1"), 6) == "abcabc"


def test_least_conn_tie_rr_only_among_tied() -> None:
    """A more loaded server neither wins the tie nor gains RR credit."""
    b = LeastConn()
    servers = [Srv("a", 1, 1), Srv("b", 1, 0), Srv("c", 1, 0)]
    assert names(b, servers, 4) == "bcbc"
    assert "a" not in b._current


def test_least_conn_exclude_and_zero_weight() -> None:
    """Excluded and weight-0 servers are skipped even when least loaded; all excluded gives None."""
    servers = [Srv("a", 1, 0), Srv("b", 0, 0), Srv("c", 1, 9)]
    assert getattr(LeastConn().pick(servers, "", {"a"}), "name", None) == "c"
    assert LeastConn().pick(servers, "", {"a", "c"}) is None


# --- ip hash -----------------------------------------------------------------------------------


def test_server_points_count_and_chain() -> None:
    """Each server gets weight*160 chained points; names differing only in port differ."""
    assert len(server_points("127.0.0.1:9001", 3)) == 3 * POINTS_PER_WEIGHT
    assert server_points("127.0.0.1:9001", 1) != server_points("127.0.0.1:9002", 1)
    assert server_points("web", 1) == server_points("web", 2)[:POINTS_PER_WEIGHT]


def test_ip_hash_stable_for_same_key() -> None:
    """The same client IP maps to the same server on every pick and on a fresh balancer."""
    servers = [Srv(n) for n in RING[:4]]
    first = {k: IpHash().pick(servers, k) for k in KEYS[:200]}
    b = IpHash()
    for _ in range(3):
        assert all(b.pick(servers, k) == s for k, s in first.items())


def test_ip_hash_distribution_equal_servers() -> None:
    """Over 10,000 client IPs, 4 equal servers each get 25% within 5 points."""
    b, servers = IpHash(), [Srv(n) for n in RING[:4]]
    shares = Counter(getattr(b.pick(servers, k), "name", None) for k in KEYS)
    assert set(shares) == set(RING[:4])
    for n in RING[:4]:
        assert abs(shares[n] / len(KEYS) - 0.25) <= 0.05, shares


def test_ip_hash_weight_scales_share() -> None:
    """A weight-3 server among two weight-1 servers gets roughly 3/5 of the keys."""
    b = IpHash()
    servers = [Srv(RING[0], 3), Srv(RING[1]), Srv(RING[2])]
    share = sum(getattr(b.pick(servers, k), "name", None) == RING[0] for k in KEYS) / len(KEYS)
    assert abs(share - 0.6) <= 0.06


def test_ip_hash_adding_server_moves_one_fifth_all_to_new() -> None:
    """Adding a 5th equal server moves about 20% of keys, and every moved key goes to it."""
    b = IpHash()
    before = {k: getattr(b.pick([Srv(n) for n in RING[:4]], k), "name", None) for k in KEYS}
    after = {k: getattr(b.pick([Srv(n) for n in RING], k), "name", None) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert abs(len(moved) / len(KEYS) - 0.20) <= 0.04
    assert {after[k] for k in moved} == {RING[4]}


@pytest.mark.parametrize("removed", [0, 2, 4])
def test_ip_hash_removing_server_moves_only_its_keys(removed: int) -> None:
    """Removing a server remaps exactly the keys it owned; everyone else stays put."""
    b = IpHash()
    full = [Srv(n) for n in RING]
    rest = [s for i, s in enumerate(full) if i != removed]
    before = {k: getattr(b.pick(full, k), "name", None) for k in KEYS}
    after = {k: getattr(b.pick(rest, k), "name", None) for k in KEYS}
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == RING[removed]}


def test_ip_hash_exclude_walks_to_next_server() -> None:
    """An excluded owner sends the key to the server the ring would give without it."""
    b = IpHash()
    full = [Srv(n) for n in RING[:4]]
    for k in KEYS[:500]:
        owner = b.pick(full, k)
        assert owner is not None
        retry = b.pick(full, k, {owner.name})
        without = IpHash().pick([s for s in full if s is not owner], k)
        assert retry is not None and retry is not owner and retry == without


def test_ip_hash_all_excluded_gives_none() -> None:
    """When every server was already tried there is nothing left to pick."""
    servers = [Srv(n) for n in RING[:3]]
    assert IpHash().pick(servers, "10.0.0.1", set(RING[:3])) is None


def test_ip_hash_ring_cached_until_set_changes() -> None:
    """The ring is rebuilt only when a name or weight in the eligible set changes."""
    b = IpHash()
    servers = [Srv(n) for n in RING[:3]]
    b.pick(servers, "10.0.0.1")
    ring = b._hashes
    b.pick(list(servers), "10.0.0.2")
    assert b._hashes is ring
    b.pick([*servers[:2], Srv(RING[2], 2)], "10.0.0.3")
    assert b._hashes is not ring and len(b._hashes) > len(ring)


def test_ip_hash_empty_key_falls_back_to_round_robin() -> None:
    """Without a client key the pick is plain weighted round robin (nginx)."""
    assert names(IpHash(), pool("a5 b1 c1"), 7, key="") == "aabacaa"


def test_ip_hash_zero_weight_never_chosen() -> None:
    """A weight-0 server owns no ring points; only weight-0 servers means None."""
    b = IpHash()
    servers = [Srv("a:1", 0), Srv("b:1", 1)]
    assert {getattr(b.pick(servers, k), "name", None) for k in KEYS[:300]} == {"b:1"}
    assert b.pick([Srv("a:1", 0)], "10.0.0.1") is None
