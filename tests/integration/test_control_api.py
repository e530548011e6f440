"""The control API against a real engine process: every endpoint, every error code, the token rule, the streams."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import secrets
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from proxy_core.client import ControlClient
from tests.conftest import EchoBackend, EngineProc, unit, wait_until

Backends = Callable[[int], Awaitable[list[EchoBackend]]]
Start = Callable[..., Awaitable[EngineProc]]


def raw(engine: EngineProc) -> httpx.AsyncClient:
    """A plain HTTP client on the control socket, for requests the ControlClient would never send."""
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=engine.control), base_url="http://wsproxy", timeout=unit(5.0)
    )


def tcp(address: str, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=f"http://{address}", headers=headers, timeout=unit(5.0))


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The `{"error": {"code", "message"}}` body every failure answers with."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    error: dict[str, Any] = body["error"]
    return error


async def server_of(engine: EngineProc, name: str) -> dict[str, Any]:
    async with raw(engine) as http:
        response = await http.get(f"/v1/servers/{name}")
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
async def pool(start_engine: Start, echo_backends: Backends) -> tuple[EngineProc, list[EchoBackend]]:
    """An engine in front of two echo backends, b1 and b2."""
    backends = await echo_backends(2)
    engine = await start_engine(*(arg for b in backends for arg in ("--backend", b.flag)))
    return engine, backends


@pytest.fixture
async def http(pool: tuple[EngineProc, list[EchoBackend]]) -> AsyncIterator[httpx.AsyncClient]:
    """A raw client on the pool's control socket."""
    async with raw(pool[0]) as client:
        yield client


async def open_ws(engine: EngineProc, path: str = "/ws") -> ClientConnection:
    ws = await asyncio.wait_for(connect(f"ws://127.0.0.1:{engine.port}{path}"), unit(5.0))
    await ws.send("hello")
    assert await asyncio.wait_for(ws.recv(), unit(5.0)) == "hello"
    return ws


# -- reading ------------------------------------------------------------------------------------------


async def test_status_snapshot(pool: tuple[EngineProc, list[EchoBackend]], http: httpx.AsyncClient) -> None:
    """GET /v1/status has the documented engine, listeners, totals and per-server fields."""
    engine, backends = pool
    data = (await http.get("/v1/status")).json()
    assert data["engine"]["pid"] == engine.pid and data["engine"]["control"] == engine.control
    assert {"version", "started", "uptime_s", "balance", "check"} <= set(data["engine"])
    assert data["listeners"][0]["address"] == engine.listen
    assert {"active", "total", "connect_failures", "bytes_in", "bytes_out", "handshakes", "dropped_events"} <= set(
        data["totals"]
    )
    servers = {s["name"]: s for s in data["servers"]}
    assert set(servers) == {"b1", "b2"}
    b1 = servers["b1"]
    assert b1["address"] == backends[0].address and b1["port"] == backends[0].port
    assert {"state", "admin", "health", "weight", "max_conns", "share", "active", "total", "connect_failures",
            "bytes_in", "bytes_out", "handshakes", "drain"} <= set(b1)  # fmt: skip
    assert {"status", "rise_count", "fall_count", "last_latency_ms", "last_failure", "last_change"} <= set(b1["health"])


async def test_server_detail_lists_connections(pool: tuple[EngineProc, list[EchoBackend]]) -> None:
    """GET /v1/servers/{name} adds history and the open connections, with their path and kind."""
    engine, _ = pool
    ws = await open_ws(engine, "/chat")
    try:
        detail = await wait_until(lambda: _with_connection(engine), what="a connection in a server's detail")
        conn = detail["connections"][0]
        assert conn["server"] == detail["name"] and conn["kind"] == "websocket" and conn["path"] == "/chat"
        assert {"id", "client", "listener", "started", "age_s", "bytes_in", "bytes_out"} <= set(conn)
        assert isinstance(detail["history"], list)
    finally:
        await ws.close()


