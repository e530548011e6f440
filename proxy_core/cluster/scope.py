"""Who a change is for: the fleet (the default), this instance only (`--local`), or an entry being applied.

A context variable, set by the control route for the request's task, so every Engine method reads it
without each one growing two parameters.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChangeScope:
    local: bool = False  # the operator asked for this instance only
    wait_applied: bool = False  # acknowledge once every live instance applied it, not once it is in the stream
    from_stream: bool = False  # the applier replaying an entry: apply here, never append again


FLEET = ChangeScope()
STREAM = ChangeScope(from_stream=True)
CHANGE_SCOPE: contextvars.ContextVar[ChangeScope] = contextvars.ContextVar("change_scope", default=FLEET)
