"""The wsproxy control API as a Source: ControlClient already speaks the model, so this only adds capabilities."""

from __future__ import annotations

from proxy_core.client import ControlClient
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
)

WSPROXY_CAPABILITIES = frozenset(
    {
        CAP_HANDSHAKES,
        CAP_MUTATE,
        CAP_ADD_REMOVE,
        CAP_CLOSE_CONNECTION,
        CAP_DEADLINE,
        CAP_PREVIEW,
        CAP_REBALANCE,
        CAP_FLEET,
        CAP_POOLS,
    }
)


class WsproxySource(ControlClient, Source):
    """A wsproxy engine (`--control`/`--attach`): every call is one route of docs/control-api.md."""

    async def __aenter__(self) -> WsproxySource:
        return self

    @property
    def capabilities(self) -> frozenset[str]:
        return WSPROXY_CAPABILITIES

    def scope_changes(self, *, local: bool = False, wait_applied: bool = False) -> None:
        """Sent with every change as a query parameter; an engine outside a fleet ignores both."""
        self.change_params = {"local": "true"} if local else {"wait_applied": "true"} if wait_applied else {}
