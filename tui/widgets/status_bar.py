"""The status bar: engine totals and whether the data is live; then (a second line) the control socket and CLI hint."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from textual.content import Content
from textual.widgets import Static

from proxy_core.socketpath import cli_hint
from tui import format as fmt
from tui import pools as pl

JSON = dict[str, Any]


def balance_label(status: JSON) -> str:
    """The engine's balance; with several pools each has its own (the table's headers say which), so the count."""
    if pl.grouped(status):
        return f"{len(pl.pool_names(status))} pools"
    return str((status.get("engine") or {}).get("balance", "?"))


class StatusBar(Static):
    """Engine identity, totals and link state; turns red with "stale since" when the link is lost."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("connecting…", **kwargs)
        self.status: JSON = {}
        self.stale_since: float | None = None
        self.retry_in = 0.0
        self.error = ""
        self.read_only = False
        self.read_only_reason = ""
        self.live = True
        self.target = ""
        self.tz: tzinfo | None = None

    def set_status(self, status: JSON) -> None:
        """A fresh snapshot arrived."""
        self.status = status
        self._render_bar()

    def set_link(self, stale_since: float | None, error: str = "", retry_in: float = 0.0) -> None:
        """Mark the data live (None) or stale since a unix time."""
        self.stale_since, self.error, self.retry_in = stale_since, error, retry_in
        self.set_class(stale_since is not None, "stale")
        self._render_bar()

    def _render_bar(self) -> None:
        engine = self.status.get("engine") or {}
        totals = self.status.get("totals") or {}
        listeners = ", ".join(str(item.get("address")) for item in self.status.get("listeners", []))
        parts: list[Content] = []
        if self.stale_since is not None:
            parts.append(
                Content.from_markup(
                    "[b]STALE since $since[/b], retrying in $retry",
                    since=fmt.clock(self.stale_since, self.tz),
                    retry=f"{self.retry_in:.1f}s",
                )
            )
        elif engine:
            mark = "● live" if self.live else "▶ replay"
            parts.append(Content.from_markup("[b $success]$mark[/]", mark=mark))
        if engine.get("stopping"):
            parts.append(Content.from_markup("[b $warning]ENGINE STOPPING (draining)[/]"))
        if self.read_only:
            parts.append(Content.from_markup("[b $warning]READ-ONLY[/]"))
            if self.read_only_reason:
                parts.append(Content(self.read_only_reason))
        if engine:
            parts.append(
                Content.from_markup(
                    "$kind $version pid $pid up $up  ·  $listen  ·  $balance  ·  "
                    "conns $active/$total  ·  handshakes $hs  ·  in $bin out $bout",
                    kind=str(engine.get("kind", "wsproxy")),
                    version=str(engine.get("version", "?")),
                    pid=str(engine.get("pid", "?")),
                    up=fmt.duration(engine.get("uptime_s")),
                    listen=listeners or "-",
                    balance=balance_label(self.status),
                    active=str(totals.get("active", 0)),
                    total=str(totals.get("total", 0)),
                    hs=str(totals.get("handshakes", 0)),
                    bin=fmt.size(totals.get("bytes_in")),
                    bout=fmt.size(totals.get("bytes_out")),
                )
            )
        else:
            parts.append(Content(f"waiting for {self.target}"))
        lines = [Content("  ·  ").join(parts), self._control_line()]
        self.update(Content("\n").join(line for line in lines if line))

    def control_path(self) -> str:
        """The engine's control socket: what we are attached to, or (replaying) what the recording says."""
        if self.live:
            return self.target
        return str((self.status.get("engine") or {}).get("control") or "")

    def cli_command(self) -> str:
        """The `wsproxy` command that reads the same proxy from another shell (HAProxy's through --haproxy)."""
        path = self.control_path()
        if (self.status.get("engine") or {}).get("kind") == "haproxy":
            return f"wsproxy status --haproxy {path}"
        return cli_hint(path)

    def _control_line(self) -> Content:
        """The socket, and the CLI command that reads the same engine from another shell."""
        path = self.control_path()
        if not path:
            return Content("")
        if not self.live:
            return Content.from_markup("control [b]$path[/b] (recorded)", path=path)
        return Content.from_markup(
            "control [b]$path[/b]  ·  from another shell: [b]$hint[/b]", path=path, hint=self.cli_command()
        )
