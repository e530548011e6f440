"""The handshake log: bounded, batched, filterable, and it stops following when the operator scrolls up."""

from __future__ import annotations

from collections import deque
from datetime import tzinfo
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Log

from tui.lines import traffic_line
from tui.widgets.batch_log import BatchLog

JSON = dict[str, Any]

# k9s caps its log at 5k lines "because performance suffers" (anchors §3); we keep as many to refilter.
MAX_LINES = 5000


def line_matches(line: str, query: str) -> bool:
    """Substring filter, case-insensitive; a leading `!` keeps the lines that do not match."""
    if not query:
        return True
    invert = query.startswith("!")
    needle = query[1:].lower() if invert else query.lower()
    if not needle:
        return True
    return (needle in line.lower()) != invert


class HandshakeLog(Vertical):
    """One line per handshake and per close; gap markers where events were dropped."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: deque[str] = deque(maxlen=MAX_LINES)
        self.filter_text = ""
        self.unseen = 0
        self.gaps = 0
        self.missed = 0
        self.engine_dropped = 0
        self._title = "Handshakes"

    def compose(self) -> ComposeResult:
        yield Label("Handshakes", id="hs-title", classes="pane-title")
        yield BatchLog(max_lines=MAX_LINES, id="hs-log")

    @property
    def log_widget(self) -> Log:
        """The inner Log (focus target for scrolling and `/`)."""
        return self.query_one("#hs-log", Log)

    def on_mount(self) -> None:
        self.watch(self.log_widget, "scroll_y", self._scrolled, init=False)

    def _scrolled(self, _old: float, _new: float) -> None:
        if self.unseen and self.log_widget.is_vertical_scroll_end:
            self.unseen = 0
            self._retitle()

    def add_events(self, events: list[JSON], tz: tzinfo | None) -> None:
        """Format and append a batch with one `write_lines` call (anchors §4: batch, never per line)."""
        new: list[str] = []
        for event in events:
            if event.get("type") == "gap":
                self.gaps += 1
                self.missed += int(event.get("missed") or 0)
            line = traffic_line(event, tz)
            if line is not None:
                new.append(line)
        if not new:
            return
        self.lines.extend(new)
        shown = [line for line in new if line_matches(line, self.filter_text)]
        log = self.log_widget
        if shown:
            following = log.is_vertical_scroll_end or log.max_scroll_y == 0
            if not following:
                self.unseen += len(shown)
            log.write_lines(shown)
        self._retitle()

    def set_engine_dropped(self, dropped: int) -> None:
        """The engine's own count of events it could not hand to any reader."""
        if dropped != self.engine_dropped:
            self.engine_dropped = dropped
            self._retitle()

    def set_filter(self, query: str) -> None:
        """Re-show the kept lines through a new filter and follow the end again."""
        self.filter_text = query
        log = self.log_widget
        log.clear()
        log.write_lines([line for line in self.lines if line_matches(line, query)])
        log.scroll_end(animate=False)
        self.unseen = 0
        self._retitle()

    def _retitle(self) -> None:
        parts = ["Handshakes"]
        if self.filter_text:
            parts.append(f"filter: {self.filter_text}")
        if self.unseen:
            parts.append(f"paused, {self.unseen} new (End to follow)")
        if self.gaps or self.engine_dropped:
            parts.append(f"dropped: {self.missed} in {self.gaps} gaps, engine {self.engine_dropped}")
        title = "  ·  ".join(parts)
        if title != self._title:  # an unchanged title would still cost a layout pass
            self._title = title
            self.query_one("#hs-title", Label).update(title)
