"""Messages from a data source up to the app: snapshots, rates, event batches, link lost/restored."""

from __future__ import annotations

from typing import Any

from textual.message import Message

JSON = dict[str, Any]


class SnapshotUpdated(Message):
    """A fresh `GET /v1/status`; a newer one replaces an undelivered older one."""

    def __init__(self, status: JSON, now: float) -> None:
        super().__init__()
        self.status = status
        self.now = now

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotUpdated)


class RatesUpdated(Message):
    """A fresh `GET /v1/rates`; only the newest matters."""

    def __init__(self, rates: JSON) -> None:
        super().__init__()
        self.rates = rates

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RatesUpdated)


class EventsReceived(Message):
    """A batch of events in sequence order (batched so the log is written once per tick)."""

    def __init__(self, events: list[JSON]) -> None:
        super().__init__()
        self.events = events


class LinkLost(Message):
    """The engine stopped answering; the shown data is stale since `since` (unix time)."""

    def __init__(self, since: float, error: str, retry_in: float) -> None:
        super().__init__()
        self.since = since
        self.error = error
        self.retry_in = retry_in

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LinkLost)


class LinkRestored(Message):
    """The engine answers again after a loss of `down_s` seconds."""

    def __init__(self, down_s: float) -> None:
        super().__init__()
        self.down_s = down_s
