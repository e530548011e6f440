"""The quit dialog: quitting the dashboard must never silently kill an engine it started."""

from __future__ import annotations

from enum import StrEnum

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class QuitChoice(StrEnum):
    """What the operator chose."""

    QUIT = "quit"  # attached: just close the dashboard
    STOP = "stop"  # started the engine: SIGTERM it (it drains, then exits)
    LEAVE = "leave"  # started the engine: leave it running and print how to re-attach


class QuitModal(ModalScreen[QuitChoice | None]):
    """Returns the choice, or None to stay."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="quit-cancel")]

    def __init__(self, owns_engine: bool, attach_hint: str) -> None:
        super().__init__(classes="modal")
        self.owns_engine = owns_engine
        self.attach_hint = attach_hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="quit-dialog"):
            yield Label("Quit wsproxy-tui?", classes="dialog-title")
            if self.owns_engine:
                yield Static(
                    "This dashboard started the engine. Stop it (it drains its connections, "
                    f"then exits), or leave it running and re-attach later with:\n"
                    f"  {self.attach_hint}",
                    markup=False,
                )
                with Horizontal(classes="dialog-buttons"):
                    yield Button("Stop engine", id="stop", variant="error")
                    yield Button("Leave running", id="leave", variant="primary")
                    yield Button("Cancel", id="cancel")
            else:
                yield Static("The engine keeps running; only the dashboard closes.", markup=False)
                with Horizontal(classes="dialog-buttons"):
                    yield Button("Quit", id="quit", variant="primary")
                    yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        choice = {"stop": QuitChoice.STOP, "leave": QuitChoice.LEAVE, "quit": QuitChoice.QUIT}
        self.dismiss(choice.get(event.button.id or ""))

    def action_cancel(self) -> None:
        self.dismiss(None)
