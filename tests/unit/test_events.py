"""The event bus: numbered events, a bounded ring, and subscribers that drop the oldest instead of growing."""

from __future__ import annotations

import asyncio
from dataclasses import fields

import orjson
import pytest

from proxy_core.events import (
    ConnectFailed,
    ConnectionClosed,
    Event,
    EventBus,
    Gap,
    Handshake,
    OperatorAction,
    StateChanged,
)


def action(i: int) -> OperatorAction:
    return OperatorAction(action="weight", server=f"s{i}", ok=True, detail=str(i))


def test_sequence_and_ring_bound() -> None:
    """Events get increasing sequence numbers and the ring keeps only the newest."""
    bus = EventBus(capacity=3)
    for i in range(5):
        bus.publish(action(i))
    assert [e.seq for e in bus.ring] == [3, 4, 5]
    assert bus.ring[-1].to_dict()["type"] == "operator"


def test_since_resumes_and_marks_gaps() -> None:
    """Reading from a sequence number returns what followed it, with a gap marker for what is gone."""
    bus = EventBus(capacity=3)
    for i in range(5):
        bus.publish(action(i))
    assert [e.seq for e in bus.since(3)] == [4, 5]
    events = bus.since(0)
    assert isinstance(events[0], Gap) and events[0].missed == 2
    assert [e.seq for e in events[1:]] == [3, 4, 5]
    assert bus.since(5) == []


async def test_slow_subscriber_is_bounded() -> None:
    """A subscriber that never reads holds at most its capacity; the drops are counted and shown as a gap."""
    bus = EventBus()
    sub = bus.subscribe(capacity=10)
    for i in range(1000):
        bus.publish(action(i))
    assert sub.dropped == 990 and bus.dropped == 990
    batch = await sub.next_batch(timeout=1)
    assert isinstance(batch[0], Gap) and batch[0].missed == 990
    assert [e.seq for e in batch[1:]] == list(range(991, 1001))
    sub.close()
    assert bus.subscribers == 0


async def test_subscriber_wakes_on_publish() -> None:
    """A waiting subscriber wakes as soon as an event is published."""
    bus = EventBus()
    sub = bus.subscribe(since=0)
    waiter = asyncio.ensure_future(sub.next_batch(timeout=5))
    await asyncio.sleep(0)
    bus.publish(action(1))
    batch = await asyncio.wait_for(waiter, 5)
    assert [e.seq for e in batch] == [1]


EVERY_KIND: list[Event] = [
    StateChanged(server="b1", old="up", new="down", reason="timeout", seq=7, ts=1.5),
    OperatorAction(action="drain", server=None, ok=False, detail="x\ny", seq=8, ts=2.0),
    Handshake(
        conn=3,
        client="127.0.0.1:1",
        listener="127.0.0.1:8000",
        server="b1",
        kind="websocket",
        method="GET",
        path='/ws?a="b"',
        host="h",
        status=101,
        reason="Switching Protocols",
        latency_ms=0.25,
        tls={"version": "TLSv1.3", "cipher": "X", "sni": None},
    ),
    Handshake(conn=4, client="?", listener="l", server="-", kind="raw", error="malformed request head"),
    ConnectionClosed(
        conn=3,
        client="127.0.0.1:1",
        server=None,
        kind="http",
        duration_s=0.5,
        bytes_in=10,
        bytes_out=20,
        closed_by="client",
        reason="client EOF",
    ),
    ConnectFailed(server="b2", client="127.0.0.1:2", reason="connection refused", attempt=2),
    Gap(missed=5, seq=9, ts=3.0),
]


@pytest.mark.parametrize("event", EVERY_KIND, ids=lambda e: e.type)
def test_to_dict_is_type_then_every_field_in_order(event: Event) -> None:
    """The generated encoder gives `type` first, then each field in declaration order, values as they are."""
    expected = {"type": event.type, **{f.name: getattr(event, f.name) for f in fields(event)}}
    assert list(event.to_dict()) == list(expected)
    assert orjson.dumps(event.to_dict()) == orjson.dumps(expected)
