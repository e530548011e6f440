"""Synthetic demo traffic: WebSocket clients come and go, chat a little; a few refusals and plain GETs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Callable

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


async def websocket_client(target: str, rng: random.Random) -> None:
    """One client: connect (maybe with a subprotocol), exchange messages, close."""
    offer = [Subprotocol("chat.v1")] if rng.random() < 0.5 else None
    lifetime = rng.uniform(*LIFETIME_S)
    async with connect(
        f"ws://{target}/ws",
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


async def plain_get(target: str, path: str) -> None:
    """A plain HTTP request through the proxy."""
    host, port = target.rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), CONNECT_TIMEOUT_S)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        await asyncio.wait_for(reader.read(), CONNECT_TIMEOUT_S)
    finally:
        writer.close()


async def run(target: str, duration: float, seed: int | None) -> None:
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
                job = refused_upgrade(target)
            elif roll < 0.10:
                job = plain_get(target, rng.choice(["/", "/health"]))
            elif open_now < KEEP_MIN or rng.random() < 0.7:
                job = websocket_client(target, rng)
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
    args = parser.parse_args(argv)
    asyncio.run(run(args.target, args.duration, args.seed))


if __name__ == "__main__":
    main()
