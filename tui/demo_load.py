"""Synthetic demo traffic: WebSocket clients come and go, chat a little; a few refusals and plain GETs.

With --feed-host / --feed-prefix part of the clients go to the demo's second service (the feed pool), half by
Host and half by path, so both pools and both routes show traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

# Modest on purpose: the demo must show movement, not load the machine (2 cores shared with the TUI).
NEW_PER_SECOND = 3.0
KEEP_MIN, KEEP_MAX = 20, 40
LIFETIME_S = (4.0, 40.0)
MESSAGE_EVERY_S = (0.5, 3.0)
# Never run unattended for ever: the demo load stops by itself after this long.
DEFAULT_DURATION_S = 3600.0
CONNECT_TIMEOUT_S = 5.0
# The share of WebSocket clients and plain GETs that go to the feed service, when there is one.
FEED_SHARE = 0.35


@dataclass(frozen=True)
class Target:
    """Where one request goes: the proxy's address, the Host it names and the path."""

    address: str
    host: str
    path: str

    def uri(self) -> str:
        """The ws:// URI: its authority is the Host header; the TCP connection goes to `address` regardless."""
        return f"ws://{self.host}{self.path}"


@dataclass(frozen=True)
class Services:
    """The proxy's address and how the feed service is reached (None: only the default service)."""

    address: str
    feed_host: str | None = None
    feed_prefix: str | None = None

    def pick(self, rng: random.Random, path: str) -> Target:
        """A target for `path` on the default service, or (FEED_SHARE of the time) on the feed by Host or path."""
        port = self.address.rsplit(":", 1)[1]
        feed = []
        if self.feed_host:
            feed.append(Target(self.address, f"{self.feed_host}:{port}", path))
        if self.feed_prefix:
            feed.append(Target(self.address, self.address, self.feed_prefix + path))
        if feed and rng.random() < FEED_SHARE:
            return rng.choice(feed)
        return Target(self.address, self.address, path)


async def websocket_client(target: Target, rng: random.Random) -> None:
    """One client: connect (maybe with a subprotocol), exchange messages, close."""
    offer = [Subprotocol("chat.v1")] if rng.random() < 0.5 else None
    lifetime = rng.uniform(*LIFETIME_S)
    host, port = target.address.rsplit(":", 1)
    async with connect(
        target.uri(),
        host=host,
        port=int(port),
        subprotocols=offer,
        open_timeout=CONNECT_TIMEOUT_S,
        user_agent_header="wsproxy-demo-load/1",
    ) as ws:
        deadline = time.monotonic() + lifetime
        n = 0
        while time.monotonic() < deadline:
            n += 1
            await ws.send(f"hello {n} " + "x" * rng.randint(8, 400))
            await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_S)
            await asyncio.sleep(rng.uniform(*MESSAGE_EVERY_S))


async def refused_upgrade(target: str) -> None:
    """An upgrade the backend refuses with 403, to show refusals in the handshake log."""
    with contextlib.suppress(InvalidStatus):
        async with connect(f"ws://{target}/forbidden", open_timeout=CONNECT_TIMEOUT_S):
            pass


async def plain_get(target: Target) -> None:
    """A plain HTTP request through the proxy."""
    host, port = target.address.rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), CONNECT_TIMEOUT_S)
    try:
        request = f"GET {target.path} HTTP/1.1\r\nHost: {target.host}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        await asyncio.wait_for(reader.read(), CONNECT_TIMEOUT_S)
    finally:
        writer.close()


async def run(services: Services, duration: float, seed: int | None) -> None:
    """Keep KEEP_MIN..KEEP_MAX clients open, opening about NEW_PER_SECOND, until stopped."""
    rng = random.Random(seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: set[asyncio.Task[None]] = set()
    end = time.monotonic() + duration
    while not stop.is_set() and time.monotonic() < end:
        open_now = len(tasks)
        if open_now < KEEP_MAX:
            roll = rng.random()
            if roll < 0.05:
                job = refused_upgrade(services.address)
            elif roll < 0.10:
                job = plain_get(services.pick(rng, rng.choice(["/", "/health"])))
            elif open_now < KEEP_MIN or rng.random() < 0.7:
                job = websocket_client(services.pick(rng, "/ws"), rng)
            else:
                job = None
            if job is not None:
                task = asyncio.create_task(job)
                tasks.add(task)
                task.add_done_callback(_forget(tasks))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.expovariate(NEW_PER_SECOND))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _forget(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None and not isinstance(exc, WebSocketException | OSError | TimeoutError):
                print(f"demo load: {type(exc).__name__}: {exc}", flush=True)

    return done


def main(argv: list[str] | None = None) -> None:
    """`python -m tui.demo_load --target 127.0.0.1:8000`."""
    parser = argparse.ArgumentParser(prog="python -m tui.demo_load")
    parser.add_argument("--target", required=True, metavar="HOST:PORT")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, metavar="S")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--feed-host", metavar="NAME", help="send part of the clients with this Host header")
    parser.add_argument("--feed-prefix", metavar="PATH", help="send part of the clients under this path")
    args = parser.parse_args(argv)
    asyncio.run(run(Services(args.target, args.feed_host, args.feed_prefix), args.duration, args.seed))


if __name__ == "__main__":
    main()
