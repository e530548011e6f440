"""Impact previews in confirmations: ask the engine's dry run what an action would move before it is confirmed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual.widgets import Button, Static

from proxy_core.client import ControlError, ControlUnavailable
from tui.modals.confirm import ConfirmModal

JSON = dict[str, Any]
Fetch = Callable[[], Awaitable[JSON]]
Render = Callable[[JSON], str]

ASKING = "Asking the engine what this would move…"
FORCE_WARNING = "Force it? New connections will have nowhere to go until a server is eligible again."


def can_force(exc: ControlError) -> bool:
    """Only the "would leave no eligible server" refusal can be overridden; a duplicate cannot."""
    return "force" in exc.message or "no eligible server" in exc.message


class ImpactPreview(Static):
    """The dry run's answer in words; remembers a forceable refusal so the dialog can offer force."""

    def __init__(self, forceable: bool = True, **kwargs: Any) -> None:
        super().__init__(ASKING, markup=False, classes="impact", **kwargs)
        #: False where the engine has no force (rebalance): a 409 is then only shown.
        self.forceable = forceable
        #: The engine's forceable 409 refusal of the dry run, if that was its answer.
        self.refusal: str | None = None
        self.answer: JSON | None = None

    async def load(self, fetch: Fetch, render: Render) -> None:
        """Fetch the dry run and show it; a refusal or an unreachable engine is shown, never raised."""
        self.refusal = None
        try:
            self.answer = await fetch()
        except ControlError as exc:
            self.answer = None
            if exc.status == 409 and self.forceable and can_force(exc):
                self.refusal = exc.message
                self.update(f"The engine refuses: {exc.message}.\n{FORCE_WARNING}")
            else:
                self.update(f"No preview: {exc.message} ({exc.status})")
            self.set_class(True, "refused")
        except ControlUnavailable as exc:
            self.answer = None
            self.update(f"No preview: engine unreachable ({exc})")
            self.set_class(True, "refused")
        else:
            self.update(render(self.answer))
            self.set_class(False, "refused")


class PreviewModal(ConfirmModal):
    """A confirmation that shows the dry run's impact; a forceable 409 turns its button into "Force …".

    Returns True on confirm like ConfirmModal; `forced` says whether the operator confirmed the forced action.
    """

    def __init__(
        self,
        title: str,
        body: str,
        *,
        action: str,
        fetch: Fetch,
        render: Render,
        confirm: str = "Confirm",
        danger: bool = True,
    ) -> None:
        super().__init__(title, body, confirm=confirm, danger=danger)
        self.verb = action
        self.fetch = fetch
        self.describe = render
        self.forced = False
        self.impact = ImpactPreview(id="impact")

    def extra(self) -> Static:
        return self.impact

    def on_mount(self) -> None:
        # ConfirmModal.on_mount runs too (Textual calls every class's handler) and sets the focus.
        self.run_worker(self._load(), exclusive=True, group="preview")

    async def _load(self) -> None:
        await self.impact.load(self.fetch, self.describe)
        if self.impact.refusal is not None:
            self.forced = True
            self.confirm_label = f"Force {self.verb}"
            button = self.query_one("#confirm", Button)
            button.label, button.variant = self.confirm_label, "error"
            self.query_one("#cancel", Button).focus()
