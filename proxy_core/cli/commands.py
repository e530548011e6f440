"""`wsproxy status|add|drain|...`: steer a running engine through its control API.

Exit codes a script can rely on: 0 done, 1 the engine refused (or a wait timed out), 2 usage error,
3 the engine could not be reached. Every failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from proxy_core.cli import pools
from proxy_core.cli.fleet import format_fleet, format_fleet_plan, format_instances, wait_fleet_drained
from proxy_core.cli.format import (
    describe,
    format_event,
    format_plan,
    format_preview,
    format_status,
    health_label,
    rebalance_line,
)
from proxy_core.client import ControlClient, ControlError, ControlUnavailable
from proxy_core.config import MAX_WEIGHT, NAME_PATTERN, parse_address
from proxy_core.errors import ConfigError
from proxy_core.socketpath import cli_hint, default_control_path, live_sockets
from proxy_core.sources import CAP_DEADLINE, Source, open_source

JSON = dict[str, Any]
Action = Callable[[Source, argparse.Namespace], Awaitable[int]]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
TOKEN_ENV = "WSPROXY_TOKEN"
POLL_S = 0.5  # waits re-read the server this often even when no event wakes them (a missed stream is no hang)
EVENTS_PAGE = 1000  # GET /v1/events page size when printing the buffer


class UsageError(Exception):
    """Bad input caught before the engine is asked (exit 2)."""


# -- argument types (usage errors exit 2 through argparse) ------------------------------------------


def _name(text: str) -> str:
    """A server name, or POOL/NAME (HAProxy's BACKEND/SERVER)."""
    parts = text.split("/", 1)
    if not all(NAME_PATTERN.fullmatch(part) for part in parts) or (
        len(parts) == 2 and any(p.strip(".") == "" for p in parts)
    ):
        raise argparse.ArgumentTypeError(f"invalid server name {text!r}: use 1-64 of A-Z a-z 0-9 _ . - (or POOL/NAME)")
    return text


def _pool(text: str) -> str:
    if not NAME_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"invalid pool name {text!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    return text


def _address(text: str) -> str:
    try:
        parse_address("address", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"invalid address {text!r}: expected HOST:PORT") from exc
    return text


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range ({bounds})")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}: use a number >= 0")
    return value


# -- parsers ------------------------------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of clients per second in (0, 100000]")
    return value


def _dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run", action="store_true", help="say what it would move (connections, clients, shares); change nothing"
    )


def _scope(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--local", action="store_true", help="in a fleet: change this instance only (an override)")
    group.add_argument(
        "--wait-applied", action="store_true", help="in a fleet: return once every live instance applied it"
    )


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--control",
        metavar="PATH|HOST:PORT",
        help="the engine's control socket or TCP address (default: $WSPROXY_CONTROL, else the serve default)",
    )
    parent.add_argument("--token-file", metavar="PATH", help=f"bearer token for a TCP control API (or ${TOKEN_ENV})")
    parent.add_argument(
        "--haproxy",
        metavar="PATH|HOST:PORT",
        help="steer HAProxy through its runtime API (stats socket) instead of a wsproxy engine",
    )
    return parent


