"""The supervisor<->worker channel: length-prefixed orjson messages over a unix socketpair, both ends asyncio.

Messages are JSON objects with a type in "t". Supervisor -> worker:
  hello {config (pickled EngineConfig, hex), index, count, id_base, pool, held}   first message, once; pool as
       below; held: {listener index: fd} of the supervisor's listening sockets (workers/reuseport.py)
  pool {v, pools: [[name, balance], ...], qualified, routes: [{Route fields}], plans: {address: {ListenerPlan
       fields}}, servers: [[name, host, port, weight, max_conns, admin, up, connect_host, pool, short], ...]}
                           after every change of a server, pool or route; acked (topology.py builds it)
  watch {names}            servers whose open connections the reports should list (the detail endpoint)
  close_server {name, spread, reason}   close that server's connections spread over `spread` s
  close {req, id}          close one connection (local id); answered by `closed {req, ok}`
  stop                     stop accepting now (first signal)
  shutdown {grace}         graceful stop, then exit 0
  reload_certs {req, listeners}   load these TLS listeners' files again; answered by `certs_reloaded {req, results}`
Worker -> supervisor:
  ready {pid, addresses}   listeners bound
  pool_ack {v}             pool version v is in force
  report {...}             every REPORT_INTERVAL_S: cumulative counters, route matches by route key and 404/421
                           answers included, edge counters in "edge" (see worker.Worker.report, workers/edge.py)
  events {events}          batches of handshake/close/connect_failed events, ids already global
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

import orjson

HEADER = struct.Struct("!I")
MAX_MESSAGE = 64 * 1024 * 1024  # a report listing every connection of a watched server stays far below
Message = dict[str, Any]


class Link:
    """One end of a worker channel; `send` never blocks (the kernel buffer and the transport absorb bursts)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Link:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(reader, writer)

    def send(self, message: Message) -> None:
        if self.writer.is_closing():
            return
        payload = orjson.dumps(message)
        self.writer.write(HEADER.pack(len(payload)) + payload)

    async def recv(self) -> Message | None:
        """The next message, or None when the other end has gone."""
        try:
            header = await self.reader.readexactly(HEADER.size)
            (size,) = HEADER.unpack(header)
            if size > MAX_MESSAGE:
                return None
            data = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        message = orjson.loads(data)
        return message if isinstance(message, dict) else None

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def close(self) -> None:
        self.writer.close()
