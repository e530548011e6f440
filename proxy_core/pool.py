"""One upstream pool at runtime: its policy, its check, its balancer and the cached set of servers taking traffic.

Pure state the registry keeps per pool, so every rule of the single pool (balancing, the interlock, max_conns)
holds inside each pool on its own. A connection's pool is chosen by proxy_core.routing before a server is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from proxy_core.balancer import BalancePolicy, Balancer, make_balancer
from proxy_core.checkspec import CheckConfig

if TYPE_CHECKING:
    from proxy_core.registry import Server


class Pool:
    """A pool's settings and the eligible servers its balancer picks from (recomputed by Registry.refresh)."""

    __slots__ = ("balance", "balancer", "check", "eligible", "has_max_conns", "name")

    def __init__(self, name: str, balance: str, check: CheckConfig, balancer: Balancer | None = None) -> None:
        self.name = name
        self.balance = balance
        self.check = check
        self.balancer = balancer if balancer is not None else make_balancer(cast(BalancePolicy, balance))
        self.eligible: tuple[Server, ...] = ()
        self.has_max_conns = False

    def refresh(self, servers: Iterable[Server]) -> None:
        self.eligible = tuple(s for s in servers if s.eligible)
        self.has_max_conns = any(s.max_conns is not None for s in self.eligible)

    def total_weight(self) -> int:
        return sum(s.weight for s in self.eligible)
