"""The fleet-wide rebalance planner: fleet totals -> flows and each instance's share, as tables."""

from __future__ import annotations

import random

import pytest

from proxy_core.cluster.fleetplan import FleetPlan, apportion, fleet_plan, summed_status
from proxy_core.rebalance import Placed, Target, plan_share

T3 = [Target("b1", 1), Target("b2", 1), Target("b3", 1)]


def shed_by_source(result: FleetPlan) -> dict[str, int]:
    out: dict[str, int] = {}
    for flow in result.flows:
        out[flow.source] = out.get(flow.source, 0) + flow.connections
    return out


@pytest.mark.parametrize(
    ("counts", "targets", "flows", "shares"),
    [
        # A rolling restart's end: b3 came back empty on every instance; each moves a third of each surplus.
        (
            {"n1": {"b1": 9, "b2": 9}, "n2": {"b1": 9, "b2": 9}, "n3": {"b1": 9, "b2": 9}},
            T3,
            {("b1", "b3"): 9, ("b2", "b3"): 9},
            {"n1": {"b1": 3, "b2": 3}, "n2": {"b1": 3, "b2": 3}, "n3": {"b1": 3, "b2": 3}},
        ),
        # Each instance lopsided, the fleet balanced: nothing moves (one instance alone would move half).
        ({"n1": {"b1": 10, "b2": 0}, "n2": {"b1": 0, "b2": 10}}, T3[:2], {}, {"n1": {}, "n2": {}}),
        # n1 is balanced itself: the whole surplus is n2's, whose clients reconnect where n2's balancer wants.
        (
            {"n1": {"b1": 10, "b2": 10}, "n2": {"b1": 20, "b2": 0}},
            T3[:2],
            {("b1", "b2"): 10},
            {"n1": {}, "n2": {"b1": 10}},
        ),
        # Weighted shares (3:1) over the fleet's 40.
        (
            {"n1": {"b1": 0, "b2": 20}, "n2": {"b1": 0, "b2": 20}},
            [Target("b1", 3), Target("b2", 1)],
            {("b2", "b1"): 30},
            {"n1": {"b2": 15}, "n2": {"b2": 15}},
        ),
        # Within one connection of each share fleet-wide: nothing moves.
        ({"n1": {"b1": 4, "b2": 3}, "n2": {"b1": 2, "b2": 3}}, T3[:2], {}, {"n1": {}, "n2": {}}),
        # Uneven holdings of one surplus: 7 off b1 split 4 (n1 holds more over its share) and 3.
        (
            {"n1": {"b1": 8, "b2": 0}, "n2": {"b1": 6, "b2": 0}},
            T3[:2],
            {("b1", "b2"): 7},
            {"n1": {"b1": 4}, "n2": {"b1": 3}},
        ),
    ],
)
def test_fleet_plan_moves_the_fleet_surplus_split_by_instance_excess(
    counts: dict[str, dict[str, int]],
    targets: list[Target],
    flows: dict[tuple[str, str], int],
    shares: dict[str, dict[str, int]],
) -> None:
    """Flows are planned on the fleet's totals; each surplus is split among the instances over their own share."""
    result = fleet_plan("least_conn", counts, targets)
    assert {(f.source, f.target): f.connections for f in result.flows} == flows
    assert {i: result.share_of(i) for i in counts} == shares


def test_random_fleets_end_balanced_and_the_shares_add_up() -> None:
    """Over 300 random fleets: the shares of each source add up to the fleet's flow off it, none is more than the
    instance holds there, and the servers end within one connection of their weighted share."""
    rng = random.Random(16)
    for _ in range(300):
        servers = [Target(f"b{k}", rng.randint(1, 4)) for k in range(rng.randint(1, 5))]
        counts = {
            f"n{i}": {t.name: rng.choice((0, 0, rng.randint(0, 60))) for t in servers} for i in range(rng.randint(1, 4))
        }
        result = fleet_plan("round_robin", counts, servers)
        shed = shed_by_source(result)
        for source, amount in shed.items():
            assert sum(result.share_of(i).get(source, 0) for i in counts) == amount
        for instance, row in counts.items():
            for source, n in result.share_of(instance).items():
                assert 0 < n <= row[source]
        total, weight = sum(result.totals.values()), sum(t.weight for t in servers)
        for target in servers:
            fair = total * target.weight / weight
            assert abs(result.after[target.name] - fair) <= 1 + 1e-9, (counts, result)
        assert sum(result.after.values()) == total


def test_fleet_room_is_max_conns_times_the_instances() -> None:
    """A target's max_conns is per instance: the fleet places at most that times the instances on it."""
    counts = {"n1": {"b1": 30, "b2": 0}, "n2": {"b1": 30, "b2": 0}}
    result = fleet_plan("least_conn", counts, [Target("b1", 1), Target("b2", 1, max_conns=10)])
    assert result.after == {"b1": 40, "b2": 20}
    assert result.skipped_full > 0


