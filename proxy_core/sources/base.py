"""The source interface: the control API's shapes (docs/control-api.md) as the common model of every proxy.

Status is `/v1/status`, a server is `SERVER`, events are the `EVENT`s of the event stream. A source that cannot do
something leaves its capability out and raises SourceError(501, "unsupported", why) if asked anyway.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

from proxy_core.client import ControlError, ControlUnavailable

JSON = dict[str, Any]

#: The same exceptions as the wsproxy client's, so callers catch one pair whatever the proxy.
SourceError = ControlError
SourceUnavailable = ControlUnavailable

CAP_HANDSHAKES = "handshakes"  # a handshake log (WebSocket upgrade status, path, latency)
CAP_MUTATE = "mutate"  # drain, weight, disable, enable (absent: read-only, see read_only_reason)
CAP_ADD_REMOVE = "add-remove"  # add and remove servers at run time
CAP_CLOSE_CONNECTION = "close-connection"  # close one client connection by id
CAP_PREVIEW = "preview"  # `dry_run` impact previews of drain, disable, weight, remove
CAP_REBALANCE = "rebalance"  # move clients that are on the wrong server
CAP_DEADLINE = "deadline"  # the proxy itself closes what is left at a drain deadline (else this process must stay)
CAP_FLEET = "fleet"  # can be one of a fleet (`fleet()`, `scope_changes()`); status `cluster` says if it is
CAP_POOLS = "pools"  # add and remove pools and routes at run time


class Source(ABC):
    """One proxy, seen and steered through the control API's model."""

    #: What we are attached to (socket path or address), for the status bar and error messages.
    target: str = ""

    @property
    @abstractmethod
    def capabilities(self) -> frozenset[str]:
        """What this source can do now (CAP_*); read-only sources lack CAP_MUTATE."""

    @property
    def read_only_reason(self) -> str | None:
        """Why mutations are refused (None when they are allowed or not yet known)."""
        return None

    @property
    def proxy_kind(self) -> str:
        """`wsproxy` or `haproxy`: for messages only, never for choosing behaviour."""
        return "wsproxy"

    async def __aenter__(self) -> Source:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections and stop background work (a drain deadline this process runs stops too)."""

    # Reading

    @abstractmethod
    async def status(self) -> JSON:
        """`/v1/status`."""

    @abstractmethod
    async def server(self, name: str) -> JSON:
        """One `SERVER` with `history` and `connections`."""

    @abstractmethod
    async def rates(self) -> JSON:
        """`/v1/rates`: per-second history for the graphs."""

    @abstractmethod
    async def events(self, since: int = 0, limit: int | None = None) -> JSON:
        """`{"events", "next", "dropped"}` after `since`."""

    @abstractmethod
    def stream_events(self, since: int = 0) -> AsyncIterator[JSON]:
        """Follow events live (after those buffered since `since`)."""

    # Mutations: each answers the server's new `SERVER` (remove: `{"removed": name}`)

    @abstractmethod
    async def add(
        self, name: str, address: str, weight: int = 1, max_conns: int | None = None, pool: str | None = None
    ) -> JSON:
        """Add a server (to `pool`, or the pool a POOL/NAME names, or the only one)."""

    @abstractmethod
    async def drain(self, name: str, deadline_s: float | None = None, force: bool = False) -> JSON:
        """No new connections; at the deadline the rest are closed, spread by client."""

    @abstractmethod
    async def undrain(self, name: str) -> JSON:
        """Take new connections again."""

    @abstractmethod
    async def set_weight(self, name: str, weight: int, force: bool = False) -> JSON:
        """Absolute weight 0..256."""

    @abstractmethod
    async def disable(self, name: str, force: bool = False) -> JSON:
        """Maintenance."""

    @abstractmethod
    async def enable(self, name: str) -> JSON:
        """Back from maintenance."""

    @abstractmethod
    async def remove(self, name: str, force: bool = False) -> JSON:
        """Remove a server."""

    @abstractmethod
    async def close_connection(self, conn_id: int) -> JSON:
        """Close one client connection."""

    # Optional (CAP_PREVIEW, CAP_REBALANCE)

    async def preview(self, action: str, name: str, weight: int | None = None, force: bool = False) -> JSON:
        """What drain/disable/weight/remove would move; nothing changed."""
        raise self.unsupported("impact previews")

    async def rebalance(self, rate: float | None = None, dry_run: bool = False) -> JSON:
        """Move the clients on the wrong server now."""
        raise self.unsupported("rebalance")

    async def rebalance_status(self) -> JSON:
        raise self.unsupported("rebalance")

    async def stop_rebalance(self) -> JSON:
        raise self.unsupported("rebalance")

    # Optional (CAP_POOLS): pools and routes at run time; each change answers `POOL` or `ROUTE`

    async def pools(self) -> JSON:
        """`{"pools": [POOL, ...]}` (those the status lists)."""
        return {"pools": (await self.status()).get("pools") or []}

    async def add_pool(self, name: str, balance: str | None = None, check: JSON | None = None) -> JSON:
        raise self.unsupported_topology("adding a pool")

    async def remove_pool(self, name: str) -> JSON:
        raise self.unsupported_topology("removing a pool")

    async def routes(self) -> JSON:
        """`{"routes": [ROUTE, ...], "unrouted": {...}}` in the order they are tried."""
        status = await self.status()
        return {"routes": status.get("routes") or [], "unrouted": status.get("unrouted") or {}}

    async def add_route(self, pool: str, position: int | None = None, **match: str | None) -> JSON:
        raise self.unsupported_topology("adding a route")

    async def remove_route(self, ref: str) -> JSON:
        raise self.unsupported_topology("removing a route")

    def unsupported_topology(self, what: str) -> SourceError:
        return self.unsupported(what)

    # Optional (CAP_FLEET): the fleet this proxy belongs to (docs/cluster.md)

    async def fleet(self) -> JSON:
        """`/v1/fleet`: every instance and per-server fleet totals (409 `not_clustered` outside a fleet)."""
        raise self.unsupported("the fleet view")

    def scope_changes(self, *, local: bool = False, wait_applied: bool = False) -> None:
        """Every later change: this instance only (`local`), or answered once the whole fleet applied it."""
        if local or wait_applied:
            raise self.unsupported("--local and --wait-applied (fleets)")

    def unsupported(self, what: str) -> SourceError:
        return SourceError(501, "unsupported", f"{what} is not available with {self.proxy_kind} ({self.target})")
