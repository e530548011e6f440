"""The control API: an aiohttp app on a unix socket (and optionally TCP) through which everything steers the engine."""

from __future__ import annotations

__all__ = ["start_control"]


def __getattr__(name: str) -> object:
    """Import the server lazily: `proxy_core.control.body` and friends stay importable without aiohttp's app."""
    if name == "start_control":
        from proxy_core.control.server import start_control

        return start_control
    raise AttributeError(name)
