"""The supervisor's view of one worker process, and the registry that reports its own changes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy_core.checkspec import CheckConfig
from proxy_core.registry import Registry
from proxy_core.workers.link import Link, Message


class SyncedRegistry(Registry):
    """A registry that tells the supervisor after every change of state, weight or membership."""

    def __init__(self, check: CheckConfig, on_change: Callable[[], None], balance: str, pool: str) -> None:
        super().__init__(check, balance, pool)
        self.on_change = on_change

    @classmethod
    def like(cls, registry: Registry, on_change: Callable[[], None]) -> SyncedRegistry:
        """An empty registry with the same pools (each with its balance and check) as `registry`."""
        first = registry.default
        synced = cls(first.check, on_change, first.balance, first.name)
        synced.qualified = registry.qualified
        for pool in registry.pools.values():
            if pool is not first:
                synced.add_pool(pool.name, pool.balance, pool.check)
        return synced

    def refresh(self) -> None:
        super().refresh()
        self.on_change()


@dataclass
class WorkerHandle:
    """One worker process and its channel."""

    index: int
    proc: asyncio.subprocess.Process
    link: Link
    started: float
    ready: asyncio.Future[Message]
    pool_version: int = 0
    report: Message | None = None
    reports: int = 0  # reports received, so a waiter knows one came after its request
    requests: dict[int, asyncio.Future[bool]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


def exit_cause(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"
