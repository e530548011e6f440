"""Start the control API (unix socket, optional TCP) and the optional read-only status listener.

Every error becomes `{"error": {"code", "message"}}` with its status in one middleware here, so handlers only
raise. `start_control` sets `engine.control`, whose `cleanup()` the engine awaits when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from proxy_core.config import format_address, parse_listen
from proxy_core.control.auth import Handler, guard, load_token
from proxy_core.control.body import MAX_BODY, quote_input
from proxy_core.control.pages import add_page_routes
from proxy_core.control.routes import ENGINE, RATES_CACHE, add_routes
from proxy_core.control.stream import STREAMS
from proxy_core.errors import ConfigError, WsproxyError

if TYPE_CHECKING:
    from proxy_core.engine import Engine

log = logging.getLogger("wsproxy.control")

SHUTDOWN_S = 2.0  # open requests get this long when the engine stops; event streams are cancelled at once
PROBE_S = 0.5  # how long to wait for an engine that may still answer on an existing socket
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    where = f"{request.method} {quote_input(request.path, 80)}"
    if exc.status == 404:
        return f"no such endpoint: {where}"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        hint = "; a GET never changes anything" if request.method in ("GET", "HEAD") else ""
        return f"method not allowed: {where} (allowed: {allowed}){hint}"
    if exc.status == 413:
        return f"body over the {MAX_BODY}-byte limit"
    return exc.text or exc.reason


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where errors become statuses: WsproxyError by its own status, HTTP errors by theirs."""
    try:
        return await handler(request)
    except WsproxyError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, HTTP_CODES.get(exc.status, "http_error"), _http_message(request, exc))
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("control API: %s %s failed", request.method, request.path)
        return error_response(500, "internal", "internal error; the engine logged the details")


def build_app(
    engine: Engine,
    streams: set[asyncio.Task[Any]],
    *,
    api: bool,
    token: str | None = None,
    public_read: bool = False,
) -> web.Application:
    """The API (with the pages) for the control sockets, or only the pages for the status listener."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[errors, guard(token, public_read)])
    app[ENGINE] = engine
    app[STREAMS] = streams
    app[RATES_CACHE] = {}
    if api:
        add_routes(app)
    add_page_routes(app)
    return app


class ControlPlane:
    """The runners of the control API; `engine.control`, cleaned up when the engine stops."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []
        self.streams: set[asyncio.Task[Any]] = set()
        self.socket_path: str | None = None
        self.tcp_address: str | None = None
        self.status_address: str | None = None

    async def serve(self, app: web.Application) -> web.AppRunner:
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=SHUTDOWN_S, access_log=None)
        await runner.setup()
        self.runners.append(runner)
        return runner

    async def cleanup(self) -> None:
        """End event streams at once (they never finish by themselves), then close every site."""
        for task in list(self.streams):
            task.cancel()
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()
        if self.socket_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
            self.socket_path = None


async def prepare_socket_path(path: str) -> None:
    """Create the directory (0700) if missing; remove a stale socket; never touch a file or a live engine."""
    directory = Path(path).parent
    if not directory.exists():
        try:
            directory.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise ConfigError(
                "control", path, f"a socket path in a directory wsproxy can create ({exc.strerror})"
            ) from exc
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError("control", path, "a socket path; a file that is not a socket is there (not removed)")
    if await _answers(path):
        raise ConfigError("control", path, "a socket no running engine uses; another engine answers there")
    os.unlink(path)


async def _answers(path: str) -> bool:
    try:
        async with asyncio.timeout(PROBE_S):
            _, writer = await asyncio.open_unix_connection(path)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _start_unix(runner: web.AppRunner, path: str) -> None:
    old_umask = os.umask(0o177)  # the socket is never reachable by others, even before the chmod
    try:
        await web.UnixSite(runner, path).start()
    except OSError as exc:  # e.g. a path over the 107-byte limit of AF_UNIX
        raise ConfigError("control", path, f"a socket path this host can bind ({exc.strerror or exc})") from exc
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)


async def _start_tcp(runner: web.AppRunner, key: str, address: str) -> str:
    """Bind ourselves (so port 0 works and the bound address is known), then hand the socket to aiohttp."""
    host, port = parse_listen(key, address)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ConfigError(key, address, f"an address this host can bind ({exc.strerror or exc})") from exc
    await web.SockSite(runner, sock).start()
    bound = sock.getsockname()
    return format_address(bound[0], bound[1])


async def start_control(engine: Engine, announce: Callable[[str], None] | None = None) -> ControlPlane:
    """Serve the control API on `engine.control_path` (and TCP, and the status listener, when configured)."""
    config = engine.config.control
    token = load_token(config.token_file)
    if config.tcp and token is None:
        raise ConfigError(
            "control.tcp", config.tcp, "a token for the TCP control API: --token-file PATH or $WSPROXY_TOKEN"
        )
    say = announce or (lambda line: print(line, flush=True))
    plane = ControlPlane()
    try:
        if engine.control_path:
            await prepare_socket_path(engine.control_path)
            runner = await plane.serve(build_app(engine, plane.streams, api=True))
            await _start_unix(runner, engine.control_path)
            plane.socket_path = engine.control_path
        if config.tcp:
            app = build_app(engine, plane.streams, api=True, token=token, public_read=config.public_read)
            plane.tcp_address = await _start_tcp(await plane.serve(app), "control.tcp", config.tcp)
            say(f"control API also on {plane.tcp_address} (bearer token required)")
        if config.status_listen:
            app = build_app(engine, plane.streams, api=False)
            plane.status_address = await _start_tcp(
                await plane.serve(app), "control.status_listen", config.status_listen
            )
            say(f"status page on http://{plane.status_address}/status (metrics on /metrics)")
    except BaseException:
        await plane.cleanup()
        raise
    engine.control = plane
    return plane


__all__ = ["ControlPlane", "build_app", "start_control"]
