"""The event bus: numbered events, a bounded ring, and subscribers that drop the oldest instead of growing."""

from __future__ import annotations

import asyncio

from proxy_core.events import EventBus, Gap, OperatorAction


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
