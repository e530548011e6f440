"""A naive asyncio-streams TCP proxy: the baseline a first attempt in Python would give.

Per connection: pick a backend round robin, open it with `asyncio.open_connection`, then two coroutines each loop
`reader.read()` -> `writer.write()` + `await writer.drain()`; when either direction ends both sides are closed.
Runs on uvloop when installed (pass `--asyncio` for the stock loop). Prints `READY` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator

READ_SIZE = 65536  # one read per chunk, as a typical hand-written relay does.


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF or error."""
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        return


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def make_handler(backends: Iterator[tuple[str, int]]) -> Handler:
    """A start_server callback relaying each client to the next backend."""

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        host, port = next(backends)
        try:
            b_reader, b_writer = await asyncio.open_connection(host, port)
        except OSError:
            c_writer.close()
            return
        tasks = [
            asyncio.ensure_future(pipe(c_reader, b_writer)),
            asyncio.ensure_future(pipe(b_reader, c_writer)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            c_writer.close()
            b_writer.close()

    return handle


def parse_addr(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host or "127.0.0.1", int(port)


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def serve(listen: tuple[str, int], backends: list[tuple[str, int]]) -> None:
    server = await asyncio.start_server(
        make_handler(itertools.cycle(backends)), listen[0], listen[1], backlog=4096, reuse_address=True
    )
    await until_signalled(server)


async def until_signalled(server: asyncio.AbstractServer) -> None:
    """Say READY, serve until SIGTERM or SIGINT, close (the relays of the benchmark's columns share this)."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _set_once, stop)
    print("READY", flush=True)
    await stop
    server.close()


Serve = Callable[[tuple[str, int], list[tuple[str, int]]], Awaitable[None]]


def run_relay(serve: Serve, description: str, argv: list[str] | None = None) -> int:
    """`--listen HOST:PORT --backend HOST:PORT...` on uvloop (the stock loop with `--asyncio` or without uvloop)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--backend", action="append", required=True, help="HOST:PORT (repeat)")
    p.add_argument("--asyncio", action="store_true", help="use the stock asyncio loop, not uvloop")
    args = p.parse_args(argv)
    coro = serve(parse_addr(args.listen), [parse_addr(b) for b in args.backend])
    if args.asyncio:
        asyncio.run(coro)
    else:
        try:
            import uvloop
        except ImportError:
            asyncio.run(coro)
        else:
            uvloop.run(coro)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_relay(serve, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