async def test_without_the_handshake_log_connections_still_show_their_client_and_are_access_logged(
    start_engine: Start, echo_backends: Backends, tmp_path: Path
) -> None:
    """--no-handshake-log keeps no per-connection address or record, yet the API shows each live client's
    address (read from its socket) and --access-log still gets one line per closed connection."""
    (b1,) = await echo_backends(1)
    log = tmp_path / "access.jsonl"
    engine = await start_engine("--backend", b1.flag, "--no-handshake-log", "--access-log", str(log))
    ws = await open_ws(engine, "/quiet")
    local_port = ws.local_address[1]
    try:
        detail = await wait_until(lambda: _with_connection(engine), what="a connection in a server's detail")
        assert detail["connections"][0]["client"] == f"127.0.0.1:{local_port}"
    finally:
        await ws.close()
    line = await wait_until(lambda: log.exists() and log.read_text().strip(), what="an access log line")
    record = json.loads(line)
    assert record["client"] == f"127.0.0.1:{local_port}" and record["server"] == "b1" and record["type"] == "close"
    async with ControlClient(engine.control) as client:
        events = (await client.events(0))["events"]
    assert not [e for e in events if e["type"] in ("handshake", "close")]  # the handshake log is off


async def _with_connection(engine: EngineProc) -> dict[str, Any] | None:
    for name in ("b1", "b2"):
        detail = await server_of(engine, name)
        if detail["connections"]:
            return detail
    return None


async def test_unknown_server_and_route_are_404(http: httpx.AsyncClient) -> None:
    """Unknown servers, connections and routes answer 404 with the error body."""
    assert error_of(await http.get("/v1/servers/nope")) == {"code": "not_found", "message": "no server named 'nope'"}
    assert (await http.post("/v1/servers/nope/drain")).status_code == 404
    response = await http.delete("/v1/connections/999999")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    response = await http.get("/v2/status")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"


async def test_bad_names_are_400(http: httpx.AsyncClient) -> None:
    """A name outside [A-Za-z0-9_.-]{1,64} (a path, a NUL, too long) is refused before anything looks it up."""
    for path in ("..%2F..%2Fetc%2Fpasswd", "b1%00", "a" * 65, "b%201", "b1%0A"):
        for method in ("GET", "DELETE"):
            response = await http.request(method, f"/v1/servers/{path}")
            assert response.status_code == 400 and "invalid server name" in error_of(response)["message"], path
    response = await http.post("/v1/servers/..%2Fx/drain")
    assert response.status_code == 400


async def test_events_page_with_since_and_limit(http: httpx.AsyncClient) -> None:
    """GET /v1/events pages with `since`/`limit`; `next` resumes exactly after the last one returned."""
    await http.post("/v1/servers/b1/drain")
    await http.post("/v1/servers/b1/undrain")
    first = (await http.get("/v1/events", params={"since": 0, "limit": 1})).json()
    assert len(first["events"]) == 1 and first["events"][0]["seq"] == 1 and first["next"] == 1
    assert first["dropped"] == 0
    rest = (await http.get("/v1/events", params={"since": first["next"]})).json()["events"]
    assert [e["seq"] for e in rest] == list(range(2, 2 + len(rest)))
    operators = [e for e in rest if e["type"] == "operator"]
    assert [(e["action"], e["server"], e["ok"]) for e in operators] == [("drain", "b1", True), ("undrain", "b1", True)]
    assert {"seq", "ts", "type"} <= set(rest[0])
    for params in ({"limit": 0}, {"since": "abc"}, {"since": -1}, {"bogus": 1}):
        assert (await http.get("/v1/events", params=params)).status_code == 400, params


async def test_rates_shape(http: httpx.AsyncClient) -> None:
    """GET /v1/rates gives per-second series for the total and each server."""
    data = (await http.get("/v1/rates")).json()
    assert data["interval_s"] == 1.0
    assert set(data["total"]) == {"active", "connections", "handshakes", "bytes"}
    assert set(data["servers"]) <= {"b1", "b2"}


# -- mutations ----------------------------------------------------------------------------------------


