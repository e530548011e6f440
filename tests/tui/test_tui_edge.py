"""The edge line: TLS listeners with certificate days coloured, failed handshakes/s, PROXY counters, top refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_support import SIZE, make_app

from tui.app import DashboardApp
from tui.widgets.edge_bar import days_style, failure_rate, limits_part, listener_part

TLS = {"address": "0.0.0.0:443", "tls": True, "subject": "CN=ws.example", "days_left": 10.0, "handshake_failures": 5}


@pytest.mark.parametrize(
    ("days", "style"), [(90.0, "$success"), (14.0, "$success"), (13.9, "$warning"), (2.9, "$error")]
)
def test_days_colour(days: float, style: str) -> None:
    """Yellow under 14 days to expiry, red under 3."""
    assert days_style(days) == style


def test_failure_rate_from_two_snapshots() -> None:
    """Failed handshakes per second between snapshots; 0 on the first and when a counter restarts."""
    assert failure_rate(None, 10.0, 5) == 0.0
    assert failure_rate((10.0, 5), 12.0, 9) == 2.0
    assert failure_rate((10.0, 9), 11.0, 0) == 0.0


def test_parts_text() -> None:
    """A TLS listener shows subject, days and failures/s; a PROXY one its counters; limits the top refused."""
    assert listener_part(TLS, 0.5).plain == "0.0.0.0:443 TLS CN=ws.example 10 d · 0.5 failed/s"  # type: ignore[union-attr]
    proxy = {"address": "0.0.0.0:8000", "proxy_protocol": True, "bad_headers": 3, "refused_sources": 1}
    assert listener_part(proxy, 0.0).plain == "0.0.0.0:8000 PROXY · bad headers 3 · refused sources 1"  # type: ignore[union-attr]
    assert listener_part({"address": "127.0.0.1:8000", "tls": False}, 0.0) is None
    limits = {
        "refused": 12,
        "top_refused": [{"client": "127.0.0.2", "refused": 10}, {"client": "127.0.0.3", "refused": 2}],
    }
    assert limits_part(limits).plain == "refused 12 (top: 127.0.0.2 10, 127.0.0.3 2)"  # type: ignore[union-attr]
    assert limits_part({"refused": 0}) is None


def test_edge_line_hidden_without_edge_features() -> None:
    """The scripted plain engine shows no edge line (the other snapshots stay as they were)."""

    async def check() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert not app.main_screen.edge_bar.display

    import asyncio

    asyncio.run(check())


def test_edge_line_snapshot(snap_compare: Any) -> None:
    """Two TLS listeners (10 and 2 days left: yellow, red), a PROXY listener and the top refused clients."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, DashboardApp)
        await pilot.pause()
        status = copy.deepcopy(app.main_screen.status_bar.status)
        status["listeners"] = [
            dict(TLS),
            {**TLS, "address": "0.0.0.0:8443", "subject": "CN=old.example", "days_left": 2.0},
            {"address": "10.0.0.5:8000", "proxy_protocol": True, "bad_headers": 3, "refused_sources": 1},
        ]
        status["limits"] = {"refused": 12, "top_refused": [{"client": "127.0.0.2", "refused": 12}]}
        app.main_screen.apply_snapshot(status, 1.0)
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)
