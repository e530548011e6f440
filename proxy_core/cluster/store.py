"""The Redis side of the fleet: the change stream, the document, live views; every call in its own tasks.

The data path never waits on Redis: relaying and accepting never call in here, and every Redis call is bounded
by a socket timeout, so a hung store only delays fleet changes and the fleet view, which then fail naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from proxy_core.cluster import apply, rebalancing
from proxy_core.cluster.model import (
    all_applied,
    decode_change,
    encode_change,
    fleet_view,
    instance_rows,
    parse_id,
    redact_url,
)
from proxy_core.config import ClusterConfig
from proxy_core.errors import ConfigError, StoreUnavailable
from proxy_core.events import OperatorAction

if TYPE_CHECKING:
    from proxy_core.engine import Engine

T = TypeVar("T")
PREFIX = "wsproxy:"
STREAM_KEY = PREFIX + "changes"
DOC_KEY = PREFIX + "doc"
SEEN_KEY = PREFIX + "seen"
LIVE_KEY = PREFIX + "live:"
HEARTBEAT_S = 1.0  # each instance refreshes its live view this often
LIVE_TTL_MS = 3000  # an instance silent this long is shown gone: three missed heartbeats, not one slow one
COMMAND_TIMEOUT_S = 1.0  # one Redis command; a hung store fails changes within this, never the data path
CONNECT_TIMEOUT_S = 1.0
READ_BLOCK_MS = 1000  # XREAD BLOCK: the applier wakes at least this often
JOIN_TIMEOUT_S = 3.0  # at start, catching up is tried this long before serving from the state file
BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)  # reconnect attempts, then every 2 s
STREAM_MAX_LEN = 10_000  # approximate trim; an instance further behind starts from the document instead
APPLY_WAIT_S = 5.0  # a change is in the stream; this instance applying it should take milliseconds
WAIT_APPLIED_S = 10.0  # --wait-applied: the fleet's instances report within a heartbeat or so
OUTCOMES_KEPT = 256  # results of this instance's own changes, for the operator waiting on each

# Append only while the fleet has no state yet: the first instance seeds it from its own pool.
SEED_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.call('XADD', KEYS[1], '*', 'c', ARGV[1])
end
return false
"""
# Replace the document only by a newer one: instances write it after applying, in any order.
DOC_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local old = cjson.decode(cur)['applied']
  if type(old) == 'string' then
    local oms, oseq = string.match(old, '(%d+)-(%d+)')
    local nms, nseq = string.match(ARGV[2], '(%d+)-(%d+)')
    oms, oseq, nms, nseq = tonumber(oms), tonumber(oseq), tonumber(nms), tonumber(nseq)
    if nms < oms or (nms == oms and nseq <= oseq) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