async def test_add_server_and_its_errors(http: httpx.AsyncClient, echo_backends: Backends) -> None:
    """POST /v1/servers answers 201 with the server; duplicates 409; bad input 400 naming the field."""
    (b3,) = await echo_backends(1)
    response = await http.post("/v1/servers", json={"name": "b3", "address": b3.address, "weight": 2})
    assert response.status_code == 201
    added = response.json()
    assert added["name"] == "b3" and added["weight"] == 2 and added["max_conns"] is None
    assert added["state"] == "down"  # a runtime addition waits for `rise` passing checks
    duplicate = await http.post("/v1/servers", json={"name": "b3", "address": "127.0.0.1:1"})
    assert duplicate.status_code == 409 and error_of(duplicate)["code"] == "conflict"
    cases: list[tuple[Any, str]] = [
        ({"name": "b4", "address": "nowhere"}, "address"),
        ({"name": "b4", "address": "a" * 300 + ":80"}, "address"),
        ({"name": "b4", "address": "a\x00b:80"}, "address"),
        ({"name": "b4", "address": "127.0.0.1:0"}, "address"),
        ({"name": "b4", "address": "127.0.0.1:1", "colour": "red"}, "colour"),
        ({"name": "b4", "address": "127.0.0.1:1", "weight": "3"}, "weight"),
        ({"name": "b4", "address": "127.0.0.1:1", "weight": True}, "weight"),
        ({"name": "b4", "address": "127.0.0.1:1", "weight": 999}, "weight"),
        ({"name": "b4", "address": "127.0.0.1:1", "max_conns": 0}, "max_conns"),
        ({"address": "127.0.0.1:1"}, "name"),
        ({"name": "../x", "address": "127.0.0.1:1"}, "name"),
        ({"name": "b4\n", "address": "127.0.0.1:1"}, "name"),
        ([1, 2], "object"),
    ]
    for body, word in cases:
        response = await http.post("/v1/servers", json=body)
        assert response.status_code == 400, body
        assert word in error_of(response)["message"], (body, error_of(response))
    for content in (b"{not json", b"\xff\xfe", b'{"name": NaN}', b"null"):
        response = await http.post("/v1/servers", content=content)
        assert response.status_code == 400 and error_of(response)["message"].startswith("body"), content
    names = [s["name"] for s in (await http.get("/v1/status")).json()["servers"]]
    assert names == ["b1", "b2", "b3"]


async def test_admin_state_changes(http: httpx.AsyncClient) -> None:
    """drain, undrain, disable, enable and weight answer the new SERVER; refusals are 409 or 400."""
    drained = (await http.post("/v1/servers/b1/drain", json={"deadline_s": 30})).json()
    assert drained["state"] == "draining" and drained["drain"]["deadline"] is not None
    assert (await http.post("/v1/servers/b1/undrain")).json()["state"] == "up"
    response = await http.post("/v1/servers/b1/undrain")
    assert response.status_code == 409 and "not draining" in error_of(response)["message"]
    assert (await http.post("/v1/servers/b1/disable")).json()["state"] == "disabled"
    response = await http.post("/v1/servers/b1/drain")
    assert response.status_code == 409  # a disabled server is enabled before it is drained
    assert (await http.post("/v1/servers/b1/enable")).json()["admin"] == "active"
    weighted = (await http.put("/v1/servers/b2/weight", json={"weight": 3})).json()
    assert weighted["weight"] == 3 and weighted["share"] == pytest.approx(0.75)
    for body in ({"weight": 257}, {"weight": -1}, {"weight": 1.5}, {}, {"weight": 1, "step": 1}):
        assert (await http.put("/v1/servers/b2/weight", json=body)).status_code == 400, body
    assert (await http.post("/v1/servers/b1/drain", json={"deadline_s": "soon"})).status_code == 400
    assert (await http.post("/v1/servers/b1/enable", json={"force": True})).status_code == 400


async def test_last_eligible_server_needs_force(http: httpx.AsyncClient) -> None:
    """Taking out the last eligible server is 409 unless `?force=true`."""
    assert (await http.post("/v1/servers/b1/disable")).status_code == 200
    for method, path, body in (
        ("POST", "/v1/servers/b2/disable", None),
        ("POST", "/v1/servers/b2/drain", None),
        ("PUT", "/v1/servers/b2/weight", {"weight": 0}),
        ("DELETE", "/v1/servers/b2", None),
    ):
        response = await http.request(method, path, json=body)
        assert response.status_code == 409 and "force" in error_of(response)["message"], path
    response = await http.post("/v1/servers/b2/drain", params={"force": "true"})
    assert response.status_code == 200 and response.json()["state"] == "draining"
    assert (await http.post("/v1/servers/b2/disable", params={"force": "maybe"})).status_code == 400


