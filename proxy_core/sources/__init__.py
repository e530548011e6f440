"""Where the dashboard and the CLI get their data and send their actions: one interface, one class per proxy.

`open_source()` picks the implementation; nothing above this package knows which proxy it talks to.
"""

from __future__ import annotations

from proxy_core.sources.base import (
    CAP_ADD_REMOVE,
    CAP_CLOSE_CONNECTION,
    CAP_DEADLINE,
    CAP_FLEET,
    CAP_HANDSHAKES,
    CAP_MUTATE,
    CAP_POOLS,
    CAP_PREVIEW,
    CAP_REBALANCE,
    Source,
    SourceError,
    SourceUnavailable,
)

__all__ = [
    "CAP_ADD_REMOVE",
    "CAP_CLOSE_CONNECTION",
    "CAP_DEADLINE",
    "CAP_FLEET",
    "CAP_HANDSHAKES",
    "CAP_MUTATE",
    "CAP_POOLS",
    "CAP_PREVIEW",
    "CAP_REBALANCE",
    "Source",
    "SourceError",
    "SourceUnavailable",
    "open_source",
]


def open_source(*, control: str | None = None, haproxy: str | None = None, token: str | None = None) -> Source:
    """The wsproxy control API at `control`, or HAProxy's runtime API at `haproxy` (a socket path or HOST:PORT)."""
    if haproxy is not None:
        from proxy_core.sources.haproxy import HaproxySource

        return HaproxySource(haproxy)
    from proxy_core.sources.wsproxy import WsproxySource

    if control is None:
        raise ValueError("give a control target or an HAProxy socket")
    return WsproxySource(control, token=token)
