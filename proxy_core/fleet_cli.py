"""The CLI's fleet side: `status --fleet`, `instances`, and `drain --wait` summed over every live instance."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from proxy_core.sources import Source, SourceError

JSON = dict[str, Any]
POLL_S = 0.25  # drain --wait re-reads the fleet this often (live views refresh every second, ours is fresh)


def format_instances(fleet: JSON) -> str:
    rows = [("INSTANCE", "ALIVE", "HEARTBEAT", "APPLIED", "ACTIVE", "WORKERS", "LOCAL OVERRIDES")]
    for item in fleet.get("instances", []):
        age = item.get("heartbeat_age_s")
        rows.append(
            (
                item["name"],
                "yes" if item["alive"] else "GONE",
                "-" if age is None else f"{age:.1f}s ago",
                str(item.get("applied") or "-"),
                "-" if item.get("active") is None else str(item["active"]),
                "-" if item.get("workers") is None else str(item["workers"]),
                ", ".join(item.get("local_overrides") or []) or "-",
            )
        )
    return _table(rows) + _warnings(fleet)


def format_fleet(fleet: JSON) -> str:
    names = [i["name"] for i in fleet.get("instances", []) if i["alive"]]
    rows = [("SERVER", "STATE", "FLEET ACTIVE", "TOTAL", *[f"@{n}" for n in names], "HEALTH")]
    for server in fleet.get("servers", []):
        health = "DISAGREES" if server.get("health_disagrees") else next(iter(server["health"].values()), "-")
        per = [str(server["instances"].get(n, "-")) for n in names]
        rows.append(
            (server["name"], str(server.get("state")), str(server["active"]), str(server["total"]), *per, health)
        )
    return _table(rows) + "\n\n" + format_instances(fleet)


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _warnings(fleet: JSON) -> str:
    return "".join(f"\nwarning: {w}" for w in fleet.get("warnings", []))


def fleet_holders(fleet: JSON, name: str) -> tuple[int, dict[str, int]]:
    for server in fleet.get("servers", []):
        if server["name"] == name:
            held = {i: n for i, n in sorted(server["instances"].items()) if n}
            return sum(held.values()), held
    return 0, {}


async def wait_fleet_drained(client: Source, name: str, timeout: float | None, out: TextIO) -> int:
    """`drain --wait` in a fleet: exit 0 when the live instances together hold no connection to `name`."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    shown: str | None = None
    warned: set[str] = set()
    while True:
        try:
            fleet = await client.fleet()
        except SourceError as exc:  # the store lost: say so, keep waiting (the timeout still bounds it)
            line = f"fleet view unavailable: {exc.message}"
        else:
            for warning in fleet.get("warnings", []):
                if warning not in warned:
                    warned.add(warning)
                    print(f"warning: {warning}", file=sys.stderr, flush=True)
            total, held = fleet_holders(fleet, name)
            if total == 0:
                print(f"{name} drained on every live instance: safe to restart", file=out, flush=True)
                return 0
            where = ", ".join(f"{i} {n}" for i, n in held.items())
            line = f"{name}: {total} connection(s) open in the fleet ({where})"
        if line != shown:
            print(line, file=out, flush=True)
            shown = line
        if deadline is not None and loop.time() >= deadline:
            print(f"timeout: {line}", file=sys.stderr, flush=True)
            return 1
        await asyncio.sleep(POLL_S)
