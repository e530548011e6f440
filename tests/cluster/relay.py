"""A TCP relay on loopback between one instance and Redis, that a test cuts (a partition) and restores.

Cut, it black-holes: bytes on open connections are dropped both ways and new connections are accepted but never
forwarded, as a network partition looks to a client (timeouts, not resets). Cut with `replies_only`, requests
still reach Redis and only its answers are lost (a partition in the middle of a command). Restored, it closes
what it held, so clients reconnect, and forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.cluster.conftest import free_port

CHUNK = 65536


class Relay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cut_off = False  # requests dropped (and new connections held)
        self.replies_cut = False  # Redis's answers dropped
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def cut(self, replies_only: bool = False) -> None:
        self.cut_off = not replies_only
        self.replies_cut = True

    def restore(self) -> None:
        self.cut_off = self.replies_cut = False
        self._close_all()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._close_all()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.cut_off:  # held: read and drop until restore closes it
            await self._pipe(reader, None, upstream=True)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        back = asyncio.ensure_future(self._pipe(up_reader, writer, upstream=False))
        self._tasks.add(back)
        back.add_done_callback(self._tasks.discard)
        await self._pipe(reader, up_writer, upstream=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK):
                if writer is None or (self.cut_off if upstream else self.replies_cut):
                    continue
                writer.write(data)
                await writer.drain()
        if writer is not None:
            writer.close()