async def test_remove_and_close_connection(pool: tuple[EngineProc, list[EchoBackend]], http: httpx.AsyncClient) -> None:
    """DELETE a server (409 with live connections unless forced) and DELETE one connection by id."""
    engine, _ = pool
    ws = await open_ws(engine)
    detail = await wait_until(lambda: _with_connection(engine), what="the open connection")
    name, conn_id = detail["name"], detail["connections"][0]["id"]
    other = "b2" if name == "b1" else "b1"
    response = await http.delete(f"/v1/servers/{name}")
    assert response.status_code == 409 and "live connection" in error_of(response)["message"]
    assert (await http.delete("/v1/connections/abc")).status_code == 400
    assert (await http.delete(f"/v1/connections/{conn_id}")).json() == {"closed": conn_id}
    await asyncio.wait_for(ws.wait_closed(), unit(5.0))
    await wait_until(lambda: _active(engine, name, 0), what="the connection to close")
    assert (await http.delete(f"/v1/servers/{other}")).json() == {"removed": other}
    ws = await open_ws(engine)
    assert (await http.delete(f"/v1/servers/{name}")).status_code == 409  # the last one
    assert (await http.delete(f"/v1/servers/{name}", params={"force": "true"})).json() == {"removed": name}
    await asyncio.wait_for(ws.wait_closed(), unit(5.0))
    assert (await http.get("/v1/status")).json()["servers"] == []


async def _active(engine: EngineProc, name: str, count: int) -> bool:
    return bool((await server_of(engine, name))["active"] == count)


# -- hostile input --------------------------------------------------------------------------------


async def test_mutation_by_get_is_405(http: httpx.AsyncClient) -> None:
    """A GET on a mutation path (or a POST on a read path) is 405 with Allow, and changes nothing."""
    for path in ("/v1/servers/b1/drain", "/v1/servers/b1/disable", "/v1/servers/b1/weight", "/v1/connections/1",
                 "/v1/servers"):  # fmt: skip
        response = await http.get(path)
        assert response.status_code == 405 and error_of(response)["code"] == "method_not_allowed", path
        assert response.headers["Allow"]
    assert (await http.post("/v1/status")).status_code == 405
    assert {s["state"] for s in (await http.get("/v1/status")).json()["servers"]} == {"up"}


async def test_oversized_body_is_413(pool: tuple[EngineProc, list[EchoBackend]], http: httpx.AsyncClient) -> None:
    """Bodies over 64 KiB are 413, declared or chunked; the engine stays up."""
    big = b'{"name": "' + b"x" * (70 * 1024) + b'"}'
    response = await http.post("/v1/servers", content=big)
    assert response.status_code == 413 and error_of(response)["code"] == "too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b" " * 1024

    response = await http.post("/v1/servers/b1/drain", content=chunks())
    assert response.status_code == 413
    assert (await http.get("/v1/status")).status_code == 200
    assert (await server_of(pool[0], "b1"))["state"] == "up"


async def test_deep_nesting_is_400_quickly(http: httpx.AsyncClient) -> None:
    """100,000 nested brackets are refused with 400 before the JSON parser recurses; the engine answers after."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await http.post("/v1/servers", content=b"[" * 60_000)
    assert response.status_code == 400 and "nested" in error_of(response)["message"]
    response = await http.post("/v1/servers", content=b'{"name": ' + b"[" * 20_000 + b"]" * 20_000 + b"}")
    assert response.status_code == 400
    assert loop.time() - started < unit(2.0)
    assert (await http.get("/v1/status")).status_code == 200


async def test_browser_origin_is_403(pool: tuple[EngineProc, list[EchoBackend]], http: httpx.AsyncClient) -> None:
    """Any request with an Origin header is refused (403) on every path, and changes nothing."""
    headers = {"Origin": "http://evil.example"}
    response = await http.post("/v1/servers/b1/disable", headers=headers)
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"
    assert (await http.get("/v1/status", headers=headers)).status_code == 403
    assert (await http.get("/status", headers={"Origin": "null"})).status_code == 403
    assert (await server_of(pool[0], "b1"))["state"] == "up"


async def test_unknown_query_parameter_is_400(http: httpx.AsyncClient) -> None:
    """Unknown query parameters on the API are refused, naming the parameter."""
    response = await http.post("/v1/servers/b1/drain", params={"deadline": 5})
    assert response.status_code == 400 and "'deadline'" in error_of(response)["message"]


# -- the event stream ---------------------------------------------------------------------------------


async def read_stream(
    client: ControlClient, since: int, until: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Events from the SSE stream after `since` until `until(events)` holds (bounded)."""
    events: list[dict[str, Any]] = []

    async def run() -> None:
        async for event in client.stream_events(since=since):
            events.append(event)
            if until(events):
                return

    await asyncio.wait_for(run(), unit(5.0))
    return events


