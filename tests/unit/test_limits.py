"""Per-client limits and accept pacing: counts, token buckets with a burst, top refused clients, bounded tables."""

from __future__ import annotations

import pytest

from proxy_core.datapath import limits as limits_module
from proxy_core.datapath.limits import TOO_FAST, TOO_MANY_CONNECTIONS, AcceptPacer, ClientLimits


def test_max_conns_per_client_counts_each_address_apart() -> None:
    """A client at its cap is refused while another address is not; a close frees a place."""
    limits = ClientLimits(max_conns=2)
    assert [limits.admit("127.0.0.2", 0.0) for _ in range(3)] == [None, None, TOO_MANY_CONNECTIONS]
    assert limits.admit("127.0.0.3", 0.0) is None
    limits.release("127.0.0.2")
    assert limits.admit("127.0.0.2", 0.0) is None
    assert limits.refused == {"127.0.0.2": 1} and limits.refused_by_reason[TOO_MANY_CONNECTIONS] == 1


@pytest.mark.parametrize(
    ("rate", "burst", "times", "expected"),
    [
        (1.0, 3.0, [0, 0, 0, 0], [None, None, None, TOO_FAST]),  # the burst, then refused
        (1.0, 3.0, [0, 0, 0, 0, 1.0], [None, None, None, TOO_FAST, None]),  # one token back after 1 s
        (10.0, 1.0, [0, 0.05, 0.1, 0.15, 0.2], [None, TOO_FAST, None, TOO_FAST, None]),  # steady 10/s
        (2.0, 2.0, [0, 0, 100, 100, 100], [None, None, None, None, TOO_FAST]),  # refill capped at the burst
    ],
)
def test_token_bucket_per_client(rate: float, burst: float, times: list[float], expected: list[str | None]) -> None:
    """New connections per client follow a token bucket: a burst at once, then the rate."""
    limits = ClientLimits(rate=rate, burst=burst)
    assert [limits.admit("10.0.0.1", t) for t in times] == expected


def test_rate_refusals_do_not_touch_other_clients_or_open_counts() -> None:
    """A client refused for its rate leaves other clients' buckets alone; without max_conns nothing is counted open."""
    limits = ClientLimits(rate=1.0, burst=1.0)
    assert limits.admit("a", 0.0) is None and limits.admit("a", 0.0) == TOO_FAST
    assert limits.admit("b", 0.0) is None
    assert limits.open == {}
    limits.release("a")  # harmless without max_conns


def test_top_refused_and_bounded_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The most refused clients come first; the refusal and bucket tables stay within their bounds."""
    monkeypatch.setattr(limits_module, "MAX_REFUSED_CLIENTS", 10)
    monkeypatch.setattr(limits_module, "MAX_BUCKETS", 20)
    limits = ClientLimits(max_conns=1, rate=1.0, burst=1.0)
    for _ in range(3):
        limits.admit("heavy", 0.0)
    for i in range(50):
        limits.admit(f"10.0.0.{i}", float(i))
        limits.admit(f"10.0.0.{i}", float(i))
    assert limits.top_refused(1) == [("heavy", 2)]
    assert len(limits.refused) <= 10 and len(limits.buckets) <= 21
    assert limits.refused_total == 52


def test_accept_pacer_paces_without_refusing() -> None:
    """Within the rate no pause; past the burst the pause covers the debt of what was accepted."""
    pacer = AcceptPacer(rate=100.0, burst_s=0.1)  # 10 at once
    delays = [pacer.take(0.0) for _ in range(10)]
    assert delays[:9] == [0.0] * 9 and delays[9] == pytest.approx(0.01)
    assert pacer.take(0.0) == pytest.approx(0.02)  # one more from the same batch: longer pause
    assert pacer.take(1.0) == 0.0  # refilled
    assert pacer.pauses == 2
