"""The TLS handshake under the head deadline: a handshake not done by `timeouts.head` is closed and counted.

uvloop's own handshake timeout closes a slow handshake without telling anyone, so the engine starts the
handshake itself on the raw transport (as the PROXY-then-TLS path does) and keeps the transports still
handshaking, oldest first; one timer per listener closes those past the deadline and counts them as a failure
with reason "timeout". A connection that closed meanwhile (the peer left, or a TLS error already counted) is
only forgotten. uvloop's timeout stays as a backstop, a little later.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from proxy_core.datapath.tls import ListenerTls

if TYPE_CHECKING:
    from proxy_core.datapath.intake import TlsClientSide

TIMEOUT_REASON = "timeout"
BACKSTOP_S = 5.0  # uvloop's handshake timeout is this much later than the engine's deadline
SWEEP_STEP_S = 0.25  # at most this late past the deadline (as the PROXY header's sweep)


class HandshakeDeadline:
    """One TLS listener's handshakes in progress; closes and counts those not done within `deadline` s."""

    def __init__(self, tls: ListenerTls, deadline: float) -> None:
        self.tls = tls
        self.deadline = deadline
        self.backstop = deadline + BACKSTOP_S
        self.pending: dict[int, tuple[float, asyncio.Transport]] = {}  # in order of arrival
        self._next = 0
        self._sweep: asyncio.TimerHandle | None = None

    def begin(self, transport: asyncio.Transport, client: TlsClientSide) -> None:
        """Watch this connection's handshake; the client's connection_made (handshake done) ends the watch."""
        self._next += 1
        client.watch, client.watch_key = self, self._next
        self.pending[self._next] = (time.monotonic(), transport)
        if self._sweep is None:
            step = min(self.deadline / 4, SWEEP_STEP_S)
            self._sweep = asyncio.get_running_loop().call_later(step, self._sweep_pending, step)

    def done(self, key: int) -> None:
        self.pending.pop(key, None)

    def _sweep_pending(self, step: float) -> None:
        self._sweep = None
        now = time.monotonic()
        while self.pending:
            key, (started, transport) = next(iter(self.pending.items()))
            if now - started < self.deadline:
                break
            del self.pending[key]
            if not transport.is_closing():
                transport.abort()
                self.tls.failed(TIMEOUT_REASON)
        if self.pending:
            self._sweep = asyncio.get_running_loop().call_later(step, self._sweep_pending, step)