async def test_event_stream_resumes_from_a_sequence_number(pool: tuple[EngineProc, list[EchoBackend]]) -> None:
    """The SSE stream replays the buffer after `since`, then follows live; a reconnect misses nothing."""
    engine, _ = pool
    async with engine.client() as client:
        await client.drain("b1")
        first = await read_stream(client, 0, lambda ev: any(e["type"] == "operator" for e in ev))
        assert [e["seq"] for e in first] == list(range(1, len(first) + 1))
        last = first[-1]["seq"]
        await client.undrain("b1")  # happens while nobody listens
        await client.set_weight("b2", 4)
        resumed = await read_stream(client, last, lambda ev: sum(e.get("action") == "weight" for e in ev) == 1)
        assert resumed[0]["seq"] == last + 1
        assert [e["action"] for e in resumed if e["type"] == "operator"] == ["undrain", "weight"]

        async def live() -> list[dict[str, Any]]:
            return await read_stream(
                client, resumed[-1]["seq"], lambda ev: any(e.get("action") == "disable" for e in ev)
            )

        reader = asyncio.create_task(live())
        await asyncio.sleep(0)  # let the reader subscribe before the action (the replay would also cover it)
        await client.disable("b1")
        events = await reader
        assert events[0]["seq"] == resumed[-1]["seq"] + 1 and events[-1]["action"] == "disable"


