"""Per-client admission limits and engine-wide accept pacing: pure bookkeeping, time passed in as `now`.

A client is its IP address (the PROXY header's when the listener takes one). Open connections are
counted per client; new ones are paced by a token bucket per client; refusals are counted per client
so the dashboard can show who is refused most. Every table is bounded, so a flood of distinct
addresses cannot make the engine grow without limit.
"""

from __future__ import annotations

import heapq

# Token buckets kept at most; past it the ones that have refilled (idle clients) are dropped first.
MAX_BUCKETS = 100_000
# Refusal counters kept at most; past it the smaller half is forgotten (the top ones are what is shown).
MAX_REFUSED_CLIENTS = 10_000
TOO_MANY_CONNECTIONS = "too many connections"
TOO_FAST = "too many new connections per second"
# max_accept_rate lets this much of a second's worth through at once, so a reconnect storm is paced
# in steps of 1/10 s instead of one burst.
ACCEPT_BURST_S = 0.1


class ClientLimits:
    """`max_conns_per_client` and `new_conns_per_client_per_s` with a burst."""

    def __init__(self, max_conns: int = 0, rate: float = 0.0, burst: float = 1.0) -> None:
        self.max_conns = max_conns
        self.rate = rate
        self.burst = max(1.0, burst)
        self.open: dict[str, int] = {}
        self.buckets: dict[str, tuple[float, float]] = {}  # ip -> (tokens, when)
        self.refused: dict[str, int] = {}
        self.refused_total = 0
        self.refused_by_reason: dict[str, int] = {TOO_MANY_CONNECTIONS: 0, TOO_FAST: 0}

    def admit(self, ip: str, now: float) -> str | None:
        """None and the client counted as open, or the reason it is refused (and the refusal counted)."""
        if self.max_conns and self.open.get(ip, 0) >= self.max_conns:
            return self._refuse(ip, TOO_MANY_CONNECTIONS)
        if self.rate:
            tokens, when = self.buckets.get(ip, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.rate)
            if tokens < 1.0:
                self.buckets[ip] = (tokens, now)
                return self._refuse(ip, TOO_FAST)
            self.buckets[ip] = (tokens - 1.0, now)
            if len(self.buckets) > MAX_BUCKETS:
                self._prune_buckets(now)
        if self.max_conns:
            self.open[ip] = self.open.get(ip, 0) + 1
        return None

    def release(self, ip: str) -> None:
        """An admitted connection of this client closed."""
        if not self.max_conns:
            return
        count = self.open.get(ip, 0) - 1
        if count > 0:
            self.open[ip] = count
        else:
            self.open.pop(ip, None)

    def _refuse(self, ip: str, reason: str) -> str:
        self.refused_total += 1
        self.refused_by_reason[reason] += 1
        self.refused[ip] = self.refused.get(ip, 0) + 1
        if len(self.refused) > MAX_REFUSED_CLIENTS:
            keep = heapq.nlargest(MAX_REFUSED_CLIENTS // 2, self.refused.items(), key=lambda item: item[1])
            self.refused = dict(keep)
        return reason

    def _prune_buckets(self, now: float) -> None:
        full_after = self.burst / self.rate
        self.buckets = {ip: b for ip, b in self.buckets.items() if now - b[1] < full_after}
        if len(self.buckets) > MAX_BUCKETS:  # all busy: forget the oldest half (they refill meanwhile anyway)
            ordered = sorted(self.buckets.items(), key=lambda item: item[1][1])
            self.buckets = dict(ordered[len(ordered) // 2 :])

    def top_refused(self, count: int) -> list[tuple[str, int]]:
        """The clients refused most, most first."""
        return heapq.nlargest(count, self.refused.items(), key=lambda item: item[1])


class AcceptPacer:
    """`max_accept_rate`: a token bucket over the whole engine; `take` says how long to stop accepting."""

    def __init__(self, rate: float, burst_s: float = ACCEPT_BURST_S) -> None:
        self.rate = rate
        self.burst = max(1.0, rate * burst_s)
        self.tokens = self.burst
        self.when: float | None = None
        self.pauses = 0

    def take(self, now: float) -> float:
        """Count one accepted connection; 0 while within the rate, else the seconds until the next may come.

        Connections the kernel handed over in the same batch are already accepted: the debt they leave
        (negative tokens) lengthens the pause rather than refusing them."""
        if self.when is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.when) * self.rate)
        self.when = now
        self.tokens -= 1.0
        if self.tokens >= 1.0:
            return 0.0
        self.pauses += 1
        return (1.0 - self.tokens) / self.rate
