"""Helpers for the dashboard tests: the scripted source, a ready-made app, bounded waits."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the repo is not installed in the venv; make `tui` importable
    sys.path.insert(0, str(ROOT))

from tui.app import DashboardApp  # noqa: E402
from tui.source import ScriptedSource  # noqa: E402

SCRIPT = Path(__file__).parent / "data" / "synthetic.jsonl"
# The scripted minute ends at t=60: b4 down, b3 one failed check, 45 open connections.
SCRIPT_END = 60.0
SIZE = (140, 42)


def make_app(read_only: bool = False, owns_engine: bool = False) -> DashboardApp:
    """A dashboard over the scripted source at the end of the script (clock-free)."""
    source = ScriptedSource.from_file(SCRIPT, until=SCRIPT_END)
    return DashboardApp(
        source,
        read_only=read_only,
        owns_engine=owns_engine,
        attach_hint="wsproxy-tui --attach /tmp/wsproxy-test/control.sock",
    )


# Every wait in the live tests is bounded; scale on slow machines like the rest of the suite.
TIMEOUT_SCALE = float(os.environ.get("WSPROXY_TEST_TIMEOUT_SCALE", "1"))


def unit(seconds: float) -> float:
    """A timeout, scaled for slow machines."""
    return seconds * TIMEOUT_SCALE


async def wait_until(pilot: Pilot[Any], predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Let the app run until `predicate()` holds; fail naming `what` after `timeout` (scaled)."""
    deadline = time.monotonic() + unit(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {unit(timeout):.1f}s waiting for {what}")
        await pilot.pause(0.05)
