"""Runs a rebalance (planned by rebalance.py) at a bounded rate, and answers impact previews.

One task moves planned clients at `rate` a second, closing all of a client's connections on its server in the same
instant; the balancer then places the client where it belongs. It stops by itself when any server changes state
or weight meanwhile (the plan was made for a fleet that no longer exists), and re-plans once its moves are done, so
clients skipped for being too young, or placed elsewhere by round robin, get another chance.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from proxy_core.balancer import Balancer
from proxy_core.config import RebalanceConfig
from proxy_core.datapath.switchboard import Switchboard, finish_all
from proxy_core.errors import Conflict, WsproxyError
from proxy_core.events import EventBus, OperatorAction
from proxy_core.pool import Pool
from proxy_core.rebalance import Candidate, Move, Placed, Plan, Target, default_rate, impact, plan, plan_share, shares
from proxy_core.registry import LiveConnection, Registry, Server
from proxy_core.spread import client_key

TICK_S = 0.1  # moves are made on this tick; a second's moves are spread over ten ticks
SETTLE_S = 1.0  # after a round, moved clients reconnect before the next plan is made
MAX_ROUNDS = 3
AUTO_POLL_S = 0.5  # plan, move, re-plan: enough for the young and for round robin's placement; then it is done
MIN_SHARE_RATE = 0.1  # clients a second: an instance with a small share of a fleet rebalance still gets on with it


class Rebalance:
    """The state of one rebalance, as `GET /v1/rebalance` and the dashboard show it."""

    def __init__(self, first: Plan, rate: float, now: float, fleet: str | None = None) -> None:
        self.fleet = fleet  # the fleet rebalance this is this instance's part of (None: this instance's own)
        self.share: dict[str, int] | None = None
        self.state = "running"
        self.reason = f"moving {first.clients} client(s) at {rate:g}/s"
        self.started = now
        self.finished: float | None = None
        self.rate = rate
        self.planned_clients = first.clients
        self.moved_clients = 0
        self.moved_connections = 0
        self.left_clients = first.clients + first.skipped_young
        self.rounds = 1

    def end(self, state: str, reason: str, now: float) -> None:
        self.state, self.reason, self.finished = state, reason, now

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "started": self.started,
            "finished": self.finished,
            "rate": self.rate,
            "planned_clients": self.planned_clients,
            "moved_clients": self.moved_clients,
            "left_clients": self.left_clients,
            "moved_connections": self.moved_connections,
            "rounds": self.rounds,
            "fleet": self.fleet,
            "share": self.share,
        }


class Rebalancer:
    """Plans and runs rebalances and previews for one engine's registry and connections."""

    def __init__(
        self,
        config: RebalanceConfig,
        policy: str,
        registry: Registry,
        board: Switchboard,
        balancer: Balancer,
        bus: EventBus,
    ) -> None:
        self.config = config
        self.policy = policy
        self.registry = registry
        self.board = board
        self.balancer = balancer
        self.bus = bus
        self.current: Rebalance | None = None
        self._task: asyncio.Task[None] | None = None
        self._by_id: dict[int, LiveConnection] = {}
        self._clients_placed = 0  # distinct clients on eligible servers at the last plan (for the default rate)
        # In a fleet rebalance: connections still to move off each server (this instance's share), and where to.
        self.share: dict[str, int] | None = None
        self.destinations: Mapping[str, str] = {}
        # `[rebalance] auto` in a fleet starts a fleet rebalance instead (cluster/rebalancing.py sets this).
        self.on_auto: Callable[[], Awaitable[Any]] | None = None

    # -- planning -------------------------------------------------------------------------------

    def _hash_pick(self, client: str) -> str | None:
        server = self.balancer.pick(self.registry.eligible, client)
        return server.name if server is not None else None

    @staticmethod
    def _pool_pick(pool: Pool) -> Callable[[str], str | None]:
        """Where the pool's own ring places a client now (each pool hashes over its own servers)."""

        def pick(client: str) -> str | None:
            server = pool.balancer.pick(pool.eligible, client)
            return server.name if server is not None else None

        return pick

    def placed(self, now: float) -> list[Placed]:
        """The live connections on eligible servers, as the planner sees them (remembered by id for the moves)."""
        self._by_id = {}
        out: list[Placed] = []
        for server in self.registry.eligible_everywhere:
            for conn in server.conns:
                self._by_id[conn.conn_id] = conn
                out.append(Placed(conn.conn_id, client_key(conn.client), server.name, now - conn.started))
        return out

    def close_move(self, move: Move) -> int:
        """Close one move's connections (those still open on its server) in the same instant; how many were."""
        found = (self._by_id.get(i) for i in move.conn_ids)
        conns = [c for c in found if c is not None and _still_on(c, move.source)]
        finish_all(conns, f"rebalance: moving {move.client} off {move.source}")
        return len(conns)

    def plan(self, now: float) -> Plan:
        """The plan for the connections open now."""
        placed = self.placed(now)
        self._clients_placed = len({p.client for p in placed})
        if self.share is not None:
            return plan_share(placed, self.share, self.destinations, self.config.min_age_s)
        if len(self.registry.pools) == 1:
            targets = [Target(s.name, s.weight, s.max_conns) for s in self.registry.eligible]
            return plan(self.policy, placed, targets, self._hash_pick, self.config.min_age_s)
        # Several pools: each planned on its own, by its own policy and ring, over its own servers only.
        moves: list[Move] = []
        young = full = 0
        for pool in self.registry.pools.values():
            names = {s.name for s in pool.eligible}
            if not names:
                continue
            targets = [Target(s.name, s.weight, s.max_conns) for s in pool.eligible]
            mine = [p for p in placed if p.server in names]
            result = plan(pool.balance, mine, targets, self._pool_pick(pool), self.config.min_age_s)
            moves.extend(result.moves)
            young += result.skipped_young
            full += result.skipped_full
        return Plan(tuple(moves), young, full)

    def preview(self, action: str, name: str, *, force: bool = False, weight: int | None = None) -> dict[str, Any]:
        """What drain, disable, weight or remove would move and the shares after; the same refusals as the real one."""
        server = self.registry.validate(action, name, force=force, weight=weight)
        moved: dict[str, list[str]] = {}
        if action in ("drain", "disable", "remove"):
            moved[server.name] = self.client_keys(server)
        after = []
        for other in self.registry:
            if other.pool != server.pool:  # shares are within the server's pool
                continue
            eligible = other.eligible
            weight_after = other.weight
            if other is server:
                if action == "weight":
                    weight_after = int(weight or 0)
                    eligible = other.admin == "active" and other.health.up and weight_after > 0
                else:
                    eligible = False
            if action == "remove" and other is server:
                continue
            after.append(Candidate(other.name, weight_after, eligible))
        return {"dry_run": True, "action": action, "server": server.name, "impact": impact(moved, after)}

    def client_keys(self, server: Server) -> list[str]:
        """One client key per live connection on the server."""
        return [client_key(conn.client) for conn in server.conns]

    def dry_run(self) -> dict[str, Any]:
        result = self.plan(time.time())
        moved: dict[str, list[str]] = {}
        for move in result.moves:
            moved.setdefault(move.source, []).extend([move.client] * len(move.conn_ids))
        after = [Candidate(s.name, s.weight, s.eligible) for s in self.registry]
        effect = impact(moved, after)
        if len(self.registry.pools) > 1:  # a share is of the server's own pool
            by_pool: dict[str, list[Candidate]] = {}
            for candidate, server in zip(after, self.registry, strict=True):
                by_pool.setdefault(server.pool, []).append(candidate)
            effect["share_after"] = {
                name: round(share, 4) for group in by_pool.values() for name, share in shares(group).items()
            }
        rate = self.config.rate or default_rate(self._clients_placed, len(self.registry.eligible_everywhere))
        return {"dry_run": True, "plan": result.to_dict(), "impact": effect, "rate": rate}

    # -- running --------------------------------------------------------------------------------

    async def auto_loop(self) -> None:
        """`[rebalance] auto`: once a server has become eligible and nothing changed for `auto_delay_s`, rebalance.

        Waiting for a quiet fleet means a rolling restart triggers one rebalance at its end, not one per node."""
        signature, joined = self._signature(), self.registry.joined
        pending_since: float | None = None
        while True:
            await asyncio.sleep(AUTO_POLL_S)
            now = time.monotonic()
            current_signature = self._signature()
            if self.registry.joined != joined or (pending_since is not None and current_signature != signature):
                pending_since = now  # a server came back, or the fleet is still moving: start the wait again
            signature, joined = current_signature, self.registry.joined
            if pending_since is not None and now - pending_since >= self.config.auto_delay_s:
                pending_since = None
                if self.current is None or self.current.state != "running":
                    await self.fresh()
                    with contextlib.suppress(WsproxyError):
                        if self.on_auto is not None:
                            await self.on_auto()
                        else:
                            self.start(None)

    async def fresh(self) -> None:
        """Make sure the connection lists are current before planning (nothing to wait for in one process)."""

    def status(self) -> dict[str, Any] | None:
        return self.current.to_dict() if self.current is not None else None

    def start(self, rate: float | None) -> dict[str, Any]:
        """Start moving clients; refused while one runs or when there is no eligible server."""
        if self.current is not None and self.current.state == "running":
            raise Conflict("a rebalance is already running; stop it first (DELETE /v1/rebalance)")
        if not self.registry.eligible_everywhere:
            raise Conflict("no eligible server to rebalance onto")
        self.share, self.destinations = None, {}
        return self._begin(rate, None)

    def join_fleet(
        self, fleet_id: str, share: Mapping[str, int] | None, destinations: Mapping[str, str], rate: float
    ) -> dict[str, Any]:
        """This instance's part of a fleet rebalance (an applied stream entry): `share` connections off each server
        (None with ip_hash: the clients the ring places elsewhere), at `rate`. A later one replaces a running one:
        the stream orders them."""
        if self.current is not None and self.current.state == "running":
            self.stop("replaced by a later fleet rebalance")
        self.share = None if share is None else {s: int(n) for s, n in share.items() if n > 0}
        self.destinations = destinations
        return self._begin(max(MIN_SHARE_RATE, rate), fleet_id)

    def _begin(self, rate: float | None, fleet_id: str | None) -> dict[str, Any]:
        now = time.time()
        first = self.plan(now)
        if rate is None:
            rate = self.config.rate or default_rate(self._clients_placed, len(self.registry.eligible_everywhere))
        current = Rebalance(first, rate, now, fleet_id)
        current.share = None if self.share is None else dict(self.share)
        if fleet_id is not None:
            current.reason = f"fleet rebalance: {current.reason}"
        self.current = current
        self.bus.publish(OperatorAction(action="rebalance", server=None, ok=True, detail=current.reason))
        if not first.moves and not first.skipped_young:
            nothing = "balanced: no client is on the wrong server"
            if self.share is not None:
                nothing = "no share of the fleet's surplus to move" if not self.share else "no client fits the share"
            self._end("done", nothing, now)
        else:
            self._task = asyncio.get_running_loop().create_task(self._run(current, first))
        return current.to_dict()

    def stop(self, reason: str = "stopped by operator") -> dict[str, Any] | None:
        current = self.current
        if current is not None and current.state == "running":
            if self._task is not None:
                self._task.cancel()
                self._task = None
            self._end("stopped", reason, time.time())
        return self.status()

    def _signature(self) -> tuple[tuple[str, str, int], ...]:
        return tuple((s.name, s.state, s.weight) for s in self.registry)

    def _end(self, state: str, reason: str, now: float) -> None:
        current = self.current
        assert current is not None
        current.end(state, reason, now)
        self.share, self.destinations = None, {}  # a later plan (a dry run, a local one) is this instance's own
        action = "rebalance-done" if state == "done" else "rebalance-stopped"
        detail = f"{reason}; moved {current.moved_clients} client(s), {current.moved_connections} connection(s)"
        self.bus.publish(OperatorAction(action=action, server=None, ok=state == "done", detail=detail))

    async def _run(self, current: Rebalance, first: Plan) -> None:
        signature = self._signature()
        result = first
        while True:
            if await self._move(current, result, signature):
                return
            if current.rounds >= MAX_ROUNDS:
                break
            # Moved clients need a moment to reconnect; clients too young to move need to reach min_age.
            await asyncio.sleep(SETTLE_S if result.moves else self.config.min_age_s)
            if self._changed(current, signature):
                return
            result = self.plan(time.time())
            if not result.moves and not result.skipped_young:
                break
            current.rounds += 1
            current.planned_clients += result.clients
            current.left_clients = result.clients + result.skipped_young
        self._task = None
        leftover = self.plan(time.time())
        left = leftover.clients + leftover.skipped_young + leftover.skipped_full
        current.left_clients = left
        if left:
            self._end(
                "done", f"{left} client(s) still on another server (young, full or placed elsewhere)", time.time()
            )
        elif self.share is not None:
            self._end("done", "moved this instance's share of the fleet's surplus", time.time())
        else:
            self._end("done", "balanced: every client is where the balancer places it", time.time())

    def _changed(self, current: Rebalance, signature: tuple[tuple[str, str, int], ...]) -> bool:
        if self._signature() == signature:
            return False
        self._task = None
        self._end("stopped", "a server changed state or weight during the rebalance", time.time())
        return True

    async def _move(self, current: Rebalance, result: Plan, signature: tuple[Any, ...]) -> bool:
        """Make the plan's moves at the rate; True when stopped because a server changed."""
        budget = 1.0  # the first client goes at once
        last = time.monotonic()
        moves = list(result.moves)
        while moves:
            if self._changed(current, signature):
                return True
            now = time.monotonic()
            budget = min(budget + (now - last) * current.rate, max(1.0, current.rate))
            last = now
            while budget >= 1.0 and moves:
                move = moves.pop(0)
                budget -= 1.0
                closed = self.close_move(move)
                if self.share is not None:
                    self.share[move.source] = max(0, self.share.get(move.source, 0) - closed)
                if closed:
                    current.moved_clients += 1
                    current.moved_connections += closed
                current.left_clients = len(moves)
            if moves:
                await asyncio.sleep(TICK_S)
        return False


def _still_on(conn: LiveConnection, server: str) -> bool:
    return not conn.closed and conn.server is not None and conn.server.name == server
