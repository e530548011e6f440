"""Where the dashboard's data comes from: a live engine, or a JSONL script on a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any

from textual.message import Message

from proxy_core.client import ControlError, ControlUnavailable
from proxy_core.sources import CAP_FLEET, CAP_HANDSHAKES, Source
from proxy_core.sources.wsproxy import WSPROXY_CAPABILITIES
from tui.messages import EventsReceived, LinkLost, LinkRestored, RatesUpdated, SnapshotUpdated
from tui.model import PoolModel, with_pool

JSON = dict[str, Any]
Post = Callable[[Message], bool]

# Status 4 Hz and rates 1 Hz: fast enough to watch a drain, cheap enough for the engine.
STATUS_INTERVAL_S = 0.25
# While the event stream is connected, status once a second (like hatop): state changes and operator actions
# arrive as events and fetch a fresh status at once, so only counts and times move at 1 Hz. Each `/v1/status`
# costs the engine ~200 us of CPU on the loop that relays (bench/README.md, dashboard_cost.py).
STREAMING_STATUS_INTERVAL_S = 1.0
RATES_INTERVAL_S = 1.0
# Events that change what the table shows: handed up at once, and a status fetched right away.
URGENT_EVENTS = frozenset({"state", "operator"})
# Events are handed up in batches so the logs are written once per tick (dashboard-anchors §4).
EVENT_FLUSH_S = 0.25
BACKOFF_MIN_S = 0.25
BACKOFF_MAX_S = 5.0


class DataSource(ABC):
    """What the app needs: a clock, a start/stop, and the control API's reads and mutations."""

    #: Zone for clock times on screen; None is the local zone.
    tz: tzinfo | None = None
    #: One line saying what we are attached to.
    description: str = ""
    #: False for a replayed script: the status bar says "replay", not "live".
    live: bool = True

    @property
    def capabilities(self) -> frozenset[str]:
        """What the proxy behind can do (proxy_core.sources CAP_*); a script plays a wsproxy engine."""
        return WSPROXY_CAPABILITIES

    @property
    def read_only_reason(self) -> str | None:
        """Why the proxy refuses actions (a socket below admin level), or None."""
        return None

    @property
    def handshakes_missing(self) -> str | None:
        """Why there is no handshake log, or None when there is one."""
        if CAP_HANDSHAKES in self.capabilities:
            return None
        return "no handshake log: this proxy's API does not report WebSocket handshakes"

    @abstractmethod
    def now(self) -> float:
        """Wall-clock time as the data sees it (fake for scripts)."""

    @abstractmethod
    async def start(self, post: Post) -> None:
        """Begin delivering messages through `post`."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop every task this source started."""

    @abstractmethod
    async def server(self, name: str) -> JSON:
        """One server with history and connections."""

    @abstractmethod
    async def add(
        self, name: str, address: str, weight: int, max_conns: int | None = None, pool: str | None = None
    ) -> JSON:
        """Add an upstream (to `pool`; None: the only pool)."""

    @abstractmethod
    async def drain(self, name: str, deadline_s: float | None = None, force: bool = False) -> JSON:
        """Drain a server (409 if it is the last eligible one, unless forced)."""

    @abstractmethod
    async def undrain(self, name: str) -> JSON:
        """Stop draining a server."""

    @abstractmethod
    async def set_weight(self, name: str, weight: int, force: bool = False) -> JSON:
        """Set an absolute weight (weight 0 on the last eligible server needs force)."""

    @abstractmethod
    async def disable(self, name: str, force: bool = False) -> JSON:
        """Put a server in maintenance (409 if it is the last eligible one, unless forced)."""

    @abstractmethod
    async def enable(self, name: str) -> JSON:
        """Take a server out of maintenance."""

    @abstractmethod
    async def remove(self, name: str, force: bool = False) -> JSON:
        """Remove a server (409 if it would leave none eligible, unless forced)."""

    @abstractmethod
    async def close_connection(self, conn_id: int) -> JSON:
        """Close one client connection."""

    @abstractmethod
    async def preview(self, action: str, name: str, weight: int | None = None) -> JSON:
        """What drain, disable, weight or remove would move (`?dry_run=true`); the same 409 as the real call."""

    @abstractmethod
    async def rebalance(self, rate: float | None = None, dry_run: bool = False) -> JSON:
        """Move the clients on the wrong server now, at most `rate` a second (`dry_run`: the plan only)."""

    @abstractmethod
    async def stop_rebalance(self) -> JSON:
        """Stop a running rebalance."""


