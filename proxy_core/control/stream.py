"""`GET /v1/events/stream`: server-sent events, the buffered ones after `since` first, then live.

The live subscription is taken before the backlog is read, with no await in between, so nothing published
meanwhile is lost or sent twice. A reader that falls behind gets a gap event from its bounded queue and
continues; one that disconnects is unsubscribed within POLL_S.

Writes are coalesced: events go out at most once per `coalesce_ms` (default COALESCE_MS), all that queued up in
one write, instead of one wake-up and one write per event. Each write also wakes the reader, and with a dashboard
attached both the relaying loop and the load's core pay for it: measured on `bench/dashboard_cost.py`, one write
per event or per 100 ms raised the relayed p99 by 50-70 %, one per 250 ms by ~12 %, one per second not
measurably. An event after a quiet spell goes out at once, and a state change or an operator action (URGENT)
within URGENT_CHECK_S, taking what is held with it, so the dashboard's table still changes at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from proxy_core.control.body import check_query, query_int
from proxy_core.control.routes import engine_of, resume_point
from proxy_core.errors import BadRequest
from proxy_core.events import Event, Subscription

KEEPALIVE_S = 15.0  # a comment line this often keeps proxies and idle timers from closing the stream
POLL_S = 1.0  # how soon a reader that went away is noticed and unsubscribed
BACKLOG_CHUNK = 500  # events a held stream gathers before it writes, whatever the coalescing time
# Events per write (~0.4 ms of encoding; one write per event would be 10,000 syscalls). Each chunk's encoding is
# garbage at once, but the heap keeps its high-water mark: measured at 5,000 held WebSockets with a subscriber
# attached, 3.27-3.31 KiB RSS per connection with 500 events a write, 3.18 with 100.
WRITE_CHUNK = 100
COALESCE_MS = 1000  # at most one write per this long, unless URGENT (measured: see above and bench/README.md)
MAX_COALESCE_MS = 5000
URGENT = frozenset({"state", "operator"})  # what changes the dashboard's table: held at most URGENT_CHECK_S
URGENT_CHECK_S = 0.1

STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams")


def format_event(event: Event) -> bytes:
    """One SSE message: `id: <seq>` and the event as one line of JSON.

    orjson rather than json: measured 4.0 us against 10.2 us per handshake event, paid for every event and
    every subscriber (two events per proxied connection)."""
    return b"id: %d\ndata: %s\n\n" % (event.seq, orjson.dumps(event.to_dict()))


async def _hold(
    subscription: Subscription, batch: list[Event], until: float, loop: asyncio.AbstractEventLoop
) -> list[Event]:
    """Gather events until `until` (loop time), until an URGENT one is among them, or until a chunk's worth
    has gathered (busy streams are already one write per many events); checked every URGENT_CHECK_S, so a
    held stream costs a timer wake-up now and then, never a wake-up per event."""
    urgent = any(e.type in URGENT for e in batch)
    while not urgent and len(batch) < BACKLOG_CHUNK and (left := until - loop.time()) > 0:
        await asyncio.sleep(min(URGENT_CHECK_S, left))
        more = await subscription.next_batch(0)
        urgent = any(e.type in URGENT for e in more)
        batch += more
    return batch


async def _write_events(response: web.StreamResponse, events: list[Event]) -> None:
    """Write in chunks of WRITE_CHUNK, letting the relay run between them: encoding thousands of events
    at once held the loop for tens of ms (measured: relayed p99 6 -> 40 ms at 8,000 connections/s)."""
    for start in range(0, len(events), WRITE_CHUNK):
        if start:
            await asyncio.sleep(0)
        await response.write(b"".join(format_event(e) for e in events[start : start + WRITE_CHUNK]))


async def stream_events(request: web.Request) -> web.StreamResponse:
    check_query(request.query, ("since", "coalesce_ms"))
    since = query_int(request.query, "since", None)
    coalesce_ms = query_int(request.query, "coalesce_ms", COALESCE_MS) or 0
    if coalesce_ms > MAX_COALESCE_MS:
        raise BadRequest(
            f"query parameter 'coalesce_ms': expected an integer in 0..{MAX_COALESCE_MS}, got {coalesce_ms}"
        )
    coalesce_s = coalesce_ms / 1000
    engine = engine_of(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    if request.method == "HEAD":
        return response
    subscription = engine.bus.subscribe()
    backlog = [] if since is None else engine.bus.since(resume_point(engine, since))
    task = asyncio.current_task()
    streams = request.app.get(STREAMS)
    if task is not None and streams is not None:
        streams.add(task)
    loop = asyncio.get_running_loop()
    try:
        await response.prepare(request)
        await response.write(b": wsproxy event stream\n\n")
        await _write_events(response, backlog)
        last_write = loop.time()
        last_events = last_write if backlog else -KEEPALIVE_S  # when events were last written
        del backlog
        while True:
            batch = await subscription.next_batch(POLL_S)
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            if batch:
                if coalesce_s:
                    batch = await _hold(subscription, batch, last_events + coalesce_s, loop)
                await _write_events(response, batch)
                last_write = last_events = loop.time()
            elif loop.time() - last_write >= KEEPALIVE_S:
                await response.write(b": keepalive\n\n")
                last_write = loop.time()
    except ConnectionError:
        pass  # the reader went away mid-write
    finally:
        subscription.close()
        if task is not None and streams is not None:
            streams.discard(task)
    return response
