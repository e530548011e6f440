"""Rise/fall machine: nginx check-module counting, HAProxy provisional start, passive failures."""

from __future__ import annotations

import pytest

from proxy_core.health import CheckResult, HealthMachine, Transition

OK = CheckResult(ok=True, latency_ms=1.5)
REFUSED = CheckResult(ok=False, latency_ms=None, reason="connection refused")


def run(m: HealthMachine, script: str) -> list[tuple[str, str, str]]:
    """Feed 'o' (ok) / 'x' (refused) at t=1,2,...; return (from, to, reason) of transitions."""
    out: list[tuple[str, str, str]] = []
    for i, ch in enumerate(script, start=1):
        t = m.record(OK if ch == "o" else REFUSED, float(i))
        if t is not None:
            out.append((t.from_state, t.to_state, t.reason))
    return out


DOWN_5 = ("up", "down", "5 consecutive failures: connection refused")
UP_2 = ("down", "up", "2 consecutive successes")


@pytest.mark.parametrize(
    ("up", "script", "status", "rise_count", "fall_count", "transitions"),
    [
        # down at start (nginx tcp_proxy): rise=2 passes bring it up
        (False, "", "down", 0, 0, []),
        (False, "o", "down", 1, 0, []),
        (False, "oo", "up", 2, 0, [UP_2]),
        (False, "oxo", "down", 1, 0, []),  # a failure resets rise progress
        (False, "xxxxxxx", "down", 0, 7, []),  # already down: no transition
        # up at start (default_down=false): fall=5 failures in a row take it down
        (True, "xxxx", "up", 0, 4, []),
        (True, "xxxxx", "down", 0, 5, [DOWN_5]),
        (True, "xxxxoxxxx", "up", 0, 4, []),  # a success refills the fall budget
        (True, "xxxxxxx", "down", 0, 7, [DOWN_5]),  # counts keep growing after the change
        (True, "xxxxxoo", "up", 2, 0, [DOWN_5, UP_2]),
        (False, "oo" + "o" * 37, "up", 39, 0, [UP_2]),  # "Rise counts 39" on nginx's page
        (False, "ooxxxxxoo", "up", 2, 0, [UP_2, DOWN_5, UP_2]),
    ],
)
def test_rise_fall_sequences(
    up: bool,
    script: str,
    status: str,
    rise_count: int,
    fall_count: int,
    transitions: list[tuple[str, str, str]],
) -> None:
    """Consecutive-run counting: counts reset only by the opposite result, not by a change."""
    m = HealthMachine(2, 5, initially_up=up)
    assert run(m, script) == transitions
    assert (m.status, m.rise_count, m.fall_count) == (status, rise_count, fall_count)
    assert (m.checks, m.failures) == (len(script), script.count("x"))


@pytest.mark.parametrize("up", [True, False])
def test_flapping_never_changes_state(up: bool) -> None:
    """With rise 2 / fall 2, alternating ok/fail never completes a run: no transitions."""
    m = HealthMachine(2, 2, initially_up=up)
    assert run(m, "ox" * 20) == []
    assert m.up is up and not m.history


@pytest.mark.parametrize(
    ("script", "status", "transitions"),
    [
        ("x", "down", [("up", "down", "first check failed: connection refused")]),
        ("ox", "up", []),  # the first result passed: now a normal up server with fall=5
        ("oxxxxx", "down", [DOWN_5]),
        ("xoo", "up", [("up", "down", "first check failed: connection refused"), UP_2]),
    ],
)
def test_provisional_falls_at_first_failure(script: str, status: str, transitions: list[tuple[str, str, str]]) -> None:
    """HAProxy start: up, but the first failed check marks it down; any first result ends that."""
    m = HealthMachine(2, 5, initially_up=True, provisional=True)
    assert run(m, script) == transitions
    assert m.status == status and not m.provisional


def test_provisional_ignored_when_starting_down() -> None:
    """A server that starts down cannot be provisionally up."""
    m = HealthMachine(2, 5, initially_up=False, provisional=True)
    assert not m.provisional and run(m, "x") == []


def test_transition_records_time_and_history() -> None:
    """A transition carries its timestamp, updates last_change and lands in history."""
    m = HealthMachine(1, 1, initially_up=True, now=100.0)
    assert m.last_change == 100.0
    t = m.record(REFUSED, 105.0)
    assert t == Transition(105.0, "up", "down", "1 consecutive failure: connection refused")
    assert m.last_change == 105.0 and list(m.history) == [t]
    t2 = m.record(OK, 106.0)
    assert t2 == Transition(106.0, "down", "up", "1 consecutive success")


def test_history_is_bounded() -> None:
    """Only the newest `history` transitions are kept."""
    m = HealthMachine(1, 1, initially_up=True, history=3)
    transitions = run(m, "xo" * 5)
    assert len(transitions) == 10 and len(m.history) == 3
    assert [t.ts for t in m.history] == [8.0, 9.0, 10.0]


