"""Who may talk to the control API: never a browser, and on TCP only a holder of the bearer token.

The unix socket is guarded by file permissions (0600 in a 0700 directory). TCP has no such guard, so there
every mutation needs the token, compared in constant time, and reads need it too unless `public_read`.
A request with an `Origin` header comes from a web page: refused everywhere (CSRF, DNS rebinding).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from proxy_core.errors import ConfigError, WsproxyError

TOKEN_ENV = "WSPROXY_TOKEN"
MIN_TOKEN_LENGTH = 16  # a guessable token on a TCP port is no protection; `openssl rand -hex 16` is 32
SAFE_METHODS = frozenset({"GET", "HEAD"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Unauthorized(WsproxyError):
    """No bearer token, or the wrong one, on the TCP control API."""

    status = 401
    code = "unauthorized"


class Forbidden(WsproxyError):
    """A browser request (it carries `Origin`): no web page may drive a local engine."""

    status = 403
    code = "forbidden"


def load_token(token_file: str | None, env: dict[str, str] | None = None) -> str | None:
    """The token from `token_file`, else `$WSPROXY_TOKEN`, else None; a present but unusable token is an error."""
    environ = os.environ if env is None else env
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("token_file", token_file, f"a readable file holding the token ({exc})") from exc
        source = "token_file"
    else:
        token = environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
        source = TOKEN_ENV
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(
            source, "<hidden>", f"a token of at least {MIN_TOKEN_LENGTH} printable characters without spaces"
        )
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8", "replace"), token.encode("utf-8"))


def guard(token: str | None, public_read: bool) -> Middleware:
    """Middleware: 403 for any `Origin`; with a token (the TCP site), 401 unless the request carries it."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if "Origin" in request.headers:
            raise Forbidden("requests from web browsers (with an Origin header) are refused")
        if token is None or (public_read and request.method in SAFE_METHODS):
            return await handler(request)
        if not bearer_matches(request.headers.get("Authorization"), token):
            raise Unauthorized("missing or wrong bearer token (Authorization: Bearer <token>)")
        return await handler(request)

    return middleware