def add_commands(commands: Any) -> None:
    """Register every subcommand except `serve` on cli.py's subparsers."""
    common = _common()

    def make(parsers: Any, name: str, action: Action, text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parsers.add_parser(name, parents=[common], help=text, description=text)
        sub.set_defaults(handler=lambda args: run(args, action))
        return sub

    def command(name: str, action: Action, text: str) -> argparse.ArgumentParser:
        return make(commands, name, action, text)

    p = command("status", cmd_status, "show the engine and every server")
    p.add_argument("--json", action="store_true", help="print GET /v1/status as JSON")
    p.add_argument("--fleet", action="store_true", help="fleet totals per server and every instance (--cluster)")
    p = command("instances", cmd_instances, "list the fleet's instances: alive, last heartbeat, change applied")
    p.add_argument("--json", action="store_true", help="print GET /v1/fleet as JSON")
    p = command("add", cmd_add, "add a server (it takes traffic after its checks pass)")
    p.add_argument("name", type=_name)
    _scope(p)
    p.add_argument("address", type=_address, metavar="HOST:PORT")
    p.add_argument("--weight", type=_int_range(0, MAX_WEIGHT), default=1)
    p.add_argument("--max-conns", type=_int_range(1), default=None)
    p.add_argument("--pool", type=_pool, help="the pool it joins (or name it POOL/NAME); needed with several pools")
    p = command("drain", cmd_drain, "stop sending new connections to a server; open ones finish")
    p.add_argument("name", type=_name)
    _scope(p)
    p.add_argument("--deadline", type=_seconds, metavar="S", help="close what is left after S seconds")
    p.add_argument("--force", action="store_true", help="even if it is the last eligible server")
    p.add_argument("--wait", action="store_true", help="block until the server has no connections (exit 0)")
    p.add_argument("--timeout", type=_seconds, metavar="S", help="with --wait: give up after S seconds (exit 1)")
    _dry_run(p)
    p = command("undrain", cmd_undrain, "let a draining server take new connections again")
    p.add_argument("name", type=_name)
    _scope(p)
    p = command("weight", cmd_weight, "set a server's weight (absolute, 0..256)")
    p.add_argument("name", type=_name)
    _scope(p)
    p.add_argument("weight", type=_int_range(0, MAX_WEIGHT))
    p.add_argument("--force", action="store_true", help="allow weight 0 on the last eligible server")
    _dry_run(p)
    p = command("disable", cmd_disable, "maintenance: no new connections, open ones stay")
    p.add_argument("name", type=_name)
    _scope(p)
    p.add_argument("--force", action="store_true", help="even if it is the last eligible server")
    _dry_run(p)
    p = command("enable", cmd_enable, "take a disabled (or draining) server back")
    p.add_argument("name", type=_name)
    _scope(p)
    p = command("remove", cmd_remove, "remove a server from the pool")
    p.add_argument("name", type=_name)
    _scope(p)
    p.add_argument("--force", action="store_true", help="even with live connections (closed) or as the last one")
    _dry_run(p)
    p = command("rebalance", cmd_rebalance, "move the clients that are on the wrong server now, at a bounded rate")
    p.add_argument(
        "--rate", type=_positive, metavar="N", help="clients moved per second (default: a fifth of a server's)"
    )
    p.add_argument("--local", action="store_true", help="in a fleet: this instance's clients only, by its own counts")
    _dry_run(p)
    p.add_argument("--wait", action="store_true", help="block until balanced (exit 0)")
    p.add_argument("--timeout", type=_seconds, metavar="S", help="with --wait: give up after S seconds (exit 1)")
    p = command("events", cmd_events, "print recent events (state, operator, handshake, close)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events as they happen")
    p.add_argument("--since", type=_int_range(0), default=0, metavar="SEQ", help="only events after this number")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    command("reload-certs", cmd_reload_certs, "load the TLS certificate files again for new handshakes")
    p = command("wait-up", cmd_wait_up, "wait until a server's health check says up (exit 0)")
    p.add_argument("name", type=_name)
    p.add_argument("--timeout", type=_seconds, default=30.0, metavar="S", help="give up after S seconds (default 30)")
    p.add_argument(
        "--fresh", action="store_true", help="count only a check passed after this command started (after a restart)"
    )
    pools.register(commands, common, make, _scope)


# -- running ------------------------------------------------------------------------------------------


def read_token(token_file: str | None) -> str | None:
    """The token from --token-file, else $WSPROXY_TOKEN, else None."""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as handle:
                return handle.read().strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--token-file {token_file}: cannot read it ({exc})") from exc
    return os.environ.get(TOKEN_ENV, "").strip() or None


def control_target(value: str | None) -> str:
    return value or default_control_path()


def elsewhere(target: str) -> str:
    """When no engine answers at the default path: where one does answer, as a hint (or "")."""
    if target != default_control_path():
        return ""
    found = asyncio.run(live_sockets(exclude=target))
    if len(found) == 1:
        return f"; one engine answers at {found[0]}: try `{cli_hint(found[0])}`"
    if found:
        return f"; engines answer at {', '.join(found)}: pick one with --control PATH"
    return ""


def error(message: str) -> None:
    print(f"wsproxy: error: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, action: Action) -> int:
    """Run one subcommand against the engine and turn every failure into an exit code and one line."""
    haproxy = getattr(args, "haproxy", None)
    target = haproxy or control_target(args.control)
    try:
        token = read_token(args.token_file)
    except UsageError as exc:
        error(str(exc))
        return EXIT_USAGE

    async def main() -> int:
        async with open_source(control=None if haproxy else target, haproxy=haproxy, token=token) as source:
            source.scope_changes(local=getattr(args, "local", False), wait_applied=getattr(args, "wait_applied", False))
            return await action(source, args)

    try:
        return asyncio.run(main())
    except UsageError as exc:
        error(str(exc))
        return EXIT_USAGE
    except ControlUnavailable as exc:
        if haproxy:
            error(f"cannot reach HAProxy's runtime API at {exc}; is its `stats socket` at this path or address?")
        else:
            hint = elsewhere(target) if args.control is None else ""
            error(f"cannot reach the engine at {exc}" + (hint or "; is `wsproxy serve` running with this --control?"))
        return EXIT_UNREACHABLE
    except ControlError as exc:
        error(exc.message)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


# -- commands -------------------------------------------------------------------------------------


async def cmd_status(client: Source, args: argparse.Namespace) -> int:
    if args.fleet:
        fleet = await client.fleet()
        print(json.dumps(fleet, indent=2) if args.json else format_fleet(fleet))
        return EXIT_OK
    data = await client.status()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(format_status(data, time.time()))
    return EXIT_OK


async def cmd_instances(client: Source, args: argparse.Namespace) -> int:
    fleet = await client.fleet()
    print(json.dumps(fleet, indent=2) if args.json else format_instances(fleet))
    return EXIT_OK


async def cmd_add(client: Source, args: argparse.Namespace) -> int:
    server = await client.add(args.name, args.address, args.weight, args.max_conns, pool=args.pool)
    print(f"added {describe(server)}")
    return EXIT_OK


async def cmd_drain(client: Source, args: argparse.Namespace) -> int:
    if args.timeout is not None and not args.wait:
        raise UsageError("drain: --timeout only applies with --wait")
    if args.dry_run:
        return await _preview(client, args, "drain")
    status = await client.status() if args.wait else {}
    since = int(status.get("totals", {}).get("last_seq", 0))
    server = await client.drain(args.name, args.deadline, force=args.force)
    print(describe(server))
    name = str(server.get("name") or args.name)  # the source's full name (HAProxy: BACKEND/SERVER)
    if args.deadline is not None and not args.wait and CAP_DEADLINE not in client.capabilities:
        print(f"{name}: the deadline is kept by this command: it stays until the server is drained", flush=True)
        args.wait = True
    if not args.wait:
        return EXIT_OK
    if status.get("cluster") and not args.local:
        return await wait_fleet_drained(client, name, args.timeout, sys.stdout)
    return await wait_drained(client, name, since, args.timeout, sys.stdout)


async def cmd_undrain(client: Source, args: argparse.Namespace) -> int:
    print(describe(await client.undrain(args.name)))
    return EXIT_OK


async def _preview(client: Source, args: argparse.Namespace, action: str, weight: int | None = None) -> int:
    print(format_preview(await client.preview(action, args.name, weight, force=args.force)))
    return EXIT_OK


async def cmd_weight(client: Source, args: argparse.Namespace) -> int:
    if args.dry_run:
        return await _preview(client, args, "weight", args.weight)
    print(describe(await client.set_weight(args.name, args.weight, force=args.force)))
    return EXIT_OK


async def cmd_disable(client: Source, args: argparse.Namespace) -> int:
    if args.dry_run:
        return await _preview(client, args, "disable")
    print(describe(await client.disable(args.name, force=args.force)))
    return EXIT_OK


async def cmd_enable(client: Source, args: argparse.Namespace) -> int:
    print(describe(await client.enable(args.name)))
    return EXIT_OK


async def cmd_remove(client: Source, args: argparse.Namespace) -> int:
    if args.dry_run:
        return await _preview(client, args, "remove")
    result = await client.remove(args.name, force=args.force)
    print(f"removed {result.get('removed', args.name)}")
    return EXIT_OK


async def cmd_rebalance(client: Source, args: argparse.Namespace) -> int:
    if args.timeout is not None and not args.wait:
        raise UsageError("rebalance: --timeout only applies with --wait")
    if args.dry_run:
        answer = await client.rebalance(args.rate, dry_run=True)
        text = format_plan(answer)
        print(format_fleet_plan(answer, text) if answer.get("fleet") else text)
        return EXIT_OK
    state = (await client.rebalance(args.rate))["rebalance"]
    print(rebalance_line(state), flush=True)
    if state.get("warning"):
        print(f"warning: {state['warning']}", file=sys.stderr, flush=True)
    if not args.wait:
        return EXIT_OK
    return await wait_rebalanced(client, state, args.timeout, sys.stdout)


async def wait_rebalanced(client: Source, state: JSON, timeout: float | None, out: TextIO) -> int:
    """`rebalance --wait`: exit 0 once it is done with nobody left on the wrong server, else 1 saying what is left."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    shown = rebalance_line(state)
    while state.get("state") == "running":
        if deadline is not None and loop.time() >= deadline:
            print(f"timeout: {state.get('left_clients', 0)} client(s) not moved yet", file=sys.stderr, flush=True)
            return EXIT_FAILED
        await asyncio.sleep(POLL_S)
        state = (await client.rebalance_status())["rebalance"] or state
        line = rebalance_line(state)
        if line != shown:
            print(line, file=out, flush=True)
            shown = line
    if state.get("state") == "done" and not state.get("left_clients"):
        print("balanced: every client is where the balancer places it", file=out, flush=True)
        return EXIT_OK
    print(f"rebalance {state.get('state')}: {state.get('reason')}", file=sys.stderr, flush=True)
    return EXIT_FAILED


async def cmd_reload_certs(client: Source, args: argparse.Namespace) -> int:
    if not isinstance(client, ControlClient):
        raise UsageError("reload-certs: only a wsproxy engine has certificates to reload")
    result = await client.reload_certs()
    listeners = result.get("listeners", [])
    for item in listeners:
        print(f"{item['listener']}: {item['detail']}")
    if not listeners:
        print("no TLS listener")
    return EXIT_OK


async def cmd_events(client: Source, args: argparse.Namespace) -> int:
    show: Callable[[JSON], str] = (lambda e: json.dumps(e)) if args.json else format_event
    since: int = args.since
    if args.follow:
        async for event in client.stream_events(since=since):
            print(show(event), flush=True)
        error("the engine closed the event stream")
        return EXIT_UNREACHABLE
    while True:
        page = await client.events(since=since, limit=EVENTS_PAGE)
        events = page.get("events", [])
        for event in events:
            print(show(event))
        if len(events) < EVENTS_PAGE or int(page.get("next", since)) <= since:
            return EXIT_OK
        since = int(page["next"])


async def cmd_wait_up(client: Source, args: argparse.Namespace) -> int:
    since = int((await client.status()).get("totals", {}).get("last_seq", 0))
    after = time.time() if args.fresh else None
    return await wait_up(client, args.name, since, args.timeout, sys.stdout, after)


# -- waiting ----------------------------------------------------------------------------------------


async def _watch(client: Source, since: int, name: str, wake: asyncio.Event) -> None:
    """Set `wake` on every event about `name`; the waits poll anyway, so a lost stream only slows them."""
    try:
        async for event in client.stream_events(since=since):
            if event.get("server") == name or event.get("type") == "gap":
                wake.set()
    except (ControlUnavailable, ControlError):
        pass


async def _wait_for(
    client: Source,
    name: str,
    since: int,
    timeout: float | None,
    done: Callable[[JSON], bool],
    progress: Callable[[JSON], str],
    out: TextIO,
) -> tuple[bool, JSON]:
    """Re-read the server at each event about it (or every POLL_S) until `done`; print each new progress."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    wake = asyncio.Event()
    watcher = asyncio.create_task(_watch(client, since, name, wake))
    shown = None
    try:
        while True:
            wake.clear()  # before the read: an event landing after it wakes the next wait
            server = await client.server(name)
            if done(server):
                return True, server
            line = progress(server)
            if line != shown:
                print(line, file=out, flush=True)
                shown = line
            left = POLL_S if deadline is None else min(POLL_S, deadline - loop.time())
            if left <= 0:
                return False, server
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), left)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def wait_drained(client: Source, name: str, since: int, timeout: float | None, out: TextIO) -> int:
    """`drain --wait`: exit 0 the moment the server has no connections, 1 at the timeout."""
    ok, server = await _wait_for(
        client,
        name,
        since,
        timeout,
        lambda s: int(s.get("active", 0)) == 0,
        lambda s: f"{name}: {s.get('active', 0)} connection(s) open",
        out,
    )
    if ok:
        print(f"{name} drained: safe to restart", file=out, flush=True)
        return EXIT_OK
    print(f"timeout: {name} still has {server.get('active', 0)} connection(s)", file=sys.stderr, flush=True)
    return EXIT_FAILED


async def wait_up(
    client: Source, name: str, since: int, timeout: float | None, out: TextIO, after: float | None = None
) -> int:
    """`wait-up`: exit 0 once the health check says up (with `after`, up by a check passed since then)."""

    def is_up(server: JSON) -> bool:
        health = server.get("health", {})
        if health.get("status") != "up":
            return False
        return after is None or (health.get("last_result") == "ok" and (health.get("last_check") or 0) >= after)

    ok, server = await _wait_for(
        client,
        name,
        since,
        timeout,
        is_up,
        lambda s: f"{name}: {health_label(s)}",
        out,
    )
    if ok:
        print(f"{name} is up", file=out, flush=True)
        return EXIT_OK
    print(f"timeout: {name} is still {health_label(server)}", file=sys.stderr, flush=True)
    return EXIT_FAILED
