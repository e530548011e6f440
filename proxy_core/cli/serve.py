"""`wsproxy serve`: settings from flags and file, then run the engine until a signal stops it."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from proxy_core import __version__
from proxy_core.config import EngineConfig
from proxy_core.engine import Engine
from proxy_core.errors import ConfigError
from proxy_core.flags import build_config
from proxy_core.loop import loop_name, run
from proxy_core.socketpath import cli_hint, default_control_path


async def serve(config: EngineConfig) -> int:
    control_path = config.control.socket or default_control_path()
    if config.workers > 1:
        from proxy_core.workers.supervisor import Supervisor

        engine: Engine = Supervisor(config, control_path)
    else:
        engine = Engine(config, control_path)
    await engine.start()
    from proxy_core.control.server import start_control

    await start_control(engine)
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        again = engine.stopping
        engine.request_stop()
        if again:
            print(f"wsproxy: {sig.name} again: closing every connection now", flush=True)
        else:
            grace = config.timeouts.shutdown_grace
            print(f"wsproxy stopping on {sig.name}: no new connections; {grace:g} s grace for live ones", flush=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    reloads: set[asyncio.Task[None]] = set()  # referenced until done

    def on_hangup() -> None:
        task = asyncio.ensure_future(reload_on_signal(engine))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    servers = ", ".join(f"{s.name}={s.address}" for s in engine.registry)
    print(
        f"wsproxy {__version__} ({loop_name()}) pid {os.getpid()} listening on "
        f"{', '.join(engine.listen_addresses)}; control on {control_path}; servers {servers}",
        flush=True,
    )
    if control_path != default_control_path():
        print(f"try: {cli_hint(control_path)}", flush=True)
    await engine.wait()
    print("wsproxy stopped", flush=True)
    return 0


async def reload_on_signal(engine: Engine) -> None:
    """SIGHUP: the TLS listeners load their certificate files again; each result is printed (and an event)."""
    for result in await engine.reload_certs():
        outcome = "reloaded" if result["ok"] else "NOT reloaded (old certificates kept)"
        print(f"wsproxy: SIGHUP: {result['listener']} {outcome}: {result['detail']}", flush=True)


def run_serve(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except ConfigError as exc:
        print(f"wsproxy: error: {exc.message}", file=sys.stderr)
        return 2
    raise_fd_limit()
    try:
        return run(lambda: serve(config))
    except ConfigError as exc:
        print(f"wsproxy: error: {exc.message}", file=sys.stderr)
        return 2


def raise_fd_limit() -> None:
    """Raise the soft descriptor limit to the hard one: two descriptors per proxied connection."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
