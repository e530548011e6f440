"""The events pane: state changes with reasons and every operator action with its result."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Log

from tui.format import clock
from tui.lines import action_line, event_line
from tui.widgets.batch_log import BatchLog

JSON = dict[str, Any]

MAX_LINES = 2000
# What the dashboard names as the target of a pool-wide action (rebalance); the engine's event has no server.
POOL_TARGET = "pool"
# An engine operator event within this many seconds of our own record of it is the same action.
ECHO_WINDOW_S = 10.0


class EventsPane(Vertical):
    """A bounded log of what changed and who changed it; toasts vanish, this stays."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._expected: list[tuple[str, str, float]] = []

    def compose(self) -> ComposeResult:
        yield Label("Events", classes="pane-title")
        yield BatchLog(max_lines=MAX_LINES, id="events-log")

    def add_events(self, events: list[JSON], tz: tzinfo | None) -> None:
        """Append state/operator/connect-failure events; skip the engine's echo of our own actions."""
        lines: list[str] = []
        for event in events:
            if event.get("type") == "operator" and self._is_echo(event):
                continue
            line = event_line(event, tz)
            if line is not None:
                lines.append(line)
        if lines:
            self.query_one("#events-log", Log).write_lines(lines)

    def add_action(self, ts: float, action: str, target: str, result: str, ok: bool, tz: tzinfo | None) -> None:
        """Record an action taken from this dashboard and its result."""
        if ok:
            self._expected.append((action, target, ts))
        self.query_one("#events-log", Log).write_line(action_line(ts, action, target, result, tz))

    def add_note(self, ts: float, text: str, tz: tzinfo | None) -> None:
        """Record something the dashboard noticed (a drain finished, the link dropped)."""
        self.query_one("#events-log", Log).write_line(f"{clock(ts, tz)} {text}")

    def _is_echo(self, event: JSON) -> bool:
        ts = float(event.get("ts") or 0.0)
        key = (str(event.get("action")), str(event.get("server") or POOL_TARGET))
        self._expected = [e for e in self._expected if abs(ts - e[2]) <= ECHO_WINDOW_S]
        for expected in self._expected:
            if (expected[0], expected[1]) == key and event.get("ok"):
                self._expected.remove(expected)
                return True
        return False
