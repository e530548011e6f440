"""The help screen; `q` here closes help, it does not quit the app (hatop's trap)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# wsproxy-tui

Watch backend health live; drain a node before a restart.

## Main screen
| key | action |
|---|---|
| `↑` `↓` | select a server (the cursor stays on it across re-sorts and filters) |
| `enter` | server detail: health-check history, open connections |
| `a` | add an upstream (name, host:port, weight) |
| `d` | drain (Enter confirms): no new connections; the active column counts down to 0 |
| `D` | drain with a deadline (the rest are closed when it passes) |
| `u` | undrain |
| `x` / `e` | disable (maintenance; Enter confirms) / enable |
| `w` | set an absolute weight; shows the resulting traffic share first |
| `r` / `del` | remove (asks first; the engine refuses to leave no eligible server) |
| `b` / `B` | rebalance: the engine's plan first, then Enter starts it / stop it |
| `/` | filter the focused pane: backends or handshakes (`!text` inverts) |
| `s` | cycle the sort: name, state, active, share, fails |
| `p` | with several pools: show one pool, the next, then all (`enter` on a pool's header too) |
| `R` | routes: each route, the pool it sends to, what it matched (and per second), the 404/421 refusals |
| `tab` | move focus between panes; `end` follows the handshake log again |
| `ctrl+p` | command palette: actions and servers ("drain b2") |
| `?` / `f1` | this help |
| `q` / `ctrl+q` | quit (asks what to do with an engine this dashboard started) |

## Detail screen
`k` closes the selected connection; `esc` goes back; the server keys work here too.

## Columns
*state*: `up`, `down`, `going down 2/5` (failed checks of the fall threshold),
`going up 1/2` (passed checks of the rise threshold), `draining 12s, 18s left`, `disabled`.
*share*: weight / sum of weights of eligible servers. *fails*: failed checks / connect failures.
*active* while draining: open / open when the drain began.

Drain, disable, weight and remove confirmations show the engine's dry run first: the live connections
and distinct clients the action moves, and each server's share of new connections afterwards.
A running rebalance shows a line above the table: moved so far, left, rate, then how it ended.

If the engine stops answering, the data stays on screen marked **STALE since HH:MM:SS**
and the dashboard reconnects with backoff (0.25 s to 5 s).
"""


def engine_section(control: str, live: bool, command: str) -> str:
    """Where this dashboard's engine listens, and how the CLI reaches it."""
    if not control:
        return ""
    if not live:
        return f"## Engine\nRecorded from the engine on `{control}`.\n\n"
    return (
        f"## Engine\nControl socket `{control}`. From another shell: `{command}` "
        "(every `wsproxy` command takes the same option).\n\n"
    )


class HelpScreen(ModalScreen[None]):
    """Keys and column meanings, and where the engine is."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close", id="help-close")]

    def __init__(self, control: str = "", live: bool = True, command: str = "") -> None:
        super().__init__()
        self.control = control
        self.live = live
        self.command = command or f"wsproxy status --control {control}"

    def compose(self) -> ComposeResult:
        intro, keys, rest = HELP.partition("## Main screen")
        with VerticalScroll(id="help-box"):
            yield Markdown(intro + engine_section(self.control, self.live, self.command) + keys + rest)

    def action_close(self) -> None:
        self.dismiss(None)
