"""The v1 routes for pools and routes at runtime: GET, POST and DELETE on /v1/pools and /v1/routes.

Bodies are typed here (body.py); what the values mean is checked by the engine with the config file's own parsers.
"""

from __future__ import annotations

from aiohttp import web

from proxy_core.config import NAME_PATTERN
from proxy_core.control.body import Spec, check_query, pool_name, quote_input
from proxy_core.control.routes import NO_FIELDS, answer, change_query, engine_of, read_body
from proxy_core.errors import BadRequest
from proxy_core.poolconfig import MAX_ROUTES

POOL_SPEC = {
    "name": Spec("string", required=True),
    "balance": Spec("string", nullable=True),
    "check": Spec("object", nullable=True),
}
ROUTE_SPEC = {
    "name": Spec("string", nullable=True),
    "listener": Spec("string", nullable=True),
    "host": Spec("string", nullable=True),
    "path_prefix": Spec("string", nullable=True),
    "sni": Spec("string", nullable=True),
    "pool": Spec("string", required=True),
    "position": Spec("integer", nullable=True),
}


async def get_pools(request: web.Request) -> web.Response:
    check_query(request.query, ())
    return answer({"pools": engine_of(request).pools_status()})


async def add_pool(request: web.Request) -> web.Response:
    change_query(request, ())
    body = await read_body(request, POOL_SPEC)
    name = pool_name(body["name"])
    pool = await engine_of(request).add_pool(name, body.get("balance"), body.get("check"))
    return answer(pool, status=201)


async def remove_pool(request: web.Request) -> web.Response:
    change_query(request, ())
    name = pool_name(request.match_info["name"])
    await read_body(request, NO_FIELDS)
    return answer({"removed": await engine_of(request).remove_pool(name)})


async def get_routes(request: web.Request) -> web.Response:
    check_query(request.query, ())
    engine = engine_of(request)
    return answer({"routes": engine.routes_status(), "unrouted": dict(engine.board.unrouted)})


async def add_route(request: web.Request) -> web.Response:
    change_query(request, ())
    body = await read_body(request, ROUTE_SPEC)
    position = body.pop("position", None)
    fields = {k: v for k, v in body.items() if v is not None}
    return answer(await engine_of(request).add_route(fields, position), status=201)


def route_ref(text: str) -> str:
    """A route's 1-based position or its name, from a URL path (names follow the server name pattern)."""
    if not NAME_PATTERN.fullmatch(text):
        raise BadRequest(f"invalid route {quote_input(text)}: give its position (1..{MAX_ROUTES}) or its name")
    return text


async def remove_route(request: web.Request) -> web.Response:
    change_query(request, ())
    ref = route_ref(request.match_info["ref"])
    await read_body(request, NO_FIELDS)
    return answer({"removed": await engine_of(request).remove_route(ref)})


def add_pool_routes(app: web.Application) -> None:
    app.router.add_get("/v1/pools", get_pools)
    app.router.add_post("/v1/pools", add_pool)
    app.router.add_delete("/v1/pools/{name}", remove_pool)
    app.router.add_get("/v1/routes", get_routes)
    app.router.add_post("/v1/routes", add_route)
    app.router.add_delete("/v1/routes/{ref}", remove_route)