def read_password(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("cluster.password_file", path, f"a readable file ({exc})") from exc


class Cluster:
    """This instance's membership in a fleet: applies the stream, publishes its live view, takes changes."""

    def __init__(self, engine: Engine, config: ClusterConfig, applied: str | None) -> None:
        self.engine = engine
        self.instance = config.instance
        assert config.url is not None
        self.store = redact_url(config.url)
        password = read_password(config.password_file)
        options: dict[str, Any] = {"decode_responses": True, "socket_connect_timeout": CONNECT_TIMEOUT_S}
        if password:
            options["password"] = password
        # Typed Any: redis-py's answers are unions of bytes and str; decode_responses makes them str.
        self._commands: Any = aioredis.Redis.from_url(config.url, socket_timeout=COMMAND_TIMEOUT_S, **options)
        self._reader: Any = aioredis.Redis.from_url(
            config.url, socket_timeout=READ_BLOCK_MS / 1000 + COMMAND_TIMEOUT_S, **options
        )
        self.applied = applied
        self.connected = False
        self.problem: str | None = "not connected yet"
        self.outcomes: OrderedDict[str, Any] = OrderedDict()
        self._progress = asyncio.Event()
        self._publish_now = asyncio.Event()
        engine.rebalancer.on_auto = self._auto_rebalance

    async def _auto_rebalance(self) -> None:
        await rebalancing.auto(self.engine)

    # -- joining and catching up --------------------------------------------------------------------------

    async def join(self) -> bool:
        """Catch up before the listeners open; False (said loudly) when the store cannot be reached in time."""
        try:
            async with asyncio.timeout(JOIN_TIMEOUT_S):
                await self._catch_up()
        except (RedisError, OSError, TimeoutError) as exc:
            self._lost(exc, at_start=True)
            return False
        return True

    async def _catch_up(self) -> None:
        redis = self._commands
        first = await redis.xrange(STREAM_KEY, count=1)
        first_id = first[0][0] if first else None
        behind = self.applied is None or (first_id is not None and parse_id(first_id) > parse_id(self.applied))
        raw = await redis.get(DOC_KEY) if behind or first_id is None else None
        if first_id is None and not raw:  # a new fleet, or a store that came back empty: seed it from here
            seed = encode_change("reset", None, self.instance, doc=apply.document(self.engine, None))
            await redis.eval(SEED_SCRIPT, 2, STREAM_KEY, DOC_KEY, seed)
            self.applied = None
        elif behind and raw:  # entries this instance missed were trimmed: start from the document
            doc = json.loads(raw)
            apply.apply_document(self.engine, doc)
            self.applied = doc.get("applied")
            self._saved()
        while True:
            start = "-" if self.applied is None else f"({self.applied}"
            entries = await redis.xrange(STREAM_KEY, min=start, count=500)
            if not entries:
                break
            await self._apply_entries(entries)
        self.connected, self.problem = True, None
        await self._publish()

    def _saved(self) -> None:
        try:
            self.engine.save_state()
        except OSError as exc:
            print(f"wsproxy: WARNING: could not write the state file: {exc.strerror}", file=sys.stderr, flush=True)

    async def _apply_entries(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        for entry_id, fields in entries:
            change = decode_change(fields.get("c", ""))
            outcome: Any
            if change is None:
                outcome = StoreUnavailable(f"change {entry_id} in {self.store} is not one this version applies")
                self._say(f"skipped change {entry_id}: not one this version applies")
            else:
                try:
                    outcome = await apply.apply_change(self.engine, change)
                except Exception as exc:  # one bad entry must not stop the fleet's later ones
                    outcome = exc
            self.applied = entry_id
            if change is not None and change.get("origin") == self.instance:
                self.outcomes[entry_id] = outcome
                while len(self.outcomes) > OUTCOMES_KEPT:
                    self.outcomes.popitem(last=False)
        self._saved()
        self._progress.set()
        self._progress = asyncio.Event()
        self._publish_now.set()
        doc = json.dumps(apply.document(self.engine, self.applied))
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._commands.eval(DOC_SCRIPT, 1, DOC_KEY, doc, str(self.applied))

    # -- the background tasks --------------------------------------------------------------------------

    async def run_applier(self) -> None:
        """Read the stream forever; on a lost store, back off and replay from the last applied entry."""
        attempt = 0
        while True:
            try:
                if not self.connected:
                    await self._catch_up()
                    self._say(f"connected to the fleet store {self.store}; applied up to {self.applied}")
                    attempt = 0
                start = self.applied or "0-0"
                answer = await self._reader.xread({STREAM_KEY: start}, count=500, block=READ_BLOCK_MS)
                for _stream, entries in answer or []:
                    await self._apply_entries(entries)
            except (RedisError, OSError, TimeoutError) as exc:
                if self.connected or attempt == 0:
                    self._lost(exc)
                await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                attempt += 1

    async def run_heartbeat(self) -> None:
        """Publish the live view every second, and at once after a change is applied."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._publish_now.wait(), HEARTBEAT_S)
            self._publish_now.clear()
            try:
                await self._publish()
            except (RedisError, OSError, TimeoutError) as exc:
                if self.connected:
                    self._lost(exc)

    async def _publish(self) -> None:
        view = self.live_view()
        pipe = self._commands.pipeline(transaction=False)
        pipe.set(LIVE_KEY + self.instance, json.dumps(view), px=LIVE_TTL_MS)
        pipe.hset(SEEN_KEY, self.instance, str(view["heartbeat"]))
        await pipe.execute()

    def _lost(self, exc: BaseException, at_start: bool = False) -> None:
        self.connected = False
        self.problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if at_start:
            self._say(
                f"WARNING: the fleet store {self.store} is unreachable ({self.problem}); serving from the state "
                "file and configuration; fleet changes are refused until it is back (retrying with backoff)"
            )
        else:
            self._say(
                f"WARNING: lost the fleet store {self.store} ({self.problem}); traffic is untouched, the last "
                f"applied state (up to {self.applied}) stays in force; fleet changes are refused until it is back"
            )

    def _say(self, text: str) -> None:
        print(f"wsproxy: cluster: {text}", file=sys.stderr, flush=True)
        self.engine.bus.publish(OperatorAction(action="cluster", server=None, ok=self.connected, detail=text))

    # -- views -----------------------------------------------------------------------------------------

    def live_view(self) -> dict[str, Any]:
        engine = self.engine
        return {
            "name": self.instance,
            "pid": os.getpid(),
            "heartbeat": time.time(),
            "applied": self.applied,
            "listen": engine.listen_addresses,
            "workers": engine.config.workers,
            "active": engine.board.totals.active,
            "servers": [
                {"name": s.name, "active": s.active, "total": s.total, "health": s.health.status, "state": s.state}
                for s in engine.registry
            ],
            "local_overrides": sorted(engine.local_overrides),
            "rebalance": engine.rebalancer.status(),
        }

    def status(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "store": self.store,
            "connected": self.connected,
            "problem": self.problem,
            "applied": self.applied,
            "local_overrides": sorted(self.engine.local_overrides),
        }

    async def fleet(self) -> dict[str, Any]:
        """Every instance's live view (this one's fresh), summed per server."""
        seen, views = await self._bounded(self._read_views)
        views[self.instance] = self.live_view()
        return fleet_view(instance_rows(seen, views), time.time())

    async def _read_views(self) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
        seen_raw = await self._commands.hgetall(SEEN_KEY)
        seen = {name: float(ts) for name, ts in seen_raw.items()}
        names = sorted(seen)
        raws = await self._commands.mget([LIVE_KEY + n for n in names]) if names else []
        return seen, {n: json.loads(r) for n, r in zip(names, raws, strict=True) if r}

    # -- taking a change ------------------------------------------------------------------------------

    def refuse_if_offline(self) -> None:
        if not self.connected:
            raise StoreUnavailable(
                f"the fleet store {self.store} is unreachable ({self.problem}); the change was not made. "
                "Use --local to change this instance only"
            )

    async def submit(self, op: str, name: str | None, wait_applied: bool = False, **fields: Any) -> Any:
        """Append a change; answer once this instance applied it (and with `wait_applied`, every live one)."""
        self.refuse_if_offline()
        payload = encode_change(op, name, self.instance, at=time.time(), **fields)
        try:
            entry_id = await self._bounded(
                lambda: self._commands.xadd(STREAM_KEY, {"c": payload}, maxlen=STREAM_MAX_LEN, approximate=True)
            )
        except StoreUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, TimeoutError | RedisTimeout) and "connecting" not in str(cause):
                # Sent and never answered (a partition that lost the reply): it may be in the stream.
                raise StoreUnavailable(
                    f"the fleet store {self.store} did not answer ({type(cause).__name__}); the change may "
                    "or may not be in the stream: `wsproxy status --fleet` shows which once the store is back "
                    "(this instance applies it then if it is). Use --local to change this instance only"
                ) from exc
            raise
        outcome = await self._outcome(str(entry_id))
        if isinstance(outcome, BaseException):
            raise outcome
        if wait_applied:
            await self._wait_fleet(str(entry_id))
        return outcome

    async def _outcome(self, entry_id: str) -> Any:
        try:
            async with asyncio.timeout(APPLY_WAIT_S):
                while entry_id not in self.outcomes:
                    await self._progress.wait()
        except TimeoutError:
            raise StoreUnavailable(
                f"change {entry_id} is in the fleet store {self.store} but this instance has not applied it "
                f"within {APPLY_WAIT_S:g} s (the store was lost?); it will be applied on reconnect"
            ) from None
        return self.outcomes[entry_id]

    async def _wait_fleet(self, entry_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_APPLIED_S
        while True:
            behind = all_applied(await self.fleet(), entry_id)
            if not behind:
                return
            if loop.time() >= deadline:
                raise StoreUnavailable(
                    f"change {entry_id} is in the stream, but not applied within {WAIT_APPLIED_S:g} s by: "
                    + ", ".join(behind)
                )
            await asyncio.sleep(0.01)

    async def take_lock(self, key: str, seconds: float) -> bool:
        """SET NX with an expiry: True for the one instance that got it."""
        got = await self._bounded(lambda: self._commands.set(key, self.instance, nx=True, px=int(seconds * 1000)))
        return bool(got)

    async def _bounded(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S * 2):
                return await call()
        except (RedisError, OSError, TimeoutError) as exc:
            if self.connected:
                self._lost(exc)
            raise StoreUnavailable(
                f"the fleet store {self.store} is unreachable ({type(exc).__name__}); the change or read was not "
                "made. Use --local to change this instance only"
            ) from exc

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await self._commands.delete(LIVE_KEY + self.instance)
        for client in (self._commands, self._reader):
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
