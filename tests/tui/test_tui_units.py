"""Pure helpers of the dashboard and the control client: formatting, shares, SSE, flag pass-through."""

from __future__ import annotations

import pytest
from tui_support import ROOT  # noqa: F401  (puts the repo on sys.path)

from proxy_core.client import SSEParser, parse_control_target
from tui import format as fmt
from tui.__main__ import build_parser, engine_argv


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "-"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (20 * 1024**2, "20 MiB")],
)
def test_size(value: float | None, expected: str) -> None:
    """Sizes use binary units with one decimal below ten."""
    assert fmt.size(value) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.42, "0.4s"), (12, "12s"), (185, "3m05s"), (7800, "2h10m"), (90000, "1d01h")],
)
def test_duration(seconds: float, expected: str) -> None:
    """Durations keep two units at most."""
    assert fmt.duration(seconds) == expected


def _server(name: str, weight: int, admin: str = "active", health: str = "up") -> dict[str, object]:
    return {"name": name, "weight": weight, "admin": admin, "health": {"status": health}}


def test_share_with_weight_counts_only_eligible_servers() -> None:
    """The preview divides by the weights of eligible servers only (draining/down ones get 0)."""
    pool = [_server("a", 1), _server("b", 2), _server("c", 5, admin="draining"), _server("d", 5, health="down")]
    assert fmt.share_with_weight(pool, "a", 3) == pytest.approx(0.6)
    assert fmt.share_with_weight(pool, "a", 0) == 0.0
    assert fmt.share_with_weight(pool, "c", 3) == 0.0


@pytest.mark.parametrize(
    ("health", "admin", "active", "expected"),
    [
        ({"status": "up", "fall_count": 2, "fall": 5}, "active", 0, "going down 2/5"),
        ({"status": "down", "rise_count": 1, "rise": 2}, "active", 0, "going up 1/2"),
        ({"status": "down", "rise_count": 0}, "active", 0, "down"),
        ({"status": "up"}, "disabled", 0, "disabled"),
        ({"status": "up"}, "draining", 0, "drained, safe to restart"),
    ],
)
def test_state_label(health: dict[str, object], admin: str, active: int, expected: str) -> None:
    """Going up/down show the counter against the threshold; a drained server says it is safe."""
    server = {"health": health, "admin": admin, "active": active, "drain": {"started": 0.0}}
    assert fmt.state_label(server, now=10.0) == expected


def test_clean_escapes_control_characters() -> None:
    """Client-sent text cannot smuggle terminal escapes into the log."""
    assert fmt.clean("/ws\x1b[31m\n") == "/ws\\x1b[31m\\n"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/run/wsproxy/control.sock", ("/run/wsproxy/control.sock", None)),
        ("control.sock", ("control.sock", None)),
        ("127.0.0.1:9100", (None, "http://127.0.0.1:9100")),
        ("[::1]:9100", (None, "http://[::1]:9100")),
        ("http://h:1/", (None, "http://h:1")),
    ],
)
def test_parse_control_target(target: str, expected: tuple[str | None, str | None]) -> None:
    """HOST:PORT means TCP; anything else is a socket path."""
    assert parse_control_target(target) == expected


def test_sse_parser_reads_id_and_data_and_skips_comments() -> None:
    """SSE messages become event dicts; keepalive comments and blank noise are ignored."""
    parser = SSEParser()
    lines = [": keepalive", "", "id: 7", 'data: {"type": "state",', 'data: "server": "b1"}', ""]
    events = [e for e in (parser.feed(line) for line in lines) if e is not None]
    assert events == [{"type": "state", "server": "b1", "seq": 7}]


def test_engine_flags_pass_through() -> None:
    """wsproxy-tui hands `serve` flags to the child engine unchanged; its own flags stay behind."""
    parser, engine_only = build_parser()
    args = parser.parse_args(
        [
            "--read-only",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "a=127.0.0.1:1",
            "--backend",
            "127.0.0.1:2,weight=3",
            "--check",
            "http:/health",
            "--rise",
            "3",
        ]
    )
    argv = engine_argv(args, engine_only)
    assert argv == [
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "a=127.0.0.1:1",
        "--backend",
        "127.0.0.1:2,weight=3",
        "--check",
        "http:/health",
        "--rise",
        "3",
    ]