async def test_event_stream_wire_format(pool: tuple[EngineProc, list[EchoBackend]], http: httpx.AsyncClient) -> None:
    """Each SSE message is `id: <seq>` then `data: <json>` then a blank line; a future `since` replays all."""
    await http.post("/v1/servers/b1/drain")
    lines: list[str] = []

    async def read() -> None:
        async with http.stream("GET", "/v1/events/stream", params={"since": 10**9}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                lines.append(line)
                if line.startswith("data:") and '"operator"' in line:
                    return

    await asyncio.wait_for(read(), unit(5.0))
    ids = [line for line in lines if line.startswith("id: ")]
    data = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert ids[0] == "id: 1" and [int(i[4:]) for i in ids] == [d["seq"] for d in data]
    assert lines[lines.index(ids[0]) + 1].startswith("data: ") and lines[lines.index(ids[0]) + 2] == ""


async def test_event_stream_coalesces_writes(
    pool: tuple[EngineProc, list[EchoBackend]], http: httpx.AsyncClient
) -> None:
    """Events go out at most once per `coalesce_ms`, together; the first after a quiet spell goes at once, and a
    state change or operator action goes within about 100 ms, taking the held events with it."""
    engine, _ = pool
    pieces: list[tuple[float, bytes]] = []
    loop = asyncio.get_running_loop()

    def arrived(marker: bytes, count: int = 1) -> bool:
        return b"".join(p for _, p in pieces).count(marker) >= count

    def when(marker: bytes) -> tuple[float, bytes]:
        return next((t, p) for t, p in pieces if marker in p)

    async def read() -> None:
        async with http.stream("GET", "/v1/events/stream", params={"coalesce_ms": 1500}) as response:
            async for piece in response.aiter_raw():
                pieces.append((loop.time(), piece))

    reader = asyncio.create_task(read())
    try:
        await wait_until(lambda: bool(pieces), what="the stream's opening comment")
        start = loop.time()
        first = await open_ws(engine)
        await wait_until(lambda: arrived(b'"handshake"'), what="the first handshake")
        at_first, _ = when(b'"handshake"')
        assert at_first - start < 1.2  # after a quiet spell: at once
        second = await open_ws(engine)
        await first.close()  # a handshake and a close, held until 1.5 s after the first write
        await wait_until(lambda: arrived(b'"close"'), what="the held events")
        at_held, held = when(b'"close"')
        assert held.count(b'"handshake"') == 1 and at_held - at_first >= 1.4
        third = await open_ws(engine)  # held again: the window starts over
        sent = loop.time()
        async with engine.client() as client:
            await client.drain("b1")  # urgent: goes out within ~100 ms with the held handshake
        await wait_until(lambda: arrived(b'"drain"'), what="the drain")
        at_drain, urgent = when(b'"drain"')
        assert b'"handshake"' in urgent and at_drain - sent < 1.0
        await second.close()
        await third.close()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def test_event_stream_coalesce_parameter_is_checked(http: httpx.AsyncClient) -> None:
    """`coalesce_ms` is 0..5000; 0 writes each batch as soon as it is woken."""
    response = await http.get("/v1/events/stream", params={"coalesce_ms": 5001})
    assert response.status_code == 400 and "coalesce_ms" in error_of(response)["message"]
    response = await http.get("/v1/events/stream", params={"coalesce_ms": "x"})
    assert response.status_code == 400
    lines: list[str] = []

    async def read() -> None:
        async with http.stream("GET", "/v1/events/stream", params={"since": 0, "coalesce_ms": 0}) as stream:
            async for line in stream.aiter_lines():
                lines.append(line)
                if line.startswith("data:"):
                    return

    await http.post("/v1/servers/b1/drain")
    await asyncio.wait_for(read(), unit(5.0))
    assert lines[-1].startswith("data:")


# -- the TCP listener and its token ----------------------------------------------------------------


async def test_tcp_needs_the_token(start_engine: Start, echo_backends: Backends) -> None:
    """On TCP, missing or wrong tokens get 401 and change nothing; the right one works; Origin still 403."""
    (b1, b2) = await echo_backends(2)
    token = secrets.token_hex(16)
    engine = await start_engine("--backend", b1.flag, "--backend", b2.flag, "--control-tcp", "127.0.0.1:0",
                                env={"WSPROXY_TOKEN": token})  # fmt: skip
    assert engine.tcp_address is not None
    for bad in (None, "wrong-token-wrong-token", token + "x"):
        async with tcp(engine.tcp_address, bad) as client:
            response = await client.post("/v1/servers/b1/disable")
            assert response.status_code == 401 and error_of(response)["code"] == "unauthorized"
            assert (await client.get("/v1/status")).status_code == 401
    async with tcp(engine.tcp_address) as client:
        response = await client.get("/v1/status", headers={"Authorization": f"Basic {token}"})
        assert response.status_code == 401
    assert (await server_of(engine, "b1"))["state"] == "up"
    async with tcp(engine.tcp_address, token) as client:
        assert (await client.post("/v1/servers/b1/disable")).json()["state"] == "disabled"
        assert (await client.get("/v1/status")).status_code == 200
        assert (await client.get("/v1/status", headers={"Origin": "http://127.0.0.1"})).status_code == 403
    async with ControlClient(engine.tcp_address, token=token) as client:
        assert (await client.enable("b1"))["state"] == "up"


async def test_public_read_opens_only_gets(start_engine: Start, echo_backends: Backends, tmp_path: Path) -> None:
    """With `public_read`, GETs on TCP need no token; mutations still do."""
    (b1,) = await echo_backends(1)
    token_file = tmp_path / "token"
    token_file.write_text(secrets.token_hex(16) + "\n")
    config = tmp_path / "wsproxy.toml"
    config.write_text(f'[control]\ntcp = "127.0.0.1:0"\npublic_read = true\ntoken_file = "{token_file}"\n')
    engine = await start_engine("-c", str(config), "--backend", b1.flag)
    assert engine.tcp_address is not None
    async with tcp(engine.tcp_address) as client:
        assert (await client.get("/v1/status")).status_code == 200
        assert (await client.get("/status", params={"format": "json"})).status_code == 200
        assert (await client.post("/v1/servers/b1/drain")).status_code == 401
    async with tcp(engine.tcp_address, token_file.read_text().strip()) as client:
        assert (await client.post("/v1/servers/b1/drain", params={"force": "1"})).status_code == 200


async def test_tcp_without_a_token_refuses_to_start(start_engine: Start, echo_backends: Backends) -> None:
    """`--control-tcp` without a token: the engine exits non-zero at start, saying why."""
    (b1,) = await echo_backends(1)
    engine = await start_engine("--backend", b1.flag, "--control-tcp", "127.0.0.1:0", wait=False)
    assert await engine.wait_exit(10.0) == 2
    await engine.stop()
    assert any("token" in line for line in engine.stderr_lines), engine.output()


# -- the socket -----------------------------------------------------------------------------------


async def test_socket_is_private(start_engine: Start, echo_backends: Backends, tmp_path: Path) -> None:
    """The control socket is 0600 in a directory created 0700; it is removed when the engine stops."""
    (b1,) = await echo_backends(1)
    path = tmp_path / "run" / "wsproxy" / "control.sock"
    engine = await start_engine("--backend", b1.flag, control=path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert engine.control == str(path)
    assert await engine.stop() == 0
    assert not path.exists()


async def test_stale_socket_is_replaced_but_files_are_not(
    start_engine: Start, echo_backends: Backends, tmp_path: Path
) -> None:
    """A socket nobody answers on is replaced; a regular file at the path is refused and left alone."""
    (b1,) = await echo_backends(1)
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))  # bound, never listening, closed: what a killed engine leaves
    engine = await start_engine("--backend", b1.flag, control=stale)
    async with engine.client() as client:
        assert (await client.status())["engine"]["pid"] == engine.pid
    second = await start_engine("--backend", b1.flag, control=stale, wait=False)
    assert await second.wait_exit(10.0) == 2  # a live engine answers there
    await second.stop()
    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    third = await start_engine("--backend", b1.flag, control=regular, wait=False)
    assert await third.wait_exit(10.0) == 2
    await third.stop()
    assert regular.read_text() == "keep me"


