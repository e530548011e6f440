"""The rise/fall machine: one check result in, a state transition (or none) out.

Counting follows the nginx check module (proxy-semantics.md §1 "Counting rule") and is
equivalent to HAProxy's single health counter (§2): counters are consecutive runs, reset only
by the opposite result, never by a state change, so they keep growing ("Rise counts 39").
Pure: time comes in as `now`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

Status = Literal["up", "down"]

# Transitions kept per server for the detail view; older ones fall off.
DEFAULT_HISTORY = 50


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One probe's outcome; `reason` says why it failed ("connection refused", "HTTP 503")."""

    ok: bool
    latency_ms: float | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Transition:
    """A change between "up" and "down", with the reason shown in events and history."""

    ts: float
    from_state: Status
    to_state: Status
    reason: str


def _plural(n: int, word: str, plural: str) -> str:
    return f"{n} consecutive {word if n == 1 else plural}"


class HealthMachine:
    """Health state of one server; the checker feeds results, the registry reads `up`."""

    __slots__ = (
        "checks",
        "failures",
        "fall",
        "fall_count",
        "history",
        "last_change",
        "last_check",
        "last_failure",
        "last_latency_ms",
        "last_result",
        "passive_fails",
        "provisional",
        "rise",
        "rise_count",
        "up",
    )

    def __init__(
        self,
        rise: int,
        fall: int,
        *,
        initially_up: bool,
        provisional: bool = False,
        now: float = 0.0,
        history: int = DEFAULT_HISTORY,
    ) -> None:
        """`provisional` (only meaningful when up) = HAProxy's configured server at start:
        up, "but will fall down at first failure"."""
        _check_thresholds(rise, fall)
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.rise = rise
        self.fall = fall
        self.up = initially_up
        self.provisional = provisional and initially_up
        self.rise_count = 0
        self.fall_count = 0
        self.last_result: Literal["ok", "fail"] | None = None
        self.last_latency_ms: float | None = None
        self.last_failure: str | None = None
        self.last_check: float | None = None
        self.last_change = now
        self.checks = 0
        self.failures = 0
        # Consecutive connect failures seen on real traffic (passive detection).
        self.passive_fails = 0
        self.history: deque[Transition] = deque(maxlen=history)

    @property
    def status(self) -> Status:
        return "up" if self.up else "down"

    def record(self, result: CheckResult, now: float) -> Transition | None:
        """Apply one active check result; return the transition it caused, if any."""
        provisional = self.provisional
        self.provisional = False
        self.checks += 1
        self.last_check = now
        self.last_latency_ms = result.latency_ms
        if result.ok:
            self.last_result = "ok"
            self.rise_count += 1
            self.fall_count = 0
            self.passive_fails = 0  # HAProxy: a passed check resets consecutive_errors
            if not self.up and self.rise_count >= self.rise:
                reason = _plural(self.rise_count, "success", "successes")
                return self._change(True, reason, now)
            return None
        reason = result.reason or "check failed"
        self.last_result = "fail"
        self.last_failure = reason
        self.failures += 1
        self.rise_count = 0
        self.fall_count += 1
        if not self.up:
            return None
        if provisional:
            return self._change(False, f"first check failed: {reason}", now)
        if self.fall_count >= self.fall:
            return self._change(False, f"{_plural(self.fall_count, 'failure', 'failures')}: {reason}", now)
        return None

    def record_passive_failure(self, reason: str, max_fails: int, now: float) -> Transition | None:
        """Count a connect failure from real traffic; `max_fails` in a row while up marks it
        down (HAProxy `observe layer4` + `on-error mark-down`). `max_fails` 0 turns this off."""
        if max_fails <= 0:
            return None
        self.passive_fails += 1
        if not self.up or self.passive_fails < max_fails:
            return None
        run = _plural(self.passive_fails, "connect failure", "connect failures")
        return self._change(False, f"{run} from traffic: {reason}", now)

    def record_passive_success(self) -> None:
        """A connection from real traffic got through: the passive failure run starts over."""
        self.passive_fails = 0

    def force(self, up: bool, reason: str, now: float) -> Transition | None:
        """Set the state directly (checks off, type "none"); None if already there."""
        self.provisional = False
        if up == self.up:
            return None
        return self._change(up, reason, now)

    def set_thresholds(self, rise: int, fall: int) -> None:
        """Change rise/fall at runtime; counters are kept and judged at the next result."""
        _check_thresholds(rise, fall)
        self.rise = rise
        self.fall = fall

    def progress_label(self) -> str:
        """HAProxy-style transitional label, counting results so far ("going down 2/5"); "" when
        settled. HAProxy counts what is left instead: its "UP 2/3" is our "going down 1/3"."""
        if self.up and self.fall_count:
            return f"going down {min(self.fall_count, self.fall)}/{self.fall}"
        if not self.up and self.rise_count:
            return f"going up {min(self.rise_count, self.rise)}/{self.rise}"
        return ""

    def to_dict(self) -> dict[str, object]:
        """The fields the control API and status page show."""
        return {
            "status": self.status,
            "rise_count": self.rise_count,
            "fall_count": self.fall_count,
            "rise": self.rise,
            "fall": self.fall,
            "last_result": self.last_result,
            "last_latency_ms": self.last_latency_ms,
            "last_failure": self.last_failure,
            "last_check": self.last_check,
            "last_change": self.last_change,
            "checks": self.checks,
            "failures": self.failures,
        }

    def _change(self, up: bool, reason: str, now: float) -> Transition:
        """Flip state and log it. A transition not driven by the counters (passive, forced)
        clears the counter that contradicts the new state, as HAProxy sets health to 0 or
        full, so a passively downed server still needs `rise` passes to come back."""
        if up:
            self.fall_count = 0
        else:
            self.rise_count = 0
        self.passive_fails = 0
        self.provisional = False
        old: Status = "up" if self.up else "down"
        self.up = up
        self.last_change = now
        t = Transition(now, old, "up" if up else "down", reason)
        self.history.append(t)
        return t


def _check_thresholds(rise: int, fall: int) -> None:
    """Illegal thresholds raise before anything changes (0 would never or always flip)."""
    if rise < 1 or fall < 1:
        raise ValueError(f"rise and fall must be >= 1, got rise={rise} fall={fall}")
