"""The rebalance confirmation: the engine's dry-run plan first (who moves where, the shares after), then start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Number
from textual.widgets import Button, Input, Label, Static

from tui.impact import plan_text
from tui.modals.preview import Fetch, ImpactPreview

JSON = dict[str, Any]

# The engine's own bound on `rate` (control/routes.py MAX_REBALANCE_RATE): more is a typo.
MAX_RATE = 100_000.0


@dataclass(frozen=True)
class RebalanceRequest:
    """What to ask the engine: clients moved per second, or None for its default."""

    rate: float | None


class RebalanceModal(ModalScreen[RebalanceRequest | None]):
    """Returns a RebalanceRequest, or None if cancelled; shows the plan the engine would run now."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="rebalance-cancel")]

    def __init__(self, servers: list[JSON], fetch: Fetch) -> None:
        super().__init__(classes="modal")
        self.servers = servers
        self.fetch = fetch
        self.plan = ImpactPreview(forceable=False, id="plan")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="rebalance-dialog"):
            yield Label("Rebalance the pool", classes="dialog-title")
            yield Static(
                "Closes the connections of the clients that are on the wrong server now, so they reconnect where "
                "the balancer places them. Clients moved per second (empty = engine default):",
                classes="dialog-body",
            )
            yield Input(
                placeholder="default",
                id="rate",
                type="number",
                validators=[Number(minimum=0.001, maximum=MAX_RATE)],
            )
            yield self.plan
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start rebalance", id="start", variant="warning")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        # One key, then Enter, as for drain: the plan is on screen before Enter.
        self.query_one("#start", Button).focus()
        self.run_worker(self._load(), exclusive=True, group="preview")

    async def _load(self) -> None:
        await self.plan.load(self.fetch, self._describe)

    def _rate(self) -> float | None:
        """The typed rate; None when empty or invalid (invalid is refused at start)."""
        field = self.query_one("#rate", Input)
        result = field.validate(field.value)
        if not field.value.strip() or (result is not None and not result.is_valid):
            return None
        return float(field.value)

    def _describe(self, answer: JSON) -> str:
        rate = self._rate()
        if rate is None and isinstance(answer.get("rate"), int | float):
            rate = float(answer["rate"])  # an engine that says which default it would use
        return plan_text(answer, self.servers, rate)

    @on(Input.Changed, "#rate")
    def _rate_changed(self) -> None:
        if self.plan.answer is not None:
            self.plan.update(self._describe(self.plan.answer))

    @on(Input.Submitted, "#rate")
    def _submitted(self) -> None:
        self._apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self._apply()
        else:
            self.dismiss(None)

    def _apply(self) -> None:
        field = self.query_one("#rate", Input)
        if field.value.strip() and self._rate() is None:
            self.notify(f"Rate must be a number of clients per second, up to {MAX_RATE:g}", severity="warning")
            return
        self.dismiss(RebalanceRequest(self._rate()))

    def action_cancel(self) -> None:
        self.dismiss(None)
