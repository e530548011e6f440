"""Server host names to one address, through one function: start-up, `add` and every health check call it.

Like HAProxy, a server named by a DNS name is connected to at one address, the first the resolver gives;
unlike HAProxy without a `resolvers` section, each check resolves the name again, so a server whose name
appears (or moves) later is followed. An IP literal is never looked up.

`$WSPROXY_HOSTS_FILE` is a resolver stub for tests: when set, that hosts(5)-format file is read at each lookup
and is the only resolver (a name it does not list does not resolve; no DNS query leaves the machine), so a test
can make a name resolve later without root or a network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket

HOSTS_FILE_ENV = "WSPROXY_HOSTS_FILE"
# A name that does not resolve in this time counts as unresolvable (a start names it; a check fails).
RESOLVE_TIMEOUT_S = 2.0


class Unresolvable(Exception):
    """The host does not resolve; the message is what operators see: "cannot resolve HOST"."""

    def __init__(self, host: str, detail: str = "") -> None:
        super().__init__(f"cannot resolve {host}")
        self.host = host
        self.detail = detail


def is_ip(host: str) -> bool:
    """An IPv4 or IPv6 literal (connected to as it is)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_hosts(text: str) -> dict[str, str]:
    """hosts(5) lines (`ADDRESS NAME [ALIAS...]`, `#` comments) into name -> address; the first line wins."""
    table: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.partition("#")[0].split()
        if len(fields) < 2 or not is_ip(fields[0]):
            continue
        for name in fields[1:]:
            table.setdefault(name.lower(), fields[0])
    return table


def _from_hosts_file(path: str, host: str) -> str:
    """The stub's answer; raises Unresolvable when the file does not list the name (or cannot be read)."""
    try:
        with open(path, encoding="utf-8") as handle:
            listed = parse_hosts(handle.read()).get(host.lower())
    except (OSError, UnicodeDecodeError) as exc:
        raise Unresolvable(host, f"{HOSTS_FILE_ENV}={path}: {exc}") from None
    if listed is None:
        raise Unresolvable(host, f"not in {HOSTS_FILE_ENV}={path}")
    return listed


async def resolve(host: str, timeout: float = RESOLVE_TIMEOUT_S) -> str:
    """The address to connect to for `host`; raises Unresolvable."""
    if is_ip(host):
        return host
    stub = os.environ.get(HOSTS_FILE_ENV)
    if stub:
        return _from_hosts_file(stub, host)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise Unresolvable(host, f"no answer within {timeout:g} s") from None
    except (OSError, ValueError) as exc:  # ValueError: IDNA, an empty label or one over 63 chars
        raise Unresolvable(host, str(exc)) from None
    if not infos:
        raise Unresolvable(host, "no address")
    return str(infos[0][4][0])
