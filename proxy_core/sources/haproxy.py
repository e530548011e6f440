"""HAProxy's runtime API (its stats socket, unix or TCP) as a Source: a thin asyncio shell around haproxy_parse.

One command per connection (HAProxy closes a non-interactive CLI connection after answering). Each status is one
poll of `show info`, `show stat typed`, `show servers state` and `show sess`; state changes between polls become
events. What HAProxy lacks is done here, from outside: a drain deadline that closes the remaining sessions by id,
spread by client; the last-eligible-server interlock; remove as drain, wait, maintenance, `del server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from proxy_core.client import parse_control_target
from proxy_core.sources import haproxy_parse as hp
from proxy_core.sources.base import (
    CAP_ADD_REMOVE,
    CAP_CLOSE_CONNECTION,
    CAP_MUTATE,
    Source,
    SourceError,
    SourceUnavailable,
)
from proxy_core.sources.history import RateHistory
from proxy_core.spread import client_key, schedule_by_client

JSON = dict[str, Any]

# A local runtime API answers in milliseconds; slower means HAProxy is stuck or gone.
COMMAND_TIMEOUT_S = 3.0
# `show sess` on a busy HAProxy can be megabytes; this bounds what one answer may cost us.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# The same as the engine's event ring buffer and transition history.
MAX_EVENTS = 10_000
MAX_HISTORY = 100
# Streams poll this often when nobody else does (hatop polls every 3 s; 1 s shows a drain as it happens).
DEFAULT_INTERVAL_S = 1.0
# Closes at a drain deadline are spread over this window, like the engine's `[drain] spread` default.
DRAIN_SPREAD_S = 3.0
# remove waits this long for a drained server's sessions to end before refusing (without force).
REMOVE_WAIT_S = 30.0
REMOVE_POLL_S = 0.25
# Answers to a mutation that mean it worked (most commands answer an empty line).
OK_ANSWERS = ("", "New server registered.", "Server deleted.")
ADMIN_LEVEL = "admin"


class HaproxySource(Source):
    """`--haproxy /run/haproxy/admin.sock` (or HOST:PORT)."""

    def __init__(
        self,
        target: str,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        spread_s: float = DRAIN_SPREAD_S,
        remove_wait_s: float = REMOVE_WAIT_S,
    ) -> None:
        self.target = target
        path, url = parse_control_target(target)
        self._path = path
        self._host, self._port = ("", 0) if url is None else hp.split_address(url.removeprefix("http://"))
        self.interval = interval
        self.spread_s = spread_s
        self.remove_wait_s = remove_wait_s
        self.level: str | None = None
        self.tracked = hp.Tracked()
        self.last: JSON | None = None
        self.last_poll = 0.0
        self.sessions: list[JSON] = []
        self.history = RateHistory()
        self._events: deque[JSON] = deque(maxlen=MAX_EVENTS)
        self._transitions: dict[str, deque[JSON]] = {}
        self._seq = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._deadlines: dict[str, asyncio.Task[None]] = {}

    @property
    def proxy_kind(self) -> str:
        return "haproxy"

    @property
    def capabilities(self) -> frozenset[str]:
        if self.level not in (None, ADMIN_LEVEL):
            return frozenset()
        return frozenset({CAP_MUTATE, CAP_ADD_REMOVE, CAP_CLOSE_CONNECTION})

    @property
    def read_only_reason(self) -> str | None:
        if self.level in (None, ADMIN_LEVEL):
            return None
        return f"HAProxy's socket {self.target} is at level {self.level}; actions need `stats socket ... level admin`"

    def unsupported_topology(self, what: str) -> SourceError:
        """Backends and `use_backend` rules are HAProxy's configuration, not something its runtime API changes."""
        return SourceError(
            501,
            "unsupported",
            f"{what} is not supported by HAProxy's runtime API: backends and use_backend rules live in its "
            f"configuration (edit haproxy.cfg and reload) ({self.target})",
        )

    async def aclose(self) -> None:
        for task in self._deadlines.values():
            task.cancel()
        for task in list(self._deadlines.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._deadlines.clear()

    # -- transport --------------------------------------------------------------------------------

    async def command(self, line: str) -> str:
        """Send one command, read the answer to EOF."""
        writer = None
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                if self._path is not None:
                    reader, writer = await asyncio.open_unix_connection(self._path, limit=MAX_ANSWER_BYTES)
                else:
                    reader, writer = await asyncio.open_connection(self._host, self._port, limit=MAX_ANSWER_BYTES)
                writer.write(line.encode() + b"\n")
                await writer.drain()
                data = await reader.read(MAX_ANSWER_BYTES)
                chunks = [data]
                while data:
                    data = await reader.read(MAX_ANSWER_BYTES)
                    chunks.append(data)
        except (OSError, TimeoutError) as exc:
            raise SourceUnavailable(f"{self.target}: {exc or type(exc).__name__}") from exc
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        return b"".join(chunks).decode("utf-8", "replace")

    async def _mutate(self, line: str, name: str) -> None:
        """A runtime command that changes something: anything but its usual answer is the refusal, verbatim."""
        answer = (await self.command(line)).strip()
        if answer in OK_ANSWERS:
            return
        if answer.startswith("Permission denied"):
            raise SourceError(403, "forbidden", f"{line}: {answer} ({self.read_only_reason or 'level too low'})")
        if answer.startswith("No such"):
            raise SourceError(404, "not_found", f"{name}: {answer}")
        raise SourceError(409, "conflict", f"{line}: {answer}")

    # -- reading ----------------------------------------------------------------------------------

    async def status(self) -> JSON:
        async with self._lock:
            return await self._poll()

    async def _poll(self) -> JSON:
        if self.level is None:
            self.level = (await self.command("show cli level")).strip() or "user"
        info_text, stat_text, state_text, sess_text = [
            await self.command(c) for c in ("show info", "show stat typed", "show servers state", "show sess")
        ]
        now = time.time()
        try:
            info = hp.parse_info(info_text)
            status = hp.build_status(
                hp.parse_stat_typed(stat_text),
                hp.parse_servers_state(state_text),
                sessions := hp.parse_sess(sess_text),
                info,
                now,
                self.target,
                self.tracked,
            )
        except (hp.ParseError, KeyError, ValueError) as exc:
            raise SourceError(502, "bad_response", f"{self.target} is not an HAProxy runtime API: {exc}") from exc
        if self.last is not None and self.last["engine"]["pid"] != status["engine"]["pid"]:
            self.last = None  # a restarted HAProxy: no transitions against the old one
        for event in hp.state_events(self.last, status, now):
            self._emit(event)
        for name in list(self.tracked.drains):
            if not any(s["name"] == name and s["admin"] == "draining" for s in status["servers"]):
                del self.tracked.drains[name]  # undrained or removed by someone else
        status["totals"]["last_seq"] = self._seq
        status["engine"]["read_only"] = self.read_only_reason
        self.sessions = sessions
        self.last, self.last_poll = status, now
        self.history.add(status, now)
        return status

    def _emit(self, event: JSON) -> None:
        self._seq += 1
        event = {"seq": self._seq, **event}
        self._events.append(event)
        if event["type"] == "state":
            history = self._transitions.setdefault(event["server"], deque(maxlen=MAX_HISTORY))
            history.append({"ts": event["ts"], "from": event["old"], "to": event["new"], "reason": event["reason"]})
        self._wake.set()

    def _operator(self, action: str, name: str, ok: bool, detail: str) -> None:
        self._emit(
            {"type": "operator", "ts": time.time(), "action": action, "server": name, "ok": ok, "detail": detail}
        )

    async def server(self, name: str) -> JSON:
        status = await self.status()
        server = self._find(status, name)
        conns = [
            {
                "id": int(s["id"], 16),
                "client": s["client"],
                "server": s["server"],
                "listener": s["frontend"],
                "started": status["engine"]["started"] and time.time() - s["age_s"],
                "age_s": s["age_s"],
                "bytes_in": None,
                "bytes_out": None,
                "kind": "tcp",
                "path": None,
            }
            for s in self.sessions
            if s["server"] == server["name"]
        ]
        return {**server, "history": list(self._transitions.get(server["name"], ())), "connections": conns}

    async def rates(self) -> JSON:
        return self.history.as_json()

    async def events(self, since: int = 0, limit: int | None = None) -> JSON:
        await self._fresh()
        events = [e for e in self._events if e["seq"] > since][: limit or MAX_EVENTS]
        return {"events": events, "next": events[-1]["seq"] if events else since, "dropped": 0}

    async def _fresh(self) -> None:
        if time.time() - self.last_poll >= self.interval:
            await self.status()

    async def stream_events(self, since: int = 0) -> AsyncIterator[JSON]:
        """Events come from polls: poll at the interval unless someone else just did."""
        last = since if since <= self._seq else 0
        while True:
            self._wake.clear()
            await self._fresh()
            for event in [e for e in self._events if e["seq"] > last]:
                last = event["seq"]
                yield event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    # -- naming and the interlock -----------------------------------------------------------------

    def _find(self, status: JSON, name: str) -> JSON:
        """`backend/server`, or a bare server name that only one backend has."""
        servers = status["servers"]
        if "/" in name:
            match = [s for s in servers if s["name"] == name]
        else:
            match = [s for s in servers if s["name"].split("/", 1)[1] == name]
        if not match:
            raise SourceError(404, "not_found", f"no server {name!r} in HAProxy {self.target}")
        if len(match) > 1:
            names = ", ".join(s["name"] for s in match)
            raise SourceError(409, "conflict", f"{name!r} is in several backends ({names}); name it as BACKEND/SERVER")
        return dict(match[0])

    @staticmethod
    def _refuse_if_last(status: JSON, server: JSON, what: str) -> None:
        pool = [s for s in status["servers"] if s["pool"] == server["pool"] and hp.eligible(s)]
        if hp.eligible(server) and len(pool) == 1:
            raise SourceError(
                409, "conflict", f"{what} would leave no eligible server in backend {server['pool']}; use force"
            )

    async def _target(self, name: str) -> tuple[JSON, JSON]:
        status = await self.status()
        if CAP_MUTATE not in self.capabilities:
            raise SourceError(403, "forbidden", self.read_only_reason or "read-only")
        return status, self._find(status, name)

    async def _after(self, action: str, name: str, detail: str) -> JSON:
        self._operator(action, name, True, detail)
        return self._find(await self.status(), name)

    # -- mutations --------------------------------------------------------------------------------

    async def drain(self, name: str, deadline_s: float | None = None, force: bool = False) -> JSON:
        status, server = await self._target(name)
        name = server["name"]
        if server["admin"] == "disabled":
            raise SourceError(409, "conflict", f"{name} is disabled; enable it before draining")
        if not force:
            self._refuse_if_last(status, server, f"drain {name}")
        await self._mutate(f"set server {name} state drain", name)
        now = time.time()
        drain = self.tracked.drains.get(name) or {"started": now, "active_at_start": server["active"]}
        drain["deadline"] = None if deadline_s is None else now + deadline_s
        self.tracked.drains[name] = drain
        old = self._deadlines.pop(name, None)
        if old is not None:
            old.cancel()
        if deadline_s is not None:
            self._deadlines[name] = asyncio.create_task(self._deadline(name, deadline_s))
        detail = "new sessions go elsewhere" + (f"; the rest closed in {deadline_s:g} s" if deadline_s else "")
        return await self._after("drain", name, detail)

    async def _deadline(self, name: str, delay: float) -> None:
        """At the deadline, close what is left of `name`'s sessions, all of one client's at once, spread."""
        await asyncio.sleep(delay)
        await self.status()
        left = [s for s in self.sessions if s["server"] == name]
        schedule = schedule_by_client(left, lambda s: client_key(s["client"]), self.spread_s)
        self._operator("close", name, True, f"drain deadline: closing {len(left)} session(s) over {self.spread_s:g} s")
        start = asyncio.get_running_loop().time()
        for offset, group in schedule:
            await asyncio.sleep(max(0.0, start + offset - asyncio.get_running_loop().time()))
            for sess in group:
                with contextlib.suppress(SourceError):
                    await self._mutate(f"shutdown session {sess['id']}", name)
        self._deadlines.pop(name, None)

    async def undrain(self, name: str) -> JSON:
        _, server = await self._target(name)
        name = server["name"]
        if server["admin"] != "draining":
            raise SourceError(409, "conflict", f"{name} is not draining (state {server['state']})")
        await self._ready(name)
        return await self._after("undrain", name, "takes new sessions again")

    async def _ready(self, name: str) -> None:
        task = self._deadlines.pop(name, None)
        if task is not None:
            task.cancel()
        self.tracked.drains.pop(name, None)
        await self._mutate(f"set server {name} state ready", name)

    async def set_weight(self, name: str, weight: int, force: bool = False) -> JSON:
        status, server = await self._target(name)
        name = server["name"]
        if weight == 0 and not force:
            self._refuse_if_last(status, server, f"weight 0 on {name}")
        await self._mutate(f"set server {name} weight {int(weight)}", name)
        return await self._after("weight", name, f"weight {weight}")

    async def disable(self, name: str, force: bool = False) -> JSON:
        status, server = await self._target(name)
        name = server["name"]
        if not force:
            self._refuse_if_last(status, server, f"disabled {name}")
        await self._mutate(f"set server {name} state maint", name)
        return await self._after("disable", name, "maintenance")

    async def enable(self, name: str) -> JSON:
        _, server = await self._target(name)
        await self._ready(server["name"])
        return await self._after("enable", server["name"], "ready")

    async def add(
        self, name: str, address: str, weight: int = 1, max_conns: int | None = None, pool: str | None = None
    ) -> JSON:
        """`add server` (HAProxy starts it in maintenance), then `enable health` and `enable server`.

        `pool` is the backend (the dashboard's add form names it); a name `BACKEND/SERVER` says it too.
        """
        if pool is not None and "/" not in name:
            name = f"{pool}/{name}"
        status = await self.status()
        if CAP_ADD_REMOVE not in self.capabilities:
            raise SourceError(403, "forbidden", self.read_only_reason or "read-only")
        pools = sorted({s["pool"] for s in status["servers"]})
        if "/" in name:
            pool = name.split("/", 1)[0]
        elif len(pools) == 1:
            pool, name = pools[0], f"{pools[0]}/{name}"
        else:
            raise SourceError(400, "bad_request", f"name the backend: BACKEND/{name} (backends: {', '.join(pools)})")
        siblings = [s for s in status["servers"] if s["pool"] == pool]
        if any(s["name"] == name for s in siblings):
            raise SourceError(409, "conflict", f"{name} already exists")
        checked = next((s["health"] for s in siblings if s["health"].get("check_status")), None)
        line = f"add server {name} {address} weight {int(weight)}"
        if max_conns:
            line += f" maxconn {int(max_conns)}"
        if checked is not None:  # HAProxy 2.6 ignores default-server here: copy the siblings' check counts
            line += f" check rise {checked['rise']} fall {checked['fall']}"
        await self._mutate(line, name)
        if checked is not None:
            await self._mutate(f"enable health {name}", name)
        await self._mutate(f"enable server {name}", name)
        return await self._after("add", name, f"{address}, weight {weight}")

    async def remove(self, name: str, force: bool = False) -> JSON:
        """HAProxy deletes only a server in maintenance with no sessions: drain, wait for zero, maint, delete."""
        status, server = await self._target(name)
        name = server["name"]
        if not force:
            self._refuse_if_last(status, server, f"remove {name}")
        if server["active"] and server["admin"] == "active":
            await self._mutate(f"set server {name} state drain", name)
            self._operator("remove", name, True, f"draining first: {server['active']} session(s) open")
        if force and server["active"]:
            await self._mutate(f"shutdown sessions server {name}", name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.remove_wait_s
        while server["active"]:
            if loop.time() >= deadline:
                raise SourceError(
                    409, "conflict", f"{name} still has {server['active']} session(s); drained, remove again or force"
                )
            await asyncio.sleep(REMOVE_POLL_S)
            server = self._find(await self.status(), name)
        await self._mutate(f"set server {name} state maint", name)
        await self._mutate(f"del server {name}", name)
        self.tracked.drains.pop(name, None)
        self._operator("remove", name, True, "no sessions left; maintenance, then del server")
        await self.status()
        return {"removed": name}

    async def close_connection(self, conn_id: int) -> JSON:
        await self.status()
        if CAP_CLOSE_CONNECTION not in self.capabilities:
            raise SourceError(403, "forbidden", self.read_only_reason or "read-only")
        sess = next((s for s in self.sessions if int(s["id"], 16) == conn_id), None)
        if sess is None:
            raise SourceError(404, "not_found", f"no session {conn_id:#x}")
        await self._mutate(f"shutdown session {sess['id']}", sess["server"])
        self._operator("close", sess["server"], True, f"session {sess['id']} from {sess['client']}")
        await self.status()
        return {"closed": conn_id}
