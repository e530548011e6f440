"""A browser's HTTP connections for a Socket.IO client: a keep-alive pool that outlives each Socket.IO
connection, and every WebSocket on a TCP connection of its own.

Browsers (and Node's `http.Agent` with keepAlive) keep idle HTTP connections open and send the next request
on one, across reconnects; a WebSocket is always opened on a new connection. python-engineio's default
(a session per connection, closed with it) and aiohttp's own `ws_connect` (which takes an idle pooled
connection for the upgrade) both hide what a proxy does to such a pool, so this session does what a browser
does. Every request carries `X-Client: <source address>` so the nodes can count each client's connections.
"""

from __future__ import annotations

from typing import Any

import aiohttp

BROWSER_IDLE_S = 300.0  # Chrome and Firefox keep an idle connection for minutes; longer than any test run
BROWSER_PER_HOST = 6  # connections a browser opens to one host at most
CLIENT_HEADER = "X-Client"  # the node's name for it (tests/e2e/sio_node.py)


class BrowserSession:
    """Quacks like the aiohttp.ClientSession python-engineio uses: plain requests go through the keep-alive
    pool, `ws_connect` through a connector that never reuses (nor keeps) a connection. Close it once, when
    the user leaves: python-engineio never closes a session it was handed."""

    def __init__(self, ip: str) -> None:
        headers = {CLIENT_HEADER: ip}
        self.pool = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                local_addr=(ip, 0), keepalive_timeout=BROWSER_IDLE_S, limit_per_host=BROWSER_PER_HOST
            ),
            headers=headers,
        )
        self.sockets = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(ip, 0), force_close=True), headers=headers
        )

    def __getattr__(self, name: str) -> Any:  # get, post, cookie_jar, closed, ...: the pool's
        return getattr(self.pool, name)

    def ws_connect(self, *args: Any, **kwargs: Any) -> Any:
        return self.sockets.ws_connect(*args, **kwargs)

    async def close(self) -> None:
        await self.pool.close()
        await self.sockets.close()