def test_ip_hash_needs_no_split() -> None:
    """With ip_hash every instance moves the clients the ring places elsewhere: no flows, no shares."""
    result = fleet_plan("ip_hash", {"n1": {"b1": 10, "b2": 0}}, T3[:2])
    assert result.flows == () and result.shares == {} and result.totals == {"b1": 10, "b2": 0}


def test_empty_fleet_and_only_ineligible_servers_plan_nothing() -> None:
    """No connections, or connections only on servers that are not targets (draining, down): nothing moves."""
    assert fleet_plan("least_conn", {}, T3).flows == ()
    assert fleet_plan("least_conn", {"n1": {"b9": 50}}, T3[:2]).flows == ()


def test_plan_round_trips_through_the_stream_entry() -> None:
    """The plan as the entry carries it reads back the same; a malformed one raises."""
    result = fleet_plan("least_conn", {"n1": {"b1": 9, "b2": 0}, "n2": {"b1": 9, "b2": 0}}, T3[:2])
    assert FleetPlan.from_dict(result.to_dict()) == result
    with pytest.raises((KeyError, ValueError, TypeError)):
        FleetPlan.from_dict({"flows": [{"from": "b1"}]})


@pytest.mark.parametrize(
    ("amount", "weights", "caps", "expected"),
    [
        (10, {"a": 1.0, "b": 1.0}, {"a": 10, "b": 10}, {"a": 5, "b": 5}),
        (3, {"a": 1.0, "b": 1.0}, {"a": 5, "b": 5}, {"a": 2, "b": 1}),  # a tie goes to the first name
        (7, {"a": 4.0, "b": 3.0}, {"a": 8, "b": 6}, {"a": 4, "b": 3}),
        (5, {"a": 9.0, "b": 1.0}, {"a": 2, "b": 9}, {"a": 2, "b": 3}),  # capped: the rest to who has room
        (4, {"a": 0.0, "b": 0.0}, {"a": 1, "b": 3}, {"a": 1, "b": 3}),  # no weight: by room
        (9, {"a": 1.0}, {"a": 4}, {"a": 4}),  # never more than the caps hold
    ],
)
def test_apportion_adds_up_within_caps(
    amount: int, weights: dict[str, float], caps: dict[str, int], expected: dict[str, int]
) -> None:
    """Largest remainder with ties by name; no share over its cap; the sum is the amount (or all the caps)."""
    assert apportion(amount, weights, caps) == expected


def test_plan_share_moves_oldest_whole_clients_never_more_than_the_share() -> None:
    """An instance's part: oldest clients first, a client whole, a client bigger than what is left stays, the
    young are counted, and servers without a share are not touched."""
    placed = [
        Placed(1, "old", "b1", 100.0),
        Placed(2, "pair", "b1", 90.0),
        Placed(3, "pair", "b1", 80.0),
        Placed(4, "mid", "b1", 50.0),
        Placed(5, "young", "b1", 1.0),
        Placed(6, "other", "b2", 100.0),
    ]
    result = plan_share(placed, {"b1": 2}, {"b1": "b3"}, min_age=5.0)
    assert [(m.client, m.target, m.conn_ids) for m in result.moves] == [("old", "b3", (1,)), ("mid", "b3", (4,))]
    assert result.connections == 2
    result = plan_share(placed, {"b1": 5}, {}, min_age=5.0)
    assert [m.client for m in result.moves] == ["old", "pair", "mid"] and result.skipped_young == 1
    assert plan_share(placed, {}, {}).moves == ()


def test_summed_status_adds_the_live_parts_of_one_fleet_rebalance() -> None:
    """GET /v1/rebalance in a fleet: the parts of this fleet rebalance, summed; running while any part runs."""

    def part(state: str, moved: int, fleet: str = "f1") -> dict[str, object]:
        return {"state": state, "reason": "r", "started": 10.0, "finished": None if state == "running" else 12.0,
                "rate": 2.0, "planned_clients": moved, "moved_clients": moved, "left_clients": 0,
                "moved_connections": moved, "rounds": 1, "fleet": fleet, "share": {"b1": moved}}  # fmt: skip

    instances = [
        {"name": "n1", "alive": True, "rebalance": part("done", 3)},
        {"name": "n2", "alive": True, "rebalance": part("running", 2)},
        {"name": "n3", "alive": False, "rebalance": part("done", 9)},  # gone: left out
        {"name": "n4", "alive": True, "rebalance": part("done", 7, fleet="other")},
    ]
    summed = summed_status(instances, "f1")
    assert summed is not None
    assert summed["state"] == "running" and summed["moved_clients"] == 5 and summed["rate"] == 4.0
    assert set(summed["instances"]) == {"n1", "n2"} and summed["finished"] is None
    instances[1]["rebalance"] = part("done", 2)
    done = summed_status(instances, "f1")
    assert done is not None and done["state"] == "done" and done["finished"] == 12.0
    assert summed_status(instances, "missing") is None
