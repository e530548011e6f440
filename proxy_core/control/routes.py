"""The v1 JSON routes: parse and validate the request, call one Engine method, answer JSON.

Errors are raised, never answered here: the error middleware in server.py maps every one to its status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from proxy_core.cluster.scope import CHANGE_SCOPE, ChangeScope
from proxy_core.control.body import (
    MAX_BODY,
    Spec,
    TooLarge,
    address,
    check_query,
    conn_id,
    parse_json,
    pool_name,
    query_flag,
    query_int,
    server_name,
    validate,
)
from proxy_core.errors import BadRequest, Conflict
from proxy_core.events import RING_CAPACITY, Gap

if TYPE_CHECKING:
    from proxy_core.engine import Engine

ENGINE: web.AppKey[Engine] = web.AppKey("engine")
# The last `/v1/rates` answer, encoded, and the sample it was made from: the history changes once a second,
# the dashboard asks every second, and encoding its ~3,600 floats was most of the request's cost.
RATES_CACHE: web.AppKey[dict[str, Any]] = web.AppKey("rates_cache")
EVENTS_LIMIT = 1000  # default page of GET /v1/events; a client pages with `next`
EVENTS_MAX_LIMIT = RING_CAPACITY

ADD_SPEC = {
    "name": Spec("string", required=True),
    "address": Spec("string", required=True),
    "weight": Spec("integer"),
    "max_conns": Spec("integer", nullable=True),
    "pool": Spec("string", nullable=True),
}
DRAIN_SPEC = {"deadline_s": Spec("number", nullable=True)}
WEIGHT_SPEC = {"weight": Spec("integer", required=True)}
REBALANCE_SPEC = {"rate": Spec("number", nullable=True)}
MAX_REBALANCE_RATE = 100_000.0  # clients a second; more is a typo, and would be every client at once anyway
NO_FIELDS: dict[str, Spec] = {}


SCOPE_PARAMS = ("local", "wait_applied")  # on every change: this instance only; answer once the fleet applied it


def change_query(request: web.Request, allowed: tuple[str, ...]) -> None:
    """A change's query: its own parameters and the fleet scope, set for the Engine method this task calls."""
    check_query(request.query, allowed + SCOPE_PARAMS)
    local, wait_applied = query_flag(request.query, "local"), query_flag(request.query, "wait_applied")
    if local and wait_applied:
        raise BadRequest("query parameters 'local' and 'wait_applied' exclude each other")
    if local or wait_applied:
        CHANGE_SCOPE.set(ChangeScope(local=local, wait_applied=wait_applied))


def engine_of(request: web.Request) -> Engine:
    return request.app[ENGINE]


async def read_body(request: web.Request, specs: dict[str, Spec]) -> dict[str, Any]:
    """The validated JSON body; the declared length is checked before a byte is read (413)."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise TooLarge(f"body: {length} bytes is over the {MAX_BODY}-byte limit")
    raw = await request.read()  # aiohttp stops at client_max_size (HTTPRequestEntityTooLarge -> 413)
    return validate(parse_json(raw), specs)


def answer(data: Any, status: int = 200) -> web.Response:
    """JSON through orjson: the dashboard polls `/v1/status` on the relaying loop, where the stdlib encoder was
    about a tenth of the request's CPU (measured with py-spy on 5,000 sequential requests)."""
    return json_body(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status)


