"""Rebalancing with --workers: the supervisor plans from the workers' connection reports and has each worker close
its share of a move at once (a client's connections may be on several workers)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from proxy_core.rebalance import Move, Placed
from proxy_core.rebalancer import Rebalancer
from proxy_core.spread import client_key

if TYPE_CHECKING:
    from proxy_core.workers.supervisor import Supervisor

# The first plan waits for every worker to report the eligible servers' connections (reports come every 0.25 s).
FRESH_REPORTS_TIMEOUT_S = 2.0


class WorkerRebalancer(Rebalancer):
    """A Rebalancer whose connections live in worker processes."""

    supervisor: Supervisor

    def placed(self, now: float) -> list[Placed]:
        out: list[Placed] = []
        for server in self.registry.eligible_everywhere:
            self.supervisor.watch_soon(server.name)  # keep the lists coming while the rebalance runs
            for conn in self.supervisor.reported_conns(server.name):
                out.append(Placed(int(conn["id"]), client_key(conn.get("client")), server.name, now - conn["started"]))
        return out

    def close_move(self, move: Move) -> int:
        reason = f"rebalance: moving {move.client} off {move.source}"
        self.supervisor.close_ids(move.conn_ids, reason)
        return len(move.conn_ids)  # a connection that closed meanwhile is skipped by its worker

    async def fresh(self) -> None:
        """Wait until every worker has reported the eligible servers' connections after being asked for them."""
        supervisor = self.supervisor
        for server in self.registry.eligible_everywhere:
            supervisor.watch_soon(server.name)
        wanted = {handle.index: handle.reports + 2 for handle in supervisor.live_workers()}  # one may be in flight
        deadline = time.monotonic() + FRESH_REPORTS_TIMEOUT_S
        while any(h.reports < wanted.get(h.index, 0) for h in supervisor.live_workers()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            supervisor.report_arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(supervisor.report_arrived.wait(), left)
