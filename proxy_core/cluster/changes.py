"""How the Engine's change methods take the fleet route: checked here once, then appended to the stream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy_core.cluster.scope import CHANGE_SCOPE
from proxy_core.config import parse_address
from proxy_core.errors import BadRequest, ConfigError, Conflict, WsproxyError
from proxy_core.events import EventBus, OperatorAction
from proxy_core.registry import Registry

if TYPE_CHECKING:
    from proxy_core.cluster.store import Cluster


def parse_add(address: str, max_conns: int | None) -> tuple[str, int]:
    """An add's host and port, refused with the reason when the address or max_conns is malformed."""
    try:
        host, port = parse_address("address", address)
    except ConfigError as exc:
        raise BadRequest(f"invalid address {address!r}: expected HOST:PORT with a port in 1..65535") from exc
    if max_conns is not None and max_conns < 1:
        raise BadRequest(f"invalid max_conns {max_conns}: use an integer >= 1")
    return host, port


class FleetChanges:
    """Mixed into the Engine: each change method asks `_fleet` whether to submit instead of applying here."""

    cluster: Cluster | None
    local_overrides: set[str]
    bus: EventBus
    registry: Registry

    async def _resolve(self, host: str) -> None:
        raise NotImplementedError

    def _fleet(self, action: str, name: str | None) -> bool:
        """True when this change goes to the fleet's stream; a --local one is marked as this instance's override."""
        if self.cluster is None:
            return False
        scope = CHANGE_SCOPE.get()
        if scope.from_stream:
            return False
        if scope.local:
            if name is not None:
                self.local_overrides.add(name)
            return False
        try:
            self.cluster.refuse_if_offline()
        except WsproxyError as exc:
            self.bus.publish(OperatorAction(action=action, server=name, ok=False, detail=exc.message))
            raise
        return True

    async def _submit(self, op: str, name: str, **fields: Any) -> Any:
        assert self.cluster is not None
        try:
            return await self.cluster.submit(op, name, wait_applied=CHANGE_SCOPE.get().wait_applied, **fields)
        except WsproxyError as exc:
            self.bus.publish(OperatorAction(action=op, server=name, ok=False, detail=exc.message))
            raise

    async def _check_add(self, name: str, address: str, max_conns: int | None) -> None:
        """An add's refusals, made once by the instance that takes it (the fleet applies it as it is)."""
        host, _port = parse_add(address, max_conns)
        if name in self.registry.servers:
            raise Conflict(f"a server named {name!r} already exists")
        await self._resolve(host)

    async def _refuse_fleet_connections(self, name: str) -> None:
        assert self.cluster is not None
        from proxy_core.cluster.model import holders

        held = holders(await self.cluster.fleet(), name)
        if held:
            where = ", ".join(f"{i} {n}" for i, n in held.items())
            raise Conflict(f"{name} has live connections in the fleet ({where}); drain it first, or force")
