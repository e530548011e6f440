"""The dashboard attached to one instance of a real fleet shows the fleet: totals, instances, a gone one."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from proxy_core.sources.wsproxy import WsproxySource
from tests.cluster.conftest import Fleet
from tests.conftest import unit
from tui.app import DashboardApp
from tui.source import LiveSource

SIZE = (140, 42)
SCREENSHOT = Path(__file__).resolve().parents[2] / "screenshots" / "fleet.svg"


async def _until(pilot: Any, predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + unit(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)


def _fleet_active(text: str) -> int:
    """The FLEET ACTIVE column summed over the server rows."""
    return sum(int(line.split()[2]) for line in text.splitlines() if line.startswith(("b1 ", "b2 ")))


async def test_dashboard_shows_the_fleet_panel_with_instances_and_a_gone_one(
    start_fleet: Fleet, echo_backends: Any
) -> None:
    """Attached to n1, the fleet panel shows per-server totals with a column per instance, every instance, and
    n3 GONE with a warning once it is killed."""
    b1, b2 = await echo_backends(2)
    engines = await start_fleet([b1, b2])
    clients = [await connect(f"ws://127.0.0.1:{e.port}/") for e in engines]
    app = DashboardApp(LiveSource(WsproxySource(uds=engines[0].control)))
    try:
        async with app.run_test(size=SIZE) as pilot:
            panel = app.main_screen.fleet_panel
            await _until(pilot, lambda: "@n3" in panel.text and panel.display, 10.0, "the fleet panel")
            await _until(pilot, lambda: _fleet_active(panel.text) == 3, 5.0, "the three connections in the totals")
            if os.environ.get("WSPROXY_SCREENSHOTS"):  # refresh screenshots/fleet.svg on demand, not in CI
                app.save_screenshot(SCREENSHOT.name, str(SCREENSHOT.parent))
            engines[2].proc.kill()
            await _until(pilot, lambda: "GONE" in panel.text and "n3 is gone" in panel.text, 8.0, "n3 gone")
    finally:
        for ws in clients:
            await ws.close()
