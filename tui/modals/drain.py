"""Drain with a deadline: after it, the engine closes the connections that are still open."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Integer
from textual.widgets import Button, Input, Label

# A day: longer than any sane drain, short enough to catch a typo.
MAX_DEADLINE_S = 86400


@dataclass(frozen=True)
class DrainRequest:
    """What to ask the engine: a deadline in seconds, or None to wait for clients forever."""

    deadline_s: float | None


class DrainModal(ModalScreen[DrainRequest | None]):
    """Returns a DrainRequest, or None if cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="drain-cancel")]

    def __init__(self, name: str, active: int) -> None:
        super().__init__(classes="modal")
        self.server_name = name
        self.active = active

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Drain {self.server_name}", classes="dialog-title")
            yield Label(
                f"No new connections go to {self.server_name}; its {self.active} open ones "
                "finish. Deadline in seconds (empty = none): then the rest are closed."
            )
            yield Input(
                placeholder="30",
                id="deadline",
                type="integer",
                validators=[Integer(minimum=1, maximum=MAX_DEADLINE_S)],
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Drain", id="drain", variant="warning")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#deadline", Input).focus()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "drain":
            self._apply()
        else:
            self.dismiss(None)

    def _apply(self) -> None:
        field = self.query_one("#deadline", Input)
        if not field.value.strip():
            self.dismiss(DrainRequest(None))
            return
        result = field.validate(field.value)
        if result is not None and not result.is_valid:
            self.notify(f"Deadline must be 1-{MAX_DEADLINE_S} s", severity="warning")
            return
        self.dismiss(DrainRequest(float(field.value)))

    def action_cancel(self) -> None:
        self.dismiss(None)
