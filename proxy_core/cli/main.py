"""The `wsproxy` command: `serve` runs the engine; the other subcommands steer a running one."""

from __future__ import annotations

import argparse
import sys

from proxy_core import __version__
from proxy_core.cli.commands import add_commands
from proxy_core.flags import add_engine_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsproxy", description="WebSocket/TCP load-balancing reverse proxy")
    parser.add_argument("--version", action="version", version=f"wsproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the proxy engine (headless)")
    add_engine_flags(serve)
    serve.set_defaults(handler=run_serve)  # imported on use: the other subcommands start without the engine
    add_commands(commands)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    """`wsproxy serve`: proxy_core.cli.serve.run_serve, imported only when the engine is wanted."""
    from proxy_core.cli.serve import run_serve as serve

    return serve(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
