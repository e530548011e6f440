"""The access log: one JSON line per closed connection (like HAProxy's tcplog), written in batches.

Writing each line as it comes costs a system call per connection; nginx's `access_log ... buffer=64k
flush=1s` batches instead, and so does this: lines gather in memory and go out in one write when 64 KiB
have gathered or a second has passed (`flush_every`), and at shutdown. Each write holds whole lines
only, so several workers appending to one file (O_APPEND) never interleave inside a line. A failed
write (disk full, a closed pipe) drops that batch, is counted and reported at most once a minute; it
never stops the engine.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import orjson

BUFFER_BYTES = 64 * 1024
FLUSH_INTERVAL_S = 1.0
ERROR_REPORT_INTERVAL_S = 60.0


class AccessLog:
    """Batched JSON lines to a file descriptor it may own."""

    def __init__(self, fd: int, *, owned: bool, name: str, is_stdout: bool = False) -> None:
        self.fd = fd
        self.owned = owned
        self.is_stdout = is_stdout
        self.name = name
        self.lines_written = 0
        self.lines_dropped = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._last_error_report = -ERROR_REPORT_INTERVAL_S

    @classmethod
    def open(cls, target: str) -> AccessLog:
        """`-` for standard output, else a file appended to (created if missing); raises OSError."""
        if target == "-":
            return cls(sys.stdout.fileno(), owned=False, name="standard output", is_stdout=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return cls(fd, owned=True, name=target)

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write what has gathered, whole lines only."""
        if not self._pending:
            return
        lines = len(self._pending)
        data = memoryview(b"".join(self._pending))
        self._pending.clear()
        self._pending_bytes = 0
        if self.is_stdout:
            sys.stdout.flush()  # what print() buffered goes first, so the order on screen is kept
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError as exc:
            self.lines_dropped += lines
            now = time.monotonic()
            if now - self._last_error_report >= ERROR_REPORT_INTERVAL_S:
                self._last_error_report = now
                print(
                    f"wsproxy: access log {self.name}: write failed ({exc.strerror}); "
                    f"{self.lines_dropped} line(s) dropped so far",
                    file=sys.stderr,
                    flush=True,
                )
            return
        self.lines_written += lines

    async def flush_every(self, interval: float = FLUSH_INTERVAL_S) -> None:
        """Run for the engine's life: a line reaches the file within `interval` of its connection closing."""
        while True:
            await asyncio.sleep(interval)
            self.flush()

    def close(self) -> None:
        self.flush()
        if self.owned:
            os.close(self.fd)
            self.owned = False