# -- the status page and metrics ---------------------------------------------------------------------


async def test_status_page_three_formats(pool: tuple[EngineProc, list[EchoBackend]], http: httpx.AsyncClient) -> None:
    """/status and /websocket_status answer HTML (self-refreshing), JSON and CSV with the check module's fields."""
    engine, backends = pool
    page = await http.get("/status")
    assert page.headers["content-type"].startswith("text/html")
    assert '<meta http-equiv="refresh" content="3">' in page.text and backends[0].address in page.text
    data = (await http.get("/websocket_status", params={"format": "json"})).json()["servers"]
    assert data["total"] == 2 and data["generation"] == 1
    assert [(s["index"], s["name"], s["status"], s["type"]) for s in data["server"]] == [
        (0, backends[0].address, "up", "tcp"),
        (1, backends[1].address, "up", "tcp"),
    ]
    response = await http.get("/websocket_status", params={"format": "csv"})
    assert response.headers["content-type"].startswith("text/plain")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert [row[:4] for row in rows] == [["0", "websockets", backends[0].address, "up"],
                                         ["1", "websockets", backends[1].address, "up"]]  # fmt: skip
    await backends[1].stop()
    await wait_until(lambda: _health(engine, "b2", "down"), what="b2 down")
    down = (await http.get("/status", params={"format": "JSON", "status": "down"})).json()["servers"]
    assert down["total"] == 1 and down["server"][0]["index"] == 1
    up = (await http.get("/status", params={"format": "csv", "status": "up"})).text
    assert up.splitlines() == [f"0,websockets,{backends[0].address},up,{up.split(',')[4]},0,tcp,0"]


async def _health(engine: EngineProc, name: str, status: str) -> bool:
    return bool((await server_of(engine, name))["health"]["status"] == status)