class LiveSource(DataSource):
    """Polls any proxy Source and follows its event stream; survives the proxy going away."""

    def __init__(
        self,
        client: Source,
        *,
        status_interval: float = STATUS_INTERVAL_S,
        rates_interval: float = RATES_INTERVAL_S,
        streaming_status_interval: float = STREAMING_STATUS_INTERVAL_S,
    ) -> None:
        self.client = client
        self.description = client.target
        self.status_interval = status_interval
        self.streaming_status_interval = streaming_status_interval
        self.rates_interval = rates_interval
        #: True while the event stream is open: status is then polled at streaming_status_interval.
        self.streaming = False
        self._poll_now = asyncio.Event()
        self.last_seq = 0
        self.last_ok: float | None = None
        self.lost_since: float | None = None
        self._engine_id: tuple[Any, Any] | None = None
        self._pending: list[JSON] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._post: Post = lambda message: True

    def now(self) -> float:
        return time.time()

    @property
    def capabilities(self) -> frozenset[str]:
        return self.client.capabilities

    @property
    def read_only_reason(self) -> str | None:
        return self.client.read_only_reason

    async def start(self, post: Post) -> None:
        self._post = post
        self._tasks = [
            asyncio.create_task(self._poll_loop(), name="wsproxy-tui-poll"),
            asyncio.create_task(self._event_loop(), name="wsproxy-tui-events"),
            asyncio.create_task(self._flush_loop(), name="wsproxy-tui-flush"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self.client.aclose()

    async def _poll_loop(self) -> None:
        backoff = BACKOFF_MIN_S
        last_rates = 0.0
        while True:
            self._poll_now.clear()  # a request for a fresh status from here on is served by this poll or the next
            try:
                status = await self.client.status()
                if status.get("cluster") and CAP_FLEET in self.client.capabilities:  # in a fleet: its view rides along
                    status["fleet"] = await self._fleet()
                if time.monotonic() - last_rates >= self.rates_interval:
                    rates = await self.client.rates()
                    last_rates = time.monotonic()
                    self._post(RatesUpdated(rates))
            except (ControlUnavailable, ControlError) as exc:
                self._link_down(str(exc), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_MIN_S
            self._link_up()
            self._post(SnapshotUpdated(status, now=self.last_ok or time.time()))
            interval = self.streaming_status_interval if self.streaming else self.status_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), interval)

    async def _fleet(self) -> JSON:
        try:
            return await self.client.fleet()
        except ControlError as exc:  # the store unreachable: shown, the engine's own status still is
            return {"error": exc.message}

    def poll_now(self) -> None:
        """Fetch the status now rather than at the next interval (after a change the table must show)."""
        self._poll_now.set()

    def _link_down(self, error: str, retry_in: float) -> None:
        if self.lost_since is None:
            self.lost_since = time.time()
        self._post(LinkLost(self.last_ok or self.lost_since, error, retry_in))

    def _link_up(self) -> None:
        self.last_ok = time.time()
        if self.lost_since is not None:
            down_s = self.last_ok - self.lost_since
            self.lost_since = None
            self._post(LinkRestored(down_s))

    async def _event_loop(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            try:
                await self._check_engine_identity()
                self.streaming = True
                async for event in self.client.stream_events(since=self.last_seq):
                    backoff = BACKOFF_MIN_S
                    seq = event.get("seq")
                    if isinstance(seq, int):
                        self.last_seq = max(self.last_seq, seq)
                    self._pending.append(event)
                    if event.get("type") in URGENT_EVENTS:
                        self._flush()
                        self.poll_now()
            except (ControlUnavailable, ControlError):
                pass
            finally:
                if self.streaming:
                    self.streaming = False
                    self.poll_now()  # back to the faster interval; an engine gone is noticed at once
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _check_engine_identity(self) -> None:
        """A restarted engine numbers events from 1 again: resume from 0, not the old seq."""
        engine = (await self.client.status()).get("engine", {})
        identity = (engine.get("pid"), engine.get("started"))
        if self._engine_id is not None and identity != self._engine_id:
            self.last_seq = 0
        self._engine_id = identity

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(EVENT_FLUSH_S)
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._post(EventsReceived(batch))

    async def _changed(self, call: Awaitable[JSON]) -> JSON:
        """A mutation: the table shows its effect from the status fetched right after it."""
        try:
            return await call
        finally:
            self.poll_now()

    async def server(self, name: str) -> JSON:
        return await self.client.server(name)

    async def add(
        self, name: str, address: str, weight: int, max_conns: int | None = None, pool: str | None = None
    ) -> JSON:
        if pool is None:  # one pool: today's call, unchanged
            return await self._changed(self.client.add(name, address, weight, max_conns))
        # `pool=`: POST /v1/servers {"pool"} (the pools contract); Source.add takes it once the engine has pools.
        add: Any = self.client.add
        return await self._changed(add(name, address, weight, max_conns, pool=pool))

    async def drain(self, name: str, deadline_s: float | None = None, force: bool = False) -> JSON:
        return await self._changed(self.client.drain(name, deadline_s, force))

    async def undrain(self, name: str) -> JSON:
        return await self._changed(self.client.undrain(name))

    async def set_weight(self, name: str, weight: int, force: bool = False) -> JSON:
        return await self._changed(self.client.set_weight(name, weight, force))

    async def disable(self, name: str, force: bool = False) -> JSON:
        return await self._changed(self.client.disable(name, force))

    async def enable(self, name: str) -> JSON:
        return await self._changed(self.client.enable(name))

    async def remove(self, name: str, force: bool = False) -> JSON:
        return await self._changed(self.client.remove(name, force))

    async def close_connection(self, conn_id: int) -> JSON:
        return await self._changed(self.client.close_connection(conn_id))

    async def preview(self, action: str, name: str, weight: int | None = None) -> JSON:
        return await self.client.preview(action, name, weight)

    async def rebalance(self, rate: float | None = None, dry_run: bool = False) -> JSON:
        if dry_run:
            return await self.client.rebalance(rate, dry_run=True)
        return await self._changed(self.client.rebalance(rate))

    async def stop_rebalance(self) -> JSON:
        return await self._changed(self.client.stop_rebalance())


class ScriptedSource(DataSource):
    """Replays a JSONL script on a fake clock that moves only when told, so screenshots never flap.

    Script lines: `{"start": T}` once, then `{"t": s, "status"|"rates"|"event"|"detail": {...}}`.
    Mutations act on an in-memory model; after the first one, scripted snapshots no longer apply.
    """

    tz = UTC
    live = False

    def __init__(self, frames: list[JSON], *, until: float = 0.0, realtime: bool = False) -> None:
        self.start_ts = 0.0
        self.frames: list[JSON] = []
        for frame in frames:
            if "start" in frame:
                self.start_ts = float(frame["start"])
            else:
                self.frames.append(frame)
        self.frames.sort(key=lambda f: float(f.get("t", 0.0)))
        self.description = "script"
        self.clock = 0.0
        self.until = until
        self.realtime = realtime
        self.seq = 0
        self.diverged = False
        self.model = PoolModel({"servers": []})
        self.rates: JSON | None = None
        self._cursor = 0
        self._post: Post = lambda message: True
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> ScriptedSource:
        """Load a script written by `tui.record` (or by hand)."""
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls([json.loads(line) for line in lines if line.strip()], **kwargs)

    @property
    def duration(self) -> float:
        """Fake seconds covered by the script."""
        return float(self.frames[-1].get("t", 0.0)) if self.frames else 0.0

    def now(self) -> float:
        return self.start_ts + self.clock

    async def start(self, post: Post) -> None:
        self._post = post
        self._apply_until(self.until)
        if self.realtime:
            self._task = asyncio.create_task(self._play(), name="wsproxy-tui-replay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _play(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            self.advance(STATUS_INTERVAL_S)

    def advance(self, seconds: float) -> None:
        """Move the fake clock: replay the frames due and let simulated drains progress."""
        self._apply_until(self.clock + seconds, dt=seconds)

    def _apply_until(self, t: float, dt: float = 0.0) -> None:
        self.clock = max(self.clock, t)
        events: list[JSON] = []
        status: JSON | None = None
        rates: JSON | None = None
        while self._cursor < len(self.frames) and float(self.frames[self._cursor]["t"]) <= t:
            frame = self.frames[self._cursor]
            self._cursor += 1
            if "status" in frame and not self.diverged:
                status = frame["status"]
            if "rates" in frame:
                rates = frame["rates"]
            if "detail" in frame:
                self.model.details[frame["detail"]["name"]] = frame["detail"]
            if "event" in frame:
                events.append(self._stamp(frame["event"], keep_ts=True))
        if status is not None:
            details = self.model.details
            self.model = PoolModel(status, details)
        self.model.clock = self.now()
        if dt and self.diverged:
            events += [self._stamp(e) for e in self.model.tick(self.now(), dt)]
        if status is not None or dt or not self.frames:
            self._post(SnapshotUpdated(copy.deepcopy(self.model.status), now=self.now()))
        if rates is not None:
            self.rates = rates
            self._post(RatesUpdated(rates))
        if events:
            self._post(EventsReceived(events))

    def _stamp(self, event: JSON, keep_ts: bool = False) -> JSON:
        self.seq = max(self.seq + 1, int(event.get("seq") or 0))
        ts = event.get("ts") if keep_ts and event.get("ts") is not None else self.now()
        return {**event, "seq": self.seq, "ts": ts}

    def _publish(self, result: tuple[JSON, list[JSON]]) -> JSON:
        answer, events = result
        self.diverged = True
        self._post(SnapshotUpdated(copy.deepcopy(self.model.status), now=self.now()))
        servers = self.model.servers
        self._post(EventsReceived([self._stamp(with_pool(e, servers)) for e in events]))
        return answer

    async def server(self, name: str) -> JSON:
        return self.model.detail(name)

    async def add(
        self, name: str, address: str, weight: int, max_conns: int | None = None, pool: str | None = None
    ) -> JSON:
        return self._publish(self.model.add(name, address, weight, max_conns, pool))

    async def drain(self, name: str, deadline_s: float | None = None, force: bool = False) -> JSON:
        return self._publish(self.model.drain(name, deadline_s, self.now(), force))

    async def undrain(self, name: str) -> JSON:
        return self._publish(self.model.undrain(name))

    async def set_weight(self, name: str, weight: int, force: bool = False) -> JSON:
        return self._publish(self.model.set_weight(name, weight, force))

    async def disable(self, name: str, force: bool = False) -> JSON:
        return self._publish(self.model.disable(name, force))

    async def enable(self, name: str) -> JSON:
        return self._publish(self.model.enable(name))

    async def remove(self, name: str, force: bool = False) -> JSON:
        return self._publish(self.model.remove(name, force))

    async def close_connection(self, conn_id: int) -> JSON:
        return self._publish(self.model.close_connection(conn_id))

    async def preview(self, action: str, name: str, weight: int | None = None) -> JSON:
        return self.model.preview(action, name, weight)

    async def rebalance(self, rate: float | None = None, dry_run: bool = False) -> JSON:
        if dry_run:
            return self.model.rebalance_plan(self.now())
        return self._publish(self.model.start_rebalance(rate, self.now()))

    async def stop_rebalance(self) -> JSON:
        return self._publish(self.model.stop_rebalance(self.now()))
