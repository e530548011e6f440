"""The weight dialog: an absolute value, with the resulting traffic share shown before applying."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Integer
from textual.widgets import Button, Input, Label

from tui import format as fmt
from tui.modals.preview import ImpactPreview
from tui.model import MAX_WEIGHT

JSON = dict[str, Any]
# The engine's dry run of a weight: `fetch(weight)`; its answer in words: `render(answer)`.
WeightFetch = Callable[[int], Awaitable[JSON]]


def share_preview(servers: list[JSON], name: str, weight: int | None) -> str:
    """One line comparing today's share with the share at the new weight."""
    server = next((s for s in servers if s.get("name") == name), None)
    if server is None:
        return f"{name} is gone"
    now = fmt.percent(server.get("share"))
    if weight is None:
        return f"now {now} of new connections"
    if not fmt.eligible({**server, "weight": max(weight, 1)}):
        return f"{name} is {server.get('state')}: no new connections at any weight (now {now})"
    share = fmt.share_with_weight(servers, name, weight)
    if share == 0:
        return f"weight 0: {name} gets no new connections (now {now})"
    return f"{name} would get {share * 100:.1f}% of new connections (now {now})"


class WeightModal(ModalScreen[int | None]):
    """Returns the new absolute weight, or None if cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="weight-cancel")]

    def __init__(
        self,
        name: str,
        servers: list[JSON],
        fetch: WeightFetch | None = None,
        render: Callable[[JSON], str] | None = None,
    ) -> None:
        super().__init__(classes="modal")
        self.server_name = name
        self.servers = servers
        self.fetch, self.describe = fetch, render
        self.impact = ImpactPreview(id="impact")
        current = next((s for s in servers if s.get("name") == name), {})
        self.current = int(current.get("weight") or 0)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="weight-dialog"):
            yield Label(f"Set weight of {self.server_name}", classes="dialog-title")
            yield Label(f"Absolute weight, 0-{MAX_WEIGHT} (now {self.current})")
            yield Input(
                str(self.current),
                id="weight",
                type="integer",
                validators=[Integer(minimum=0, maximum=MAX_WEIGHT)],
            )
            yield Label(share_preview(self.servers, self.server_name, self.current), id="share")
            if self.fetch is not None:
                yield self.impact
            with Horizontal(classes="dialog-buttons"):
                yield Button("Apply", id="apply", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#weight", Input).focus()
        self._preview(self.current)

    @property
    def forced(self) -> bool:
        """The engine's dry run refused this weight (0 on the last eligible server); Apply now forces it."""
        return self.impact.refusal is not None

    def _preview(self, weight: int) -> None:
        """Ask the engine's dry run about this weight; a newer value cancels the older question."""
        fetch, render = self.fetch, self.describe
        if fetch is None or render is None:
            return
        self.impact.refusal = None  # a refusal of the previous value must not force this one
        button = self.query_one("#apply", Button)
        button.label, button.variant = "Apply", "primary"

        async def load() -> None:
            await self.impact.load(lambda: fetch(weight), render)
            forced = self.impact.refusal is not None
            button.label = f"Force weight {weight}" if forced else "Apply"
            button.variant = "error" if forced else "primary"

        self.run_worker(load(), exclusive=True, group="preview")

    def _value(self) -> int | None:
        field = self.query_one("#weight", Input)
        result = field.validate(field.value)
        if result is not None and not result.is_valid:
            return None
        return int(field.value)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        value = self._value()
        label = self.query_one("#share", Label)
        if value is None:
            label.update(f"weight must be 0-{MAX_WEIGHT}")
        else:
            label.update(share_preview(self.servers, self.server_name, value))
            self._preview(value)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            self._apply()
        else:
            self.dismiss(None)

    def _apply(self) -> None:
        value = self._value()
        if value is None:
            self.notify(f"Weight must be 0-{MAX_WEIGHT}", severity="warning")
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
