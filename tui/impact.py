"""Pure text of impact previews and rebalance plans (`?dry_run=true` answers), so modals stay dumb and testable."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from tui import format as fmt

JSON = dict[str, Any]

# A plan names every client it moves; the dialog groups them by route and shows at most this many routes.
MAX_ROUTES = 6


def plural(n: int, word: str) -> str:
    """`1 client`, `3 clients`."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def moved_line(impact: JSON) -> str:
    """How many live connections and distinct clients the action moves, and from which servers."""
    conns, clients = int(impact.get("connections") or 0), int(impact.get("clients") or 0)
    if not conns:
        return "Moves no live connection."
    sources = impact.get("from") or {}
    head = f"Moves {plural(conns, 'live connection')} of {plural(clients, 'distinct client')}"
    if len(sources) == 1:
        return f"{head} off {next(iter(sources))}."
    where = ", ".join(
        f"{name} {int(n.get('connections') or 0)} ({plural(int(n.get('clients') or 0), 'client')})"
        for name, n in sorted(sources.items())
    )
    return f"{head}, from {where}."


def shares_line(impact: JSON, servers: list[JSON]) -> str:
    """Each server's share of new connections now → after (`-` for none), in the table's order."""
    after: JSON = impact.get("share_after") or {}
    now = {str(s.get("name")): s.get("share") for s in servers}
    names = list(now) + [n for n in after if n not in now]
    parts = []
    for name in names:
        before = fmt.percent(now.get(name))
        if name not in after:
            parts.append(f"{name} {before} → gone")
        elif (b := fmt.percent(after[name])) == before:
            parts.append(f"{name} {b}")
        else:
            parts.append(f"{name} {before} → {b}")
    return "New connections: " + " · ".join(parts)


def counts_line(plan: JSON, servers: list[JSON]) -> str:
    """Each server's live connections now → once the plan's clients have reconnected where it sends them."""
    after = {str(s.get("name")): int(s.get("active") or 0) for s in servers}
    before = dict(after)
    for move in plan.get("moves") or []:
        n = int(move.get("connections") or 0)
        after[str(move.get("from"))] = after.get(str(move.get("from")), 0) - n
        after[str(move.get("to"))] = after.get(str(move.get("to")), 0) + n
    parts = [
        f"{name} {before.get(name, 0)}" + (f" → {n}" if n != before.get(name, 0) else "") for name, n in after.items()
    ]
    return "Connections: " + " · ".join(parts)


def preview_text(answer: JSON, servers: list[JSON]) -> str:
    """The impact block of a drain, disable, weight or remove confirmation."""
    impact: JSON = answer.get("impact") or {}
    return f"{moved_line(impact)}\n{shares_line(impact, servers)}"


def routes(plan: JSON) -> list[tuple[str, str, int, int]]:
    """Moves grouped by (from, to): clients and connections per route, largest first."""
    grouped: dict[tuple[str, str], list[int]] = {}
    for move in plan.get("moves") or []:
        entry = grouped.setdefault((str(move.get("from")), str(move.get("to"))), [0, 0])
        entry[0] += 1
        entry[1] += int(move.get("connections") or 0)
    return sorted(((a, b, c, n) for (a, b), (c, n) in grouped.items()), key=lambda r: (-r[2], r[0], r[1]))


def rate_text(rate: float | None) -> str:
    """The rate a rebalance will run at (None: the engine picks its default)."""
    if rate is None:
        return "at the engine's default rate ([rebalance] rate, else a fifth of a server's clients a second)"
    return f"at most {rate:g} clients a second"


def fleet_lines(fleet: JSON | None) -> list[str]:
    """In a fleet the plan is the fleet's (from every instance's totals); what follows is this instance's part."""
    if not fleet:
        return []
    me = fleet.get("instance") or "this instance"
    if fleet.get("policy") == "ip_hash":
        return [f"Fleet-wide: each instance moves the clients the ring places elsewhere. {me}'s part:"]
    shares = fleet.get("shares") or {}
    takers = sum(1 for share in shares.values() if any(share.values()))
    conns = int(fleet.get("connections") or 0)
    if not conns:
        return ["Fleet-wide: balanced, every server within one connection of its share."]
    return [f"Fleet-wide: {plural(conns, 'connection')} move, shared by {plural(takers, 'instance')}. {me}'s part:"]


def plan_text(answer: JSON, servers: list[JSON], rate: float | None) -> str:
    """The body of the rebalance confirmation: what moves where, at what rate, and the shares after."""
    plan: JSON = answer.get("plan") or {}
    clients, conns = int(plan.get("clients") or 0), int(plan.get("connections") or 0)
    skipped = []
    if young := int(plan.get("skipped_young") or 0):
        skipped.append(f"{plural(young, 'client')} connected too recently")
    if full := int(plan.get("skipped_full") or 0):
        skipped.append(f"{plural(full, 'client')} whose new server is full")
    lines = fleet_lines(answer.get("fleet"))
    if not clients:
        lines.append("Nothing to move: every client is where the balancer places it.")
    else:
        lines.append(
            f"Moves {plural(clients, 'client')} ({plural(conns, 'connection')}), {rate_text(rate)}; "
            "a client's connections close together."
        )
        all_routes = routes(plan)
        for source, target, n, c in all_routes[:MAX_ROUTES]:
            lines.append(f"  {source} → {target}: {plural(n, 'client')}, {plural(c, 'connection')}")
        if len(all_routes) > MAX_ROUTES:
            lines.append(f"  … and {len(all_routes) - MAX_ROUTES} more routes")
    if skipped:
        lines.append("Left alone: " + ", ".join(skipped) + ".")
    if clients:
        lines.append(counts_line(plan, servers))
    impact: JSON = answer.get("impact") or {}
    if impact.get("share_after"):
        lines.append(shares_line(impact, servers))
    return "\n".join(lines)


def progress_text(rebalance: JSON, now: float, tz: tzinfo | None = None) -> str:
    """One line for a rebalance running or just ended: moved so far, left, rate and state."""
    state = str(rebalance.get("state") or "?")
    moved = int(rebalance.get("moved_clients") or 0)
    planned = int(rebalance.get("planned_clients") or 0)
    left = int(rebalance.get("left_clients") or 0)
    conns = int(rebalance.get("moved_connections") or 0)
    rate = rebalance.get("rate")
    started = rebalance.get("started")
    finished = rebalance.get("finished")
    took = fmt.duration((finished if finished is not None else now) - started) if started is not None else "-"
    counts = f"moved {moved}/{planned} clients ({plural(conns, 'connection')}) · {left} left"
    rate_part = f" · {float(rate):g}/s" if rate is not None else ""
    if state == "running":
        return f"rebalance running {took} · {counts}{rate_part}"
    when = f" at {fmt.clock(finished, tz)}" if finished is not None else ""
    reason = fmt.clean(rebalance.get("reason") or "", 80)
    return f"rebalance {state}{when} after {took}: {reason} · {counts}"