def test_failure_reason_and_latency_recorded() -> None:
    """The last result, latency, failure reason and check time are kept for the status page."""
    m = HealthMachine(2, 5, initially_up=True)
    m.record(CheckResult(True, 3.25), 10.0)
    assert (m.last_result, m.last_latency_ms, m.last_failure, m.last_check) == (
        "ok",
        3.25,
        None,
        10.0,
    )
    m.record(CheckResult(False, None, "timeout after 1000 ms"), 11.0)
    assert (m.last_result, m.last_latency_ms, m.last_failure) == (
        "fail",
        None,
        "timeout after 1000 ms",
    )
    m.record(CheckResult(True, 2.0), 12.0)
    assert (m.last_result, m.last_failure) == ("ok", "timeout after 1000 ms")


def test_failure_without_reason_gets_generic_text() -> None:
    """A failed result with no reason still explains itself."""
    m = HealthMachine(1, 1, initially_up=True)
    t = m.record(CheckResult(False, None), 1.0)
    assert t is not None and t.reason.endswith(": check failed")


@pytest.mark.parametrize(
    ("up", "script", "label"),
    [
        (True, "", ""),
        (True, "xx", "going down 2/5"),
        (True, "xxo", ""),
        (True, "xxxxx", ""),  # fully down
        (False, "o", "going up 1/2"),
        (False, "oo", ""),  # up now
        (False, "ox", ""),
    ],
)
def test_progress_label(up: bool, script: str, label: str) -> None:
    """The transitional label shows only while a run is heading for a change."""
    m = HealthMachine(2, 5, initially_up=up)
    run(m, script)
    assert m.progress_label() == label


@pytest.mark.parametrize(
    ("max_fails", "fails", "status", "transition"),
    [
        (3, 2, "up", None),
        (3, 3, "down", "3 consecutive connect failures from traffic: connection refused"),
        (1, 1, "down", "1 consecutive connect failure from traffic: connection refused"),
        (0, 10, "up", None),  # 0 = passive detection off
    ],
)
def test_passive_failures(max_fails: int, fails: int, status: str, transition: str | None) -> None:
    """max_fails consecutive connect failures from traffic mark an up server down."""
    m = HealthMachine(2, 5, initially_up=True)
    reasons = [m.record_passive_failure("connection refused", max_fails, float(i)) for i in range(fails)]
    assert [t.reason for t in reasons if t] == ([transition] if transition else [])
    assert m.status == status


@pytest.mark.parametrize("via", ["traffic", "check"])
def test_passive_run_reset_by_success(via: str) -> None:
    """A connection that gets through, or a passed check, restarts the passive run."""
    m = HealthMachine(2, 5, initially_up=True)
    m.record_passive_failure("refused", 3, 0.0)
    m.record_passive_failure("refused", 3, 0.0)
    if via == "traffic":
        m.record_passive_success()
    else:
        m.record(OK, 0.0)
    assert m.record_passive_failure("refused", 3, 0.0) is None
    assert m.record_passive_failure("refused", 3, 0.0) is None and m.up
    assert m.record_passive_failure("refused", 3, 0.0) is not None and not m.up


def test_passive_down_needs_full_rise_to_return() -> None:
    """After a passive mark-down the rise run starts from zero, even with a long ok streak."""
    m = HealthMachine(2, 5, initially_up=True)
    run(m, "oooo")
    assert m.record_passive_failure("refused", 1, 5.0) is not None
    assert m.rise_count == 0 and m.passive_fails == 0
    assert m.record(OK, 6.0) is None
    assert m.record(OK, 7.0) is not None and m.up


def test_force_sets_state_once() -> None:
    """force() transitions only when the state differs, with the caller's reason."""
    m = HealthMachine(2, 5, initially_up=False)
    assert m.force(True, "checks off", 3.0) == Transition(3.0, "down", "up", "checks off")
    assert m.force(True, "checks off", 4.0) is None
    assert m.up and m.last_change == 3.0 and len(m.history) == 1


def test_set_thresholds_applies_at_next_result() -> None:
    """New rise/fall keep the counters and decide at the next result; bad values raise."""
    m = HealthMachine(2, 5, initially_up=True)
    run(m, "xx")
    m.set_thresholds(2, 3)
    assert m.up and m.progress_label() == "going down 2/3"
    assert run(m, "x") == [("up", "down", "3 consecutive failures: connection refused")]
    with pytest.raises(ValueError):
        m.set_thresholds(0, 3)
    assert (m.rise, m.fall) == (2, 3)


@pytest.mark.parametrize(("rise", "fall", "history"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_bad_construction_raises(rise: int, fall: int, history: int) -> None:
    """Zero thresholds or history are rejected up front."""
    with pytest.raises(ValueError):
        HealthMachine(rise, fall, initially_up=True, history=history)


def test_to_dict_fields() -> None:
    """to_dict has exactly the status-page fields with current values."""
    m = HealthMachine(2, 5, initially_up=False, now=1.0)
    run(m, "xo")
    assert m.to_dict() == {
        "status": "down",
        "rise_count": 1,
        "fall_count": 0,
        "rise": 2,
        "fall": 5,
        "last_result": "ok",
        "last_latency_ms": 1.5,
        "last_failure": "connection refused",
        "last_check": 2.0,
        "last_change": 1.0,
        "checks": 2,
        "failures": 1,
    }
