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


def format_fleet_plan(answer: JSON, local: str) -> str:
    """`wsproxy rebalance --dry-run` in a fleet: the fleet's moves and shares, then this instance's part."""
    plan = answer.get("fleet") or {}
    me = plan.get("instance", "this instance")
    if plan.get("policy") == "ip_hash":
        return f"fleet (ip_hash): each instance moves the clients the ring places elsewhere; {me}'s part:\n{local}"
    flows = plan.get("flows") or []
    if not flows:
        lines = ["dry run (fleet): balanced, every server is within one connection of its share fleet-wide"]
    else:
        lines = [f"dry run (fleet): would move {plan.get('connections', 0)} connection(s)"]
        lines += [f"  {f['from']} -> {f['to']}: {f['connections']} connection(s)" for f in flows]
        for instance, share in sorted((plan.get("shares") or {}).items()):
            parts = ", ".join(f"{n} off {s}" for s, n in sorted(share.items())) or "nothing"
            lines.append(f"  {instance} moves {parts}")
    before, after = plan.get("totals") or {}, plan.get("after") or {}
    lines.append("  fleet per server: " + ", ".join(f"{s} {before[s]} -> {after.get(s, before[s])}" for s in before))
    if plan.get("skipped_full"):
        lines.append(f"  left alone: {plan['skipped_full']} connection(s), their server is full fleet-wide")
    return "\n".join(lines) + f"\n{me}'s part:\n" + local


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
