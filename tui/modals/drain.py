"""Drain with a deadline: after it, the engine closes the connections that are still open."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Integer
from textual.widgets import Button, Input, Label, Static

from tui.modals.preview import Fetch, ImpactPreview, Render

# A day: longer than any sane drain, short enough to catch a typo.
MAX_DEADLINE_S = 86400


@dataclass(frozen=True)
class DrainRequest:
    """What to ask the engine: a deadline in seconds, or None to wait for clients forever; force past a 409."""

    deadline_s: float | None
    force: bool = False


class DrainModal(ModalScreen[DrainRequest | None]):
    """Returns a DrainRequest, or None if cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="drain-cancel")]

    def __init__(self, name: str, active: int, fetch: Fetch | None = None, render: Render | None = None) -> None:
        super().__init__(classes="modal")
        self.server_name = name
        self.active = active
        self.fetch, self.describe = fetch, render
        self.impact = ImpactPreview(id="impact")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Drain {self.server_name}", classes="dialog-title")
            yield Static(  # a Static wraps at the dialog's width; a Label was cut off
                f"No new connections go to {self.server_name}; its {self.active} open ones "
                "finish. Deadline in seconds (empty = none): then the rest are closed.",
                classes="dialog-body",
            )
            yield Input(
                placeholder="30",
                id="deadline",
                type="integer",
                validators=[Integer(minimum=1, maximum=MAX_DEADLINE_S)],
            )
            if self.fetch is not None:
                yield self.impact
            with Horizontal(classes="dialog-buttons"):
                yield Button("Drain", id="drain", variant="warning")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#deadline", Input).focus()
        if self.fetch is not None and self.describe is not None:
            self.run_worker(self._load(self.fetch, self.describe), exclusive=True, group="preview")

    async def _load(self, fetch: Fetch, render: Render) -> None:
        await self.impact.load(fetch, render)
        if self.impact.refusal is not None:
            button = self.query_one("#drain", Button)
            button.label, button.variant = "Force drain", "error"

    @property
    def forced(self) -> bool:
        """The dry run was refused (last eligible server) and the button now forces."""
        return self.impact.refusal is not None

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
            self.dismiss(DrainRequest(None, self.forced))
            return
        result = field.validate(field.value)
        if result is not None and not result.is_valid:
            self.notify(f"Deadline must be 1-{MAX_DEADLINE_S} s", severity="warning")
            return
        self.dismiss(DrainRequest(float(field.value), self.forced))

    def action_cancel(self) -> None:
        self.dismiss(None)
