"""One Socket.IO node, like the seed's `node ./websocket-server.js 8001`: python-socketio on aiohttp.

It greets each new client with a `hello` event carrying its name, acknowledges every `msg` with the payload
and its name, answers `GET /health` (200) and `GET /stats` (its counters, as JSON), counts every 400 it sends
(an unknown session id is what a client whose requests land on different nodes gets), counts the requests and
TCP connections of each client that names itself in an `X-Client` header (so a test can see a client's HTTP
keep-alive pool reuse connections), and on SIGTERM stops
accepting, closes its clients' connections cleanly (they reconnect) and exits 0.

    python tests/e2e/sio_node.py --name b1 [--port 0] [--pid-file b1.pid] [--stats-file b1.stats.jsonl]

Prints `NAME listening on 127.0.0.1:PORT pid PID` once it accepts connections, `NAME stopped` at the end;
with --stats-file, appends its final counters there as one JSON line when it stops (they die with it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNKNOWN_SESSION = (b"Invalid session", b"Session ID unknown")  # python-engineio's words, then the Node server's
CLIENT_HEADER = "X-Client"  # the test clients' own name (their source address: behind the proxy all are 127.0.0.1)


class Node:
    """The Socket.IO application and its counters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sio = socketio.AsyncServer(async_mode="aiohttp", always_connect=True)
        self.counts = {"connects": 0, "disconnects": 0, "messages": 0, "bad_requests": 0, "unknown_session": 0}
        self.clients: set[str] = set()
        self.requests: dict[str, int] = {}  # per X-Client: HTTP requests (a WebSocket upgrade is one)
        self.connections: dict[str, set[object]] = {}  # per X-Client: the TCP connections they came on
        self.sio.on("connect", self.on_connect)
        self.sio.on("disconnect", self.on_disconnect)
        self.sio.on("msg", self.on_msg)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        self.counts["connects"] += 1
        self.clients.add(sid)
        await self.sio.emit("hello", {"node": self.name}, to=sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.counts["disconnects"] += 1
        self.clients.discard(sid)

    async def on_msg(self, sid: str, data: Any) -> dict[str, Any]:
        self.counts["messages"] += 1
        return {"payload": data, "node": self.name}

    @web.middleware
    async def count_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if client := request.headers.get(CLIENT_HEADER):
            self.requests[client] = self.requests.get(client, 0) + 1
            self.connections.setdefault(client, set()).add(request.protocol)  # one protocol per TCP connection
        response = await handler(request)
        if response.status == 400:
            self.counts["bad_requests"] += 1
            body = getattr(response, "body", None)
            if isinstance(body, bytes) and any(words in body for words in UNKNOWN_SESSION):
                self.counts["unknown_session"] += 1
        return response

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    def snapshot(self) -> dict[str, Any]:
        per_client = {c: {"requests": n, "connections": len(self.connections[c])} for c, n in self.requests.items()}
        counts = {"name": self.name, "pid": os.getpid(), "clients": len(self.clients), **self.counts}
        return {**counts, "per_client": per_client}

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.count_errors])
        app.router.add_get("/health", self.health)
        app.router.add_get("/stats", self.stats)
        self.sio.attach(app)
        return app

    async def close_clients(self) -> None:
        """Close every client's connection, as a Node server's `io.close()` does at shutdown: no Socket.IO
        goodbye (after which a client would not reconnect), the transport closes (a WebSocket close frame), so
        each client reconnects by itself, through the proxy, to a node that is up."""
        for sock in list(self.sio.eio.sockets.values()):
            with contextlib.suppress(Exception):
                await sock.close(wait=False, abort=True)
                await sock.queue.put(None)  # ends its writer, which closes the WebSocket


async def serve(name: str, host: str, port: int, pid_file: str | None, stats_file: str | None) -> int:
    node = Node(name)
    runner = web.AppRunner(node.app(), handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0]
    if pid_file:  # written whole (renamed into place): whoever sees it can read it
        temporary = Path(f"{pid_file}.tmp")
        temporary.write_text(f"{os.getpid()}\n", encoding="utf-8")
        temporary.replace(pid_file)
    print(f"{name} listening on {bound[0]}:{bound[1]} pid {os.getpid()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await site.stop()  # no new connections
    await node.close_clients()
    await node.sio.shutdown()
    await runner.cleanup()
    if stats_file:
        with open(stats_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(node.snapshot()) + "\n")
    print(f"{name} stopped", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--pid-file", help="write the PID here once listening")
    parser.add_argument("--stats-file", help="append the final counters here (JSON line) on a clean stop")
    args = parser.parse_args()
    return asyncio.run(serve(args.name, args.host, args.port, args.pid_file, args.stats_file))


if __name__ == "__main__":
    raise SystemExit(main())