async def test_metrics_parse(pool: tuple[EngineProc, list[EchoBackend]], http: httpx.AsyncClient) -> None:
    """/metrics parses with prometheus_client and counts an open connection where it is."""
    engine, _ = pool
    ws = await open_ws(engine)
    try:
        detail = await wait_until(lambda: _with_connection(engine), what="the open connection")
        await wait_until(lambda: _checked(http), what="a health check on every server")
        response = await http.get("/metrics")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        active = {s.labels["server"]: s.value for s in families["wsproxy_server_active_connections"].samples}
        assert active[detail["name"]] == 1.0 and sum(active.values()) == 1.0
        up = {s.labels["server"]: s.value for s in families["wsproxy_server_up"].samples}
        assert up == {"b1": 1.0, "b2": 1.0}
        assert families["wsproxy_active_connections"].samples[0].value == 1.0
        for name in ("wsproxy_server_connections", "wsproxy_server_received_bytes", "wsproxy_server_sent_bytes",
                     "wsproxy_server_handshakes", "wsproxy_server_connect_failures",
                     "wsproxy_server_check_failures", "wsproxy_server_check_latency_seconds"):  # fmt: skip
            assert name in families, name
        checked = {s.labels["server"] for s in families["wsproxy_server_checks"].samples if s.value > 0}
        assert checked == {"b1", "b2"}
    finally:
        await ws.close()


async def _checked(http: httpx.AsyncClient) -> bool:
    servers = (await http.get("/v1/status")).json()["servers"]
    return all(s["health"]["checks"] > 0 for s in servers)


async def test_status_listener_is_read_only(start_engine: Start, echo_backends: Backends) -> None:
    """`--status-listen` serves /status and /metrics without a token, and nothing that mutates."""
    (b1,) = await echo_backends(1)
    engine = await start_engine("--backend", b1.flag, "--status-listen", "127.0.0.1:0")
    assert engine.status_address is not None
    async with tcp(engine.status_address) as client:
        assert b1.address in (await client.get("/websocket_status", params={"format": "csv"})).text
        assert "wsproxy_server_up" in (await client.get("/metrics")).text
        assert (await client.get("/v1/status")).status_code == 404
        assert (await client.post("/v1/servers/b1/disable")).status_code == 404
        assert (await client.post("/status")).status_code == 405
    assert (await server_of(engine, "b1"))["state"] == "up"


async def test_stream_readers_are_unsubscribed(tmp_path: Path, echo_backends: Backends) -> None:
    """A stream reader that disconnects is unsubscribed within a second; stopping the engine ends open streams."""
    from proxy_core.config import EngineConfig, ServerConfig
    from proxy_core.control.server import start_control
    from proxy_core.edgeconfig import ListenerConfig
    from proxy_core.engine import Engine

    (b1,) = await echo_backends(1)
    listen = (ListenerConfig("127.0.0.1", 0),)
    config = EngineConfig(listen=listen, servers=(ServerConfig("b1", "127.0.0.1", b1.port),))
    engine = Engine(config, str(tmp_path / "in-process.sock"))
    await engine.start()
    await start_control(engine)
    stopped = False
    transport = httpx.AsyncHTTPTransport(uds=str(tmp_path / "in-process.sock"))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://wsproxy", timeout=unit(5.0)) as http:
            async with http.stream("GET", "/v1/events/stream", params={"since": 0}) as response:
                await asyncio.wait_for(anext(response.aiter_lines()), unit(5.0))
                await wait_until(lambda: engine.bus.subscribers == 1, what="the stream to subscribe")
            await wait_until(lambda: engine.bus.subscribers == 0, timeout=2.0, what="the reader to be unsubscribed")

            async def hold() -> None:
                async with http.stream("GET", "/v1/events/stream") as response:
                    async for _ in response.aiter_lines():
                        pass

            reader = asyncio.create_task(hold())
            await wait_until(lambda: engine.bus.subscribers == 1, what="the second stream to subscribe")
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.wait_for(engine.shutdown(0), unit(5.0))
            stopped = True
            assert loop.time() - started < unit(1.5) and engine.bus.subscribers == 0
            await asyncio.wait_for(asyncio.gather(reader, return_exceptions=True), unit(5.0))
    finally:
        if not stopped:
            await engine.shutdown(0)
