"""Which pool a connection goes to: routes on Host, path prefix and SNI, first match wins.

Pure code, the core of several pools behind one listener (HAProxy's `use_backend` on `hdr(host)`, `path_beg` and
`req.ssl_sni`; nginx's `map` and `ssl_preread`). The head the sniffer already parsed is the input: there is no
second parse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NOT_FOUND = 404  # no route and no default pool: a short answer, no backend touched
MISDIRECTED = 421  # the TLS server name and the Host header name different sites (RFC 9110 §15.5.20)


@dataclass(frozen=True, slots=True)
class Route:
    """One `[[route]]`: every condition given must hold; `None` means any."""

    pool: str
    listener: str | None = None  # a listener's address or name
    host: str | None = None  # "chat.example.com" or "*.example.com"
    path_prefix: str | None = None  # "/chat" matches /chat, /chat/..., /chat?..., not /chatroom
    sni: str | None = None  # same patterns as host
    name: str | None = None  # optional, unique: how an operator addresses it (else by its 1-based position)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a connection goes: a pool (and the index of the route that matched, None for the default), or a status."""

    pool: str | None
    route: int | None = None
    status: int | None = None
    reason: str = ""


def host_name(value: str | None) -> str | None:
    """A Host header or SNI as a comparable name: lower case, port and trailing dot removed, brackets kept."""
    if not value:
        return None
    text = value.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[: end + 1] if end > 0 else text
    name, _, port = text.rpartition(":")
    if name and port.isdigit():
        text = name
    return text.rstrip(".") or None


def name_matches(pattern: str, name: str | None) -> bool:
    """Exact (case-insensitive) or `*.example.com`: any name below example.com, not example.com itself."""
    if name is None:
        return False
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        return name.endswith(suffix) and len(name) > len(suffix)
    return name == pattern


def path_matches(prefix: str, path: str | None) -> bool:
    """Segment-aware prefix: "/chat" takes /chat, /chat/x and /chat?q, not /chatroom; "/chat/" is a plain prefix."""
    if path is None:
        return False
    path = path.split("?", 1)[0].split("#", 1)[0]
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def route_matches(route: Route, listener: str, host: str | None, path: str | None, sni: str | None) -> bool:
    if route.listener is not None and route.listener != listener:
        return False
    if route.host is not None and not name_matches(route.host, host):
        return False
    if route.path_prefix is not None and not path_matches(route.path_prefix, path):
        return False
    return route.sni is None or name_matches(route.sni, sni)


def decide(
    routes: Sequence[Route],
    listener: str,
    default_pool: str | None,
    *,
    host: str | None = None,
    path: str | None = None,
    sni: str | None = None,
    terminated: bool = False,
) -> Decision:
    """The pool for one connection. `host`/`path` come from the first request head (None for raw TCP or a TLS
    passthrough), `sni` from the ClientHello; `terminated` when wsproxy decrypted it (then a Host naming another
    site than the SNI is refused with 421, as a browser reusing a connection for another origin would cause)."""
    name, server_name = host_name(host), host_name(sni)
    if terminated and name is not None and server_name is not None and name != server_name:
        return Decision(
            None, status=MISDIRECTED, reason=f"Host {name} does not match the TLS server name {server_name}"
        )
    for index, route in enumerate(routes):
        if route_matches(route, listener, name, path, server_name):
            return Decision(route.pool, route=index)
    if default_pool is not None:
        return Decision(default_pool)
    what = f"host {name}" if name else "this connection"
    return Decision(None, status=NOT_FOUND, reason=f"no route for {what}{f' path {path}' if path else ''}")


@dataclass(frozen=True, slots=True)
class ListenerPlan:
    """What one listener needs before it can pick a pool: nothing, the SNI, or the request head."""

    listener: str  # the address routes name it by (as configured)
    default_pool: str | None
    wait_head: bool  # a route for this listener looks at Host or path: connect once the head is parsed
    peek_sni: bool  # a passthrough listener with SNI routes: read the ClientHello first (clienthello.py)
    terminated: bool  # wsproxy decrypts: the SNI is known at accept, a Host naming another site is a 421


def plan_listener(
    routes: Sequence[Route], listener: str, default_pool: str | None, first_pool: str, tls: bool
) -> ListenerPlan | None:
    """The listener's plan; None when it connects at accept to the first pool exactly as a single pool does."""
    mine = [r for r in routes if r.listener is None or r.listener == listener]
    if not mine and default_pool == first_pool:
        return None
    wait_head = any(r.host is not None or r.path_prefix is not None for r in mine)
    peek_sni = not tls and any(r.sni is not None for r in mine)
    return ListenerPlan(listener, default_pool, wait_head, peek_sni, tls)
