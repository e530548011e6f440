"""The line above the backends table while a rebalance runs (and for a while after it ended): like a drain's count."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from textual.widgets import Static

from tui.impact import progress_text

JSON = dict[str, Any]

# How long a finished rebalance stays on screen: long enough to read how it ended, then the line goes.
SHOW_ENDED_S = 60.0


class RebalanceBar(Static):
    """Moved so far, left, rate and state of the engine's rebalance; hidden when there is none to show."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", markup=False, **kwargs)
        self.tz: tzinfo | None = None
        self.shown: JSON | None = None

    def on_mount(self) -> None:
        self.display = False

    def set_rebalance(self, rebalance: JSON | None, now: float) -> None:
        """`/v1/status` `rebalance` (or None) at `now`; updates only when the text changes."""
        finished = (rebalance or {}).get("finished")
        show = rebalance is not None and (finished is None or now - float(finished) <= SHOW_ENDED_S)
        if not show or rebalance is None:
            self.shown = None
            self.display = False
            return
        state = str(rebalance.get("state"))
        text = progress_text(rebalance, now, self.tz)
        if state == "running":
            text += " · B stops it"
        for kind in ("running", "done", "stopped"):
            self.set_class(state == kind, f"-{kind}")
        self.shown = rebalance
        self.display = True
        self.update(text)
