"""Server names across pools: `POOL/NAME` wherever a name is taken, a bare `NAME` when it is unique."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from proxy_core.errors import BadRequest, NotFound

SEPARATOR = "/"


def qualified(pool: str, name: str) -> str:
    return f"{pool}{SEPARATOR}{name}"


def resolve(text: str, pools: Mapping[str, Iterable[str]]) -> tuple[str, str]:
    """(pool, server) for `chat/n2` or a bare `n2`; a bare name in two pools is refused naming the candidates."""
    if SEPARATOR in text:
        pool, _, name = text.partition(SEPARATOR)
        if pool not in pools:
            raise NotFound(f"no pool named {pool!r}")
        if name not in set(pools[pool]):
            raise NotFound(f"no server named {name!r} in pool {pool!r}")
        return pool, name
    found = [pool for pool, names in pools.items() if text in set(names)]
    if not found:
        raise NotFound(f"no server named {text!r}")
    if len(found) > 1:
        candidates = ", ".join(qualified(pool, text) for pool in sorted(found))
        raise BadRequest(f"server name {text!r} is in several pools: {candidates}; name the pool")
    return found[0], text
