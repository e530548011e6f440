"""The add-upstream form: validates as you type; shows the engine's refusal and stays open."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Function, Integer, Regex, ValidationResult
from textual.widgets import Button, Input, Label, Select

from proxy_core.client import ControlError, ControlUnavailable
from tui.model import ADDRESS_RE, MAX_WEIGHT, NAME_RE

JSON = dict[str, Any]
# (name, address, weight, pool): pool is None with a single pool.
Submit = Callable[[str, str, int, str | None], Awaitable[JSON]]


def valid_address(value: str) -> bool:
    """HOST:PORT with a port in 1..65535."""
    match = ADDRESS_RE.match(value.strip())
    return match is not None and 0 < int(match["port"]) < 65536


class AddServerModal(ModalScreen[JSON | None]):
    """Returns the engine's SERVER answer once the add succeeded, or None if cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="add-cancel")]

    def __init__(
        self, submit: Submit, taken: set[str], pools: list[str] | None = None, pool: str | None = None
    ) -> None:
        super().__init__(classes="modal")
        self.submit = submit
        self.taken = taken
        #: With several pools, a pool field (default `pool`, the selected server's); names are then POOL/NAME.
        self.pools = pools or []
        self.pool = pool if pool in self.pools else (self.pools[0] if self.pools else None)

    def _taken(self, value: str) -> bool:
        pool = self._chosen_pool()
        return (f"{pool}/{value}" if pool else value) in self.taken

    def _chosen_pool(self) -> str | None:
        if not self.pools:
            return None
        chosen = self.query_one("#pool", Select).value
        return chosen if isinstance(chosen, str) else self.pool

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="add-dialog"):
            yield Label("Add upstream", classes="dialog-title")
            if self.pools:
                yield Label("Pool", classes="field-label")
                yield Select([(p, p) for p in self.pools], value=self.pool, allow_blank=False, id="pool")
            yield Label("Name", classes="field-label")
            yield Input(
                placeholder="b5",
                id="name",
                validators=[
                    Regex(NAME_RE.pattern, failure_description="1-64 of A-Z a-z 0-9 _ . -"),
                    Function(lambda v: not self._taken(v), "a server with this name exists"),
                ],
                valid_empty=False,
            )
            yield Label("", id="name-error", classes="field-error")
            yield Label("Address (host:port)", classes="field-label")
            yield Input(
                placeholder="127.0.0.1:9005",
                id="address",
                validators=[Function(valid_address, "HOST:PORT, port 1-65535")],
            )
            yield Label("", id="address-error", classes="field-error")
            yield Label(f"Weight (0-{MAX_WEIGHT})", classes="field-label")
            yield Input(
                "1",
                id="weight",
                type="integer",
                validators=[Integer(minimum=0, maximum=MAX_WEIGHT)],
            )
            yield Label("", id="weight-error", classes="field-error")
            yield Label("", id="engine-error", classes="field-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Add", id="add", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        if event.value or event.input.id == "weight":
            self._show(event.input, event.validation_result)
        self.query_one("#engine-error", Label).update("")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        inputs = list(self.query(Input))
        index = inputs.index(event.input)
        if index + 1 < len(inputs):
            inputs[index + 1].focus()
        else:
            self._try_add()

    def _show(self, field: Input, result: ValidationResult | None) -> None:
        message = "" if result is None or result.is_valid else "; ".join(result.failure_descriptions)
        self.query_one(f"#{field.id}-error", Label).update(message)
        field.set_class(bool(message), "-invalid")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "add":
            self._try_add()
        else:
            self.dismiss(None)

    def _try_add(self) -> None:
        ok = True
        for field in self.query(Input):
            result = field.validate(field.value)
            self._show(field, result)
            ok = ok and (result is None or result.is_valid)
        if not ok:
            self.notify("Fix the highlighted fields", severity="warning")
            return
        name = self.query_one("#name", Input).value.strip()
        address = self.query_one("#address", Input).value.strip()
        weight = int(self.query_one("#weight", Input).value)
        self._send(name, address, weight, self._chosen_pool())

    @work(exclusive=True, group="add-server")
    async def _send(self, name: str, address: str, weight: int, pool: str | None) -> None:
        button = self.query_one("#add", Button)
        button.disabled = True
        try:
            server = await self.submit(name, address, weight, pool)
        except ControlError as exc:
            self.query_one("#engine-error", Label).update(f"engine refused ({exc.status} {exc.code}): {exc.message}")
        except ControlUnavailable as exc:
            self.query_one("#engine-error", Label).update(f"engine unreachable: {exc}")
        else:
            self.dismiss(server)
            return
        button.disabled = False

    def action_cancel(self) -> None:
        self.dismiss(None)
