"""Async client for the engine's control API, shared by the dashboard and the CLI."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

JSON = dict[str, Any]

# The base URL is ignored by the unix-socket transport but httpx needs a host for the Host header.
UDS_BASE_URL = "http://wsproxy"
# Requests are small and local; anything slower than this means the engine is stuck.
DEFAULT_TIMEOUT_S = 5.0
# The engine sends `: keepalive` every 15 s on the event stream; three missed ones mean it is gone.
STREAM_READ_TIMEOUT_S = 45.0

_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")


class ControlError(Exception):
    """The engine answered with an error body: `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class ControlUnavailable(Exception):
    """The engine could not be reached (no socket, refused, reset or timed out)."""


def parse_control_target(target: str) -> tuple[str | None, str | None]:
    """Split an `--attach`/`--control` value into (socket path, base URL); one is None."""
    if target.startswith(("http://", "https://")):
        return None, target.rstrip("/")
    if _HOST_PORT.match(target) and "/" not in target:
        return None, f"http://{target}"
    return target, None


class ControlClient:
    """One connection pool to one engine; every call maps to one route of docs/control-api.md."""

    def __init__(
        self,
        target: str | None = None,
        *,
        uds: str | None = None,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if target is not None:
            uds, base_url = parse_control_target(target)
        if (uds is None) == (base_url is None):
            raise ValueError("give exactly one of a unix socket path or a base URL")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.AsyncHTTPTransport(uds=uds) if uds is not None else None
        self.target: str = uds if uds is not None else str(base_url)
        # `{"local": "true"}` or `{"wait_applied": "true"}`: sent with every change (the fleet scope)
        self.change_params: dict[str, str | int] = {}
        self._http = httpx.AsyncClient(
            transport=transport,
            base_url=base_url or UDS_BASE_URL,
            headers=headers,
            timeout=timeout,
        )

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: JSON | None = None,
        params: dict[str, str | int] | None = None,
    ) -> Any:
        if method != "GET" and self.change_params:
            params = {**(params or {}), **self.change_params}
        try:
            response = await self._http.request(method, path, json=body, params=params)
        except httpx.TransportError as exc:
            raise ControlUnavailable(f"{self.target}: {exc or type(exc).__name__}") from exc
        return _decode(response)

    # Reading

    async def status(self) -> JSON:
        """`GET /v1/status`: engine, listeners, totals and every server."""
        result: JSON = await self._request("GET", "/v1/status")
        return result

    async def server(self, name: str) -> JSON:
        """`GET /v1/servers/{name}`: one server plus its health history and open connections."""
        result: JSON = await self._request("GET", f"/v1/servers/{_seg(name)}")
        return result

    async def events(self, since: int = 0, limit: int | None = None) -> JSON:
        """`GET /v1/events`: buffered events after `since` (`{"events", "next", "dropped"}`)."""
        params: dict[str, str | int] = {"since": since}
        if limit is not None:
            params["limit"] = limit
        result: JSON = await self._request("GET", "/v1/events", params=params)
        return result

    async def fleet(self) -> JSON:
        """GET /v1/fleet: every instance of the fleet and per-server totals (409 when not in a fleet)."""
        result: JSON = await self._request("GET", "/v1/fleet")
        return result

    async def rates(self) -> JSON:
        """`GET /v1/rates`: per-second history for the graphs."""
        result: JSON = await self._request("GET", "/v1/rates")
        return result

    async def stream_events(self, since: int = 0) -> AsyncIterator[JSON]:
        """Follow `GET /v1/events/stream` (server-sent events), yielding each event as a dict."""
        timeout = httpx.Timeout(DEFAULT_TIMEOUT_S, read=STREAM_READ_TIMEOUT_S)
        try:
            async with self._http.stream(
                "GET", "/v1/events/stream", params={"since": since}, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _decode(response)
                parser = SSEParser()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise ControlUnavailable(f"{self.target}: {exc or type(exc).__name__}") from exc

    # Mutations

    async def add(
        self, name: str, address: str, weight: int = 1, max_conns: int | None = None, pool: str | None = None
    ) -> JSON:
        """`POST /v1/servers`: add an upstream (to `pool`, or the pool of a POOL/NAME, or the only pool)."""
        body: JSON = {"name": name, "address": address, "weight": weight, "max_conns": max_conns}
        if pool is not None:
            body["pool"] = pool
        result: JSON = await self._request("POST", "/v1/servers", body=body)
        return result

    async def drain(self, name: str, deadline_s: float | None = None, force: bool = False) -> JSON:
        """`POST .../drain`: no new connections; open ones finish or close at the deadline."""
        body: JSON = {} if deadline_s is None else {"deadline_s": deadline_s}
        path = f"/v1/servers/{_seg(name)}/drain"
        result: JSON = await self._request("POST", path, body=body, params=_force(force))
        return result

    async def undrain(self, name: str) -> JSON:
        """`POST .../undrain`: take new connections again."""
        result: JSON = await self._request("POST", f"/v1/servers/{_seg(name)}/undrain")
        return result

    async def set_weight(self, name: str, weight: int, force: bool = False) -> JSON:
        """`PUT .../weight`: set an absolute weight (0..256), never a relative step."""
        path = f"/v1/servers/{_seg(name)}/weight"
        body: JSON = {"weight": weight}
        result: JSON = await self._request("PUT", path, body=body, params=_force(force))
        return result

    async def disable(self, name: str, force: bool = False) -> JSON:
        """`POST .../disable`: maintenance; no new connections."""
        path = f"/v1/servers/{_seg(name)}/disable"
        result: JSON = await self._request("POST", path, params=_force(force))
        return result

    async def enable(self, name: str) -> JSON:
        """`POST .../enable`: back from maintenance."""
        result: JSON = await self._request("POST", f"/v1/servers/{_seg(name)}/enable")
        return result

    async def remove(self, name: str, force: bool = False) -> JSON:
        """`DELETE /v1/servers/{name}`: 409 if it would leave no eligible server."""
        path = f"/v1/servers/{_seg(name)}"
        result: JSON = await self._request("DELETE", path, params=_force(force))
        return result

    async def preview(self, action: str, name: str, weight: int | None = None, force: bool = False) -> JSON:
        """`?dry_run=true` on drain, disable, weight or remove: what it would move, nothing changed."""
        params: dict[str, str | int] = {"dry_run": "true", **(_force(force) or {})}
        path = f"/v1/servers/{_seg(name)}"
        if action == "remove":
            result: JSON = await self._request("DELETE", path, params=params)
        elif action == "weight":
            body: JSON = {"weight": weight}
            result = await self._request("PUT", f"{path}/weight", body=body, params=params)
        elif action in ("drain", "disable"):
            result = await self._request("POST", f"{path}/{action}", body={}, params=params)
        else:
            raise ValueError(f"no preview for {action!r}")
        return result

    async def rebalance(self, rate: float | None = None, dry_run: bool = False) -> JSON:
        """`POST /v1/rebalance`: move the clients that are on the wrong server now (`dry_run`: the plan only)."""
        body: JSON = {} if rate is None else {"rate": rate}
        params: dict[str, str | int] | None = {"dry_run": "true"} if dry_run else None
        result: JSON = await self._request("POST", "/v1/rebalance", body=body, params=params)
        return result

    async def rebalance_status(self) -> JSON:
        """`GET /v1/rebalance`: the current or last rebalance (`{"rebalance": null}` before the first)."""
        result: JSON = await self._request("GET", "/v1/rebalance")
        return result

    async def stop_rebalance(self) -> JSON:
        """`DELETE /v1/rebalance`: stop moving clients."""
        result: JSON = await self._request("DELETE", "/v1/rebalance")
        return result

    async def pools(self) -> JSON:
        """`GET /v1/pools`: `{"pools": [POOL, ...]}`."""
        result: JSON = await self._request("GET", "/v1/pools")
        return result

    async def add_pool(self, name: str, balance: str | None = None, check: JSON | None = None) -> JSON:
        """`POST /v1/pools`: a new empty pool with its balance and `[pool.check]` settings; 201 `POOL`."""
        body: JSON = {"name": name}
        if balance is not None:
            body["balance"] = balance
        if check is not None:
            body["check"] = check
        result: JSON = await self._request("POST", "/v1/pools", body=body)
        return result

    async def remove_pool(self, name: str) -> JSON:
        """`DELETE /v1/pools/{name}`: 409 naming the routes, listeners or servers that still use it."""
        result: JSON = await self._request("DELETE", f"/v1/pools/{_seg(name)}")
        return result

    async def routes(self) -> JSON:
        """`GET /v1/routes`: `{"routes": [ROUTE, ...], "unrouted": {...}}` in the order they are tried."""
        result: JSON = await self._request("GET", "/v1/routes")
        return result

    async def add_route(self, pool: str, position: int | None = None, **match: str | None) -> JSON:
        """`POST /v1/routes`: a route to `pool` (`match`: name, listener, host, path_prefix, sni) at a 1-based
        `position` (default: last); 201 `ROUTE`."""
        body: JSON = {"pool": pool, **{k: v for k, v in match.items() if v is not None}}
        if position is not None:
            body["position"] = position
        result: JSON = await self._request("POST", "/v1/routes", body=body)
        return result

    async def remove_route(self, ref: str) -> JSON:
        """`DELETE /v1/routes/{ref}`: by 1-based position or name; `{"removed": ROUTE}`."""
        result: JSON = await self._request("DELETE", f"/v1/routes/{_seg(ref)}")
        return result

    async def close_connection(self, conn_id: int) -> JSON:
        """`DELETE /v1/connections/{id}`: close one client connection."""
        result: JSON = await self._request("DELETE", f"/v1/connections/{int(conn_id)}")
        return result

    async def reload_certs(self) -> JSON:
        """`POST /v1/reload-certs`: TLS listeners load their files again; 409 naming a bad file (old ones kept)."""
        result: JSON = await self._request("POST", "/v1/reload-certs")
        return result


class SSEParser:
    """Incremental server-sent-events parser: feed lines, get an event dict at each blank line."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> JSON | None:
        """Take one line (without its newline); return the event it completes, if any."""
        line = line.rstrip("\r")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "id":
            self._id = value
        return None

    def _dispatch(self) -> JSON | None:
        data, event_id = self._data, self._id
        self._data, self._id = [], None
        if not data:
            return None
        try:
            event = json.loads("\n".join(data))
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        if "seq" not in event and event_id is not None and event_id.isdigit():
            event["seq"] = int(event_id)
        return event


def _seg(name: str) -> str:
    """Quote a server name for a URL path (names are `[A-Za-z0-9_.-]`, but never trust input)."""
    return quote(name, safe="")


def _force(force: bool) -> dict[str, str | int] | None:
    """`?force=true` overrides the engine's "would leave no eligible server" refusal."""
    return {"force": "true"} if force else None


def _decode(response: httpx.Response) -> Any:
    """Return the JSON body of a 2xx answer, or raise ControlError built from the error body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code < 400:
        if body is None and response.content:
            raise ControlError(response.status_code, "bad_response", "answer is not JSON")
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code", "error"))
        message = str(error.get("message", response.reason_phrase))
    else:
        code = "http_error"
        message = response.text.strip()[:200] or response.reason_phrase
    raise ControlError(response.status_code, code, message)
