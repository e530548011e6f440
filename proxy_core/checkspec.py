"""Health-check settings, shared by the config loader, the check runner and the status page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CheckType = Literal["tcp", "http", "websocket", "none"]


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """How each server of the pool is probed; defaults mirror the seed (interval=3000 rise=2 fall=5 timeout=1000)."""

    type: CheckType = "tcp"
    path: str = "/"
    interval_ms: int = 3000
    rise: int = 2
    fall: int = 5
    timeout_ms: int = 1000
    # HTTP statuses counted healthy (the nginx check module's default `http_2xx http_3xx`).
    expect_status: frozenset[int] = field(default_factory=lambda: frozenset(range(200, 400)))
    # Host header for http/websocket checks; None means the server's own host:port.
    host_header: str | None = None
    # Passive detection: this many consecutive connect failures from real traffic mark a server down (0 = off).
    max_fails: int = 3
