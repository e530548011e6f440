"""The edge line: per TLS or PROXY-protocol listener what an operator checks, and the clients refused most.

Hidden while the engine has no TLS listener, no PROXY listener and refused nobody, so a plain setup looks
as before. Certificate days are yellow under tls.WARN_DAYS and red under tls.CRITICAL_DAYS.
"""

from __future__ import annotations

from typing import Any

from textual.content import Content
from textual.widgets import Static

JSON = dict[str, Any]
WARN_DAYS = 14  # the engine's proxy_core.datapath.tls.WARN_DAYS; the dashboard does not import the engine
CRITICAL_DAYS = 3
TOP_REFUSED_SHOWN = 3  # keep the line short: the rest is in `wsproxy status --json`


def days_style(days: float) -> str:
    return "$error" if days < CRITICAL_DAYS else "$warning" if days < WARN_DAYS else "$success"


def failure_rate(previous: tuple[float, int] | None, now: float, count: int) -> float:
    """Failed handshakes per second since the previous snapshot (0 on the first)."""
    if previous is None or now <= previous[0]:
        return 0.0
    return max(0.0, (count - previous[1]) / (now - previous[0]))


def listener_part(listener: JSON, rate: float) -> Content | None:
    address = str(listener.get("address", "?"))
    if listener.get("tls"):
        days = float(listener.get("days_left", 0))
        return Content.from_markup(
            "[b]$address[/b] TLS $subject [$style]$days d[/] · $rate failed/s",
            address=address,
            subject=str(listener.get("subject", "?")),
            style=days_style(days),
            days=f"{days:g}",
            rate=f"{rate:.1f}",
        )
    if listener.get("proxy_protocol"):
        return Content.from_markup(
            "[b]$address[/b] PROXY · bad headers $bad · refused sources $refused",
            address=address,
            bad=str(listener.get("bad_headers", 0)),
            refused=str(listener.get("refused_sources", 0)),
        )
    return None


def limits_part(limits: JSON) -> Content | None:
    refused = int(limits.get("refused", 0))
    if not refused:
        return None
    top = ", ".join(f"{item['client']} {item['refused']}" for item in limits.get("top_refused", [])[:TOP_REFUSED_SHOWN])
    return Content.from_markup("[$warning]refused $refused[/] (top: $top)", refused=str(refused), top=top or "-")


class EdgeBar(Static):
    """One line: TLS and PROXY listeners, then the limits' refusals."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self._previous: dict[str, tuple[float, int]] = {}

    def set_status(self, status: JSON, now: float) -> None:
        parts: list[Content] = []
        for listener in status.get("listeners") or []:
            address = str(listener.get("address"))
            count = int(listener.get("handshake_failures", 0))
            rate = failure_rate(self._previous.get(address), now, count)
            self._previous[address] = (now, count)
            part = listener_part(listener, rate)
            if part is not None:
                parts.append(part)
        limits = limits_part(status.get("limits") or {})
        if limits is not None:
            parts.append(limits)
        self.display = bool(parts)
        if parts:
            self.update(Content("  ·  ").join(parts))
