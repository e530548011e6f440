"""A demo backend: a WebSocket echo server that also answers GET / with a page and /health with 200."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

SUBPROTOCOL = "chat.v1"
PAGE = "<!doctype html><title>{name}</title><h1>demo backend {name}</h1><p>WebSocket echo on /ws</p>\n"


def make_process_request(name: str) -> Callable[[ServerConnection, Request], Response | None]:
    """Plain HTTP requests get a page or a health answer; upgrades to /forbidden are refused."""

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/health":
            return connection.respond(HTTPStatus.OK, f"{name} ok\n")
        if path == "/forbidden":
            return connection.respond(HTTPStatus.FORBIDDEN, "not here\n")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            response = connection.respond(HTTPStatus.OK, PAGE.format(name=name))
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "text/html; charset=utf-8"
            return response
        return None

    return process_request


def select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """Speak chat.v1 when offered; accept clients (and health checks) that offer nothing."""
    return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in offered else None


async def run(name: str, host: str, port: int) -> None:
    """Echo every message with the backend's name in front, until SIGTERM or SIGINT."""

    async def echo(ws: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                await ws.send(f"{name}: {message}" if isinstance(message, str) else message)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        echo,
        host,
        port,
        process_request=make_process_request(name),
        select_subprotocol=select_subprotocol,
        subprotocols=[Subprotocol(SUBPROTOCOL)],
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        # The launcher reads this line: with --port 0 it is the only way to learn the port.
        print(f"demo backend {name} on {host}:{bound}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """`python -m tui.demo_backend --name b1 --port 9001`."""
    parser = argparse.ArgumentParser(prog="python -m tui.demo_backend")
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    args = parser.parse_args(argv)
    asyncio.run(run(args.name, args.host, args.port))


if __name__ == "__main__":
    main()
