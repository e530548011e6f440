"""Record a running engine into a JSONL script that `wsproxy-tui --replay` (ScriptedSource) plays back."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from proxy_core.client import ControlError, ControlUnavailable
from proxy_core.sources import Source, open_source

JSON = dict[str, Any]
# Snapshots once a second and rates every five keep a minute's recording under a megabyte.
STATUS_EVERY_S = 1.0
RATES_EVERY = 5


async def record(client: Source, seconds: float) -> list[JSON]:
    """Frames for `seconds`: status each second, rates every fifth, every event, details at the end."""
    start = time.time()
    frames: list[JSON] = [{"start": start}]

    def offset(ts: float | None = None) -> float:
        return round(max(0.0, (ts if ts is not None else time.time()) - start), 3)

    async def follow() -> None:
        async for event in client.stream_events(since=0):
            frames.append({"t": offset(event.get("ts")), "event": event})

    follower = asyncio.create_task(follow())
    status: JSON = {}
    try:
        tick = 0
        while time.time() - start < seconds:
            status = await client.status()
            frames.append({"t": offset(), "status": status})
            if tick % RATES_EVERY == 0:
                frames.append({"t": offset(), "rates": await client.rates()})
            tick += 1
            await asyncio.sleep(STATUS_EVERY_S)
        frames.append({"t": offset(), "rates": await client.rates()})
        for server in status.get("servers", []):
            detail = await client.server(server["name"])
            extra = {"history": detail.get("history", []), "connections": detail.get("connections", [])}
            frames.append({"t": offset(), "detail": {"name": server["name"], **extra}})
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, ControlUnavailable):
            await follower
    return frames


def main(argv: list[str] | None = None) -> int:
    """`python -m tui.record --attach PATH --seconds 30 -o demo.jsonl`."""
    parser = argparse.ArgumentParser(prog="python -m tui.record")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--attach", metavar="PATH|HOST:PORT", help="a wsproxy engine's control API")
    where.add_argument("--haproxy", metavar="PATH|HOST:PORT", help="HAProxy's runtime API")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("-o", "--output", required=True, metavar="FILE")
    args = parser.parse_args(argv)

    async def run() -> list[JSON]:
        async with open_source(control=args.attach, haproxy=args.haproxy) as client:
            return await record(client, args.seconds)

    try:
        frames = asyncio.run(run())
    except (ControlError, ControlUnavailable) as exc:
        print(f"tui.record: error: {exc}", file=sys.stderr)
        return 1
    frames.sort(key=lambda f: f.get("t", -1.0))
    with Path(args.output).open("w", encoding="utf-8") as out:
        for frame in frames:
            out.write(json.dumps(frame, sort_keys=True) + "\n")
    print(f"wrote {len(frames)} frames to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
