"""`wsproxy-tui`: launch an engine, attach to one, run the demo, or replay a recording."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from proxy_core.client import ControlError, ControlUnavailable
from proxy_core.flags import add_engine_flags
from proxy_core.socketpath import cli_hint, default_control_path
from proxy_core.sources import Source, open_source
from tui.app import DashboardApp
from tui.launcher import Launcher, LaunchError
from tui.modals.quit import QuitChoice
from tui.source import DataSource, LiveSource, ScriptedSource

# Engine flags we pass through verbatim to `python -m proxy_core serve`.
_NOT_ENGINE = {"attach", "demo", "read_only", "replay", "help", "control", "haproxy"}


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The full parser, and one with only the engine's flags (to rebuild the child's argv)."""
    parser = argparse.ArgumentParser(
        prog="wsproxy-tui",
        description="Live dashboard for wsproxy: watch backend health, drain a node before a restart.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--attach", metavar="PATH|HOST:PORT", help="attach to a running engine")
    mode.add_argument("--demo", action="store_true", help="start local backends, engine and load")
    mode.add_argument("--replay", metavar="FILE", help="replay a JSONL recording (tui.record)")
    mode.add_argument("--haproxy", metavar="PATH|HOST:PORT", help="attach to HAProxy's runtime API (its stats socket)")
    parser.add_argument("--read-only", action="store_true", help="hide every mutating action")
    add_engine_flags(parser)
    engine_only = argparse.ArgumentParser(add_help=False)
    add_engine_flags(engine_only)
    return parser, engine_only


def engine_argv(args: argparse.Namespace, engine_only: argparse.ArgumentParser) -> list[str]:
    """Rebuild the engine's flags from parsed values, so `wsproxy-tui` takes what `serve` takes."""
    argv: list[str] = []
    for action in engine_only._actions:
        if action.dest in _NOT_ENGINE or not action.option_strings:
            continue
        value = getattr(args, action.dest, None)
        flag = action.option_strings[-1]
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def read_token(path: str | None) -> str | None:
    """The bearer token for a TCP control address."""
    return Path(path).read_text(encoding="utf-8").strip() if path else None


async def probe(source: Source) -> str | None:
    """None if the proxy answers, else why not."""
    try:
        async with source:
            await source.status()
    except (ControlUnavailable, ControlError) as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `wsproxy-tui` console script."""
    parser, engine_only = build_parser()
    args = parser.parse_args(argv)
    launcher: Launcher | None = None
    source: DataSource
    attach_hint = ""
    notice = ""
    try:
        if args.replay:
            source = ScriptedSource.from_file(args.replay, realtime=True)
        elif args.haproxy:
            problem = asyncio.run(probe(open_source(haproxy=args.haproxy)))
            if problem is not None:
                print(
                    f"wsproxy-tui: error: HAProxy's runtime API does not answer at {args.haproxy}: {problem}",
                    file=sys.stderr,
                )
                return 2
            source = LiveSource(open_source(haproxy=args.haproxy))
        else:
            token = read_token(args.token_file)
            if args.demo or args.config or args.backend:
                launcher = Launcher()
                notice = launch(launcher, args, engine_only)
                target = launcher.control_path
            else:
                target = args.attach or args.control or default_control_path()
                problem = asyncio.run(probe(open_source(control=target, token=token)))
                if problem is not None:
                    print(f"wsproxy-tui: error: no engine answers at {target}: {problem}", file=sys.stderr)
                    print("start one with -c FILE / --backend HOST:PORT, or try --demo", file=sys.stderr)
                    return 2
            attach_hint = f"wsproxy-tui --attach {target}"
            source = LiveSource(open_source(control=target, token=token))
        owns_engine = launcher is not None
        app = DashboardApp(
            source,
            read_only=args.read_only,
            owns_engine=owns_engine,
            attach_hint=attach_hint,
            on_signal=signal_choice(args.demo, owns_engine),
            notice=notice,
        )
        choice = app.run()
    except LaunchError as exc:
        print(f"wsproxy-tui: error: {exc}", file=sys.stderr)
        if launcher is not None:
            launcher.stop_all()
            print(f"logs kept in {launcher.workdir}", file=sys.stderr)
        return 1
    except BaseException:
        if launcher is not None:
            launcher.stop_all()
        raise
    return finish(launcher, choice, attach_hint)


def launch(launcher: Launcher, args: argparse.Namespace, engine_only: argparse.ArgumentParser) -> str:
    """Start the demo or the configured engine on the CLI's default socket (unless taken); the start notice."""
    if args.control:
        launcher.control_path = args.control
    else:
        asyncio.run(launcher.use_default_path())
    if args.demo:
        from tui.demo import start_demo

        print("starting demo backends, engine and load…", flush=True)
        asyncio.run(start_demo(launcher, engine_argv(args, engine_only)))
    else:
        launcher.start_engine(engine_argv(args, engine_only))
        asyncio.run(launcher.wait_engine())
    return announce(launcher)


def announce(launcher: Launcher) -> str:
    """Print where the engine's control socket is (and the CLI command when it is not the default)."""
    path = launcher.control_path
    print(f"engine control socket: {path}", flush=True)
    notice = ""
    if launcher.taken:
        notice = f"{launcher.taken}; this dashboard's engine is on {path}"
        print(notice, flush=True)
    if path != default_control_path():
        print(f"try: {cli_hint(path)}", flush=True)
    return notice


def signal_choice(demo: bool, owns_engine: bool) -> QuitChoice:
    """What SIGTERM or SIGHUP does: the demo's processes serve nobody once the dashboard is gone, so they stop;
    an engine started from a configuration keeps its clients connected (re-attach later); attached: just quit."""
    if demo:
        return QuitChoice.STOP
    return QuitChoice.LEAVE if owns_engine else QuitChoice.QUIT


def say(text: str) -> None:
    """Print if there is still a terminal: after a hang-up, writing fails and must not stop the clean-up."""
    with contextlib.suppress(OSError):
        print(text, flush=True)


def finish(launcher: Launcher | None, choice: QuitChoice | None, attach_hint: str) -> int:
    """Stop what we started, unless the operator chose to leave the engine running."""
    if launcher is None:
        return 0
    if choice is QuitChoice.LEAVE:
        pids = ", ".join(f"{c.name} {c.pid}" for c in launcher.running())
        say(f"engine left running ({pids}); logs in {launcher.workdir}")
        say(f"re-attach with: {attach_hint}")
        return 0
    say("stopping the engine (it drains its connections first)…")
    launcher.stop_all()
    launcher.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
