"""The fleet under the status bar (engines started with --cluster): per-server fleet totals with a column per
instance, the instances, and the warnings (an instance gone, health that disagrees). Hidden outside a fleet.

The text is the CLI's `status --fleet` (proxy_core.cli.fleet), fed by LiveSource from the source's `fleet()`
(proxy_core.sources: the same call the CLI makes).
"""

from __future__ import annotations

from typing import Any

from textual.widgets import Static

from proxy_core.cli.fleet import format_fleet

JSON = dict[str, Any]


class FleetPanel(Static):
    """`/v1/fleet` as text; an unreachable store shown as its error."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", markup=False, **kwargs)
        self.text = ""

    def on_mount(self) -> None:
        self.display = False

    def set_fleet(self, fleet: JSON | None) -> None:
        if fleet is None:
            self.display = False
            return
        text = f"fleet: {fleet['error']}" if "error" in fleet else format_fleet(fleet)
        if text != self.text:
            self.text = text
            self.update(text)
        self.display = True