def json_body(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _name(request: web.Request) -> str:
    return server_name(request.match_info["name"])


# -- reading ---------------------------------------------------------------------------------------


async def get_status(request: web.Request) -> web.Response:
    check_query(request.query, ())
    return answer(engine_of(request).status())


async def get_server(request: web.Request) -> web.Response:
    check_query(request.query, ())
    return answer(engine_of(request).server_detail(_name(request)))


def resume_point(engine: Engine, since: int) -> int:
    """A `since` beyond the last event comes from a reader of an earlier engine: start from the beginning."""
    return 0 if since > engine.bus.seq else since


async def get_events(request: web.Request) -> web.Response:
    check_query(request.query, ("since", "limit"))
    engine = engine_of(request)
    since = resume_point(engine, query_int(request.query, "since", 0) or 0)
    limit = query_int(request.query, "limit", EVENTS_LIMIT, low=1) or EVENTS_LIMIT
    if limit > EVENTS_MAX_LIMIT:
        raise BadRequest(f"query parameter 'limit': expected an integer in 1..{EVENTS_MAX_LIMIT}, got {limit}")
    events = engine.bus.since(since, limit)
    missed = events[0].missed if events and isinstance(events[0], Gap) else 0
    data = [event.to_dict() for event in events]
    return answer({"events": data, "next": events[-1].seq if events else since, "dropped": missed})


async def get_fleet(request: web.Request) -> web.Response:
    """Every instance's live view summed per server (503 naming the store when it is unreachable)."""
    check_query(request.query, ())
    cluster = engine_of(request).cluster
    if cluster is None:
        raise Conflict("this engine is not in a fleet: start it with --cluster redis://HOST:PORT/DB")
    return answer(await cluster.fleet())


async def get_rates(request: web.Request) -> web.Response:
    check_query(request.query, ())
    rates = engine_of(request).rates
    cache = request.app.get(RATES_CACHE)
    if cache is None:
        return answer(rates.to_dict())
    key = (id(rates), rates.last_sample, len(rates.servers))  # a new sample changes last_sample
    if cache.get("key") != key:
        cache["body"] = orjson.dumps(rates.to_dict(), option=orjson.OPT_NON_STR_KEYS)
        cache["key"] = key
    body: bytes = cache["body"]
    return json_body(body)


# -- mutations -------------------------------------------------------------------------------------


async def add_server(request: web.Request) -> web.Response:
    change_query(request, ())
    body = await read_body(request, ADD_SPEC)
    name = server_name(body["name"])
    engine = engine_of(request)
    where = address(body["address"])
    pool = body.get("pool")
    pool = pool_name(pool) if pool is not None else None
    server = await engine.add_server(name, where, body.get("weight", 1), body.get("max_conns"), pool)
    return answer(engine.server_dict(server), status=201)


def dry_run(request: web.Request, action: str, name: str, weight: int | None = None) -> web.Response | None:
    """`?dry_run=true`: the impact preview instead of the change (same refusals)."""
    if not query_flag(request.query, "dry_run"):
        return None
    force = query_flag(request.query, "force")
    return answer(engine_of(request).preview(action, name, force=force, weight=weight))


async def drain(request: web.Request) -> web.Response:
    change_query(request, ("force", "dry_run"))
    name = _name(request)
    body = await read_body(request, DRAIN_SPEC)
    engine = engine_of(request)
    if (preview := dry_run(request, "drain", name)) is not None:
        return preview
    server = await engine.drain(name, body.get("deadline_s"), force=query_flag(request.query, "force"))
    return answer(engine.server_dict(server))


async def undrain(request: web.Request) -> web.Response:
    change_query(request, ())
    name = _name(request)
    await read_body(request, NO_FIELDS)
    engine = engine_of(request)
    return answer(engine.server_dict(await engine.undrain(name)))


async def disable(request: web.Request) -> web.Response:
    change_query(request, ("force", "dry_run"))
    name = _name(request)
    await read_body(request, NO_FIELDS)
    engine = engine_of(request)
    if (preview := dry_run(request, "disable", name)) is not None:
        return preview
    server = await engine.disable(name, force=query_flag(request.query, "force"))
    return answer(engine.server_dict(server))


async def enable(request: web.Request) -> web.Response:
    change_query(request, ())
    name = _name(request)
    await read_body(request, NO_FIELDS)
    engine = engine_of(request)
    return answer(engine.server_dict(await engine.enable(name)))


async def set_weight(request: web.Request) -> web.Response:
    change_query(request, ("force", "dry_run"))
    name = _name(request)
    body = await read_body(request, WEIGHT_SPEC)
    engine = engine_of(request)
    if (preview := dry_run(request, "weight", name, body["weight"])) is not None:
        return preview
    server = await engine.set_weight(name, body["weight"], force=query_flag(request.query, "force"))
    return answer(engine.server_dict(server))


async def remove(request: web.Request) -> web.Response:
    change_query(request, ("force", "dry_run"))
    name = _name(request)
    await read_body(request, NO_FIELDS)
    if (preview := dry_run(request, "remove", name)) is not None:
        return preview
    server = await engine_of(request).remove(name, force=query_flag(request.query, "force"))
    return answer({"removed": server.name})


async def close_connection(request: web.Request) -> web.Response:
    check_query(request.query, ())
    conn = conn_id(request.match_info["id"])
    await read_body(request, NO_FIELDS)
    return answer({"closed": await engine_of(request).close_connection(conn)})


async def start_rebalance(request: web.Request) -> web.Response:
    change_query(request, ("dry_run",))
    body = await read_body(request, REBALANCE_SPEC)
    engine = engine_of(request)
    rate = body.get("rate")
    if rate is not None and not 0 < rate <= MAX_REBALANCE_RATE:
        raise BadRequest(f"field 'rate': expected clients per second in (0, {MAX_REBALANCE_RATE:g}], got {rate}")
    if query_flag(request.query, "dry_run"):
        return answer(await engine.rebalance_plan(rate))
    return answer({"rebalance": await engine.start_rebalance(rate)}, status=202)


async def get_rebalance(request: web.Request) -> web.Response:
    check_query(request.query, ())
    return answer({"rebalance": await engine_of(request).rebalance_status()})


async def stop_rebalance(request: web.Request) -> web.Response:
    change_query(request, ())
    await read_body(request, NO_FIELDS)
    return answer({"rebalance": await engine_of(request).stop_rebalance()})


async def reload_certs(request: web.Request) -> web.Response:
    check_query(request.query, ())
    await read_body(request, NO_FIELDS)
    results = await engine_of(request).reload_certs()
    refused = [f"{r['listener']}: {r['detail']}" for r in results if not r["ok"]]
    if refused:
        raise Conflict("certificates not reloaded, the old ones stay in use: " + "; ".join(refused))
    return answer({"listeners": results})


def add_routes(app: web.Application) -> None:
    """Register the v1 API; a path with the wrong method answers 405 through the router."""
    from proxy_core.control.pools import add_pool_routes
    from proxy_core.control.stream import stream_events

    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/servers/{name}", get_server)
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/v1/events/stream", stream_events)
    app.router.add_get("/v1/rates", get_rates)
    app.router.add_get("/v1/fleet", get_fleet)
    app.router.add_post("/v1/servers", add_server)
    app.router.add_post("/v1/servers/{name}/drain", drain)
    app.router.add_post("/v1/servers/{name}/undrain", undrain)
    app.router.add_post("/v1/servers/{name}/disable", disable)
    app.router.add_post("/v1/servers/{name}/enable", enable)
    app.router.add_put("/v1/servers/{name}/weight", set_weight)
    app.router.add_delete("/v1/servers/{name}", remove)
    app.router.add_delete("/v1/connections/{id}", close_connection)
    app.router.add_post("/v1/rebalance", start_rebalance)
    app.router.add_get("/v1/rebalance", get_rebalance)
    app.router.add_delete("/v1/rebalance", stop_rebalance)
    app.router.add_post("/v1/reload-certs", reload_certs)
    add_pool_routes(app)
