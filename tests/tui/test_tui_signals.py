"""`wsproxy-tui` as a real process on a pseudo-terminal, told to go by SIGTERM or a hang-up (SIGHUP).

Nobody can answer the quit dialog then: the demo's processes serve nobody without the dashboard and must stop
with it; an engine started from flags keeps its clients connected and is left running, with the way back printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy_core.client import ControlClient

ROOT = Path(__file__).resolve().parents[2]
READY_S = 45.0  # the demo starts six backends (two pools), the engine and the load before drawing
EXIT_S = 30.0  # the demo engine drains (it has no long-lived clients: well under its 10 s grace)


class Dashboard:
    """wsproxy-tui on a pty; its output is read continually so it never blocks on a full terminal."""

    def __init__(self, args: list[str], tmp: Path) -> None:
        master, slave = pty.openpty()
        env = dict(os.environ, TERM="xterm-256color", COLUMNS="140", LINES="40", PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tui", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=tmp,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.output = b""
        self.children: list[int] = []

    def read(self, until: bytes | None, timeout: float) -> None:
        """Collect output until `until` appears, the process exits, or `timeout` passes (then fail)."""
        deadline = time.monotonic() + timeout
        while until is None or until not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                if until is None:
                    return
                raise AssertionError(f"no {until!r} on the dashboard within {timeout:.0f}s: {self.text()[-500:]}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the child closed its end: it has exited
                    return
            elif self.proc.poll() is not None and until is not None:
                raise AssertionError(f"dashboard exited ({self.proc.returncode}): {self.text()[-500:]}")

    def text(self) -> str:
        return self.output.decode("utf-8", errors="replace")

    def child_pids(self) -> list[int]:
        """The processes the dashboard started (its direct children)."""
        pids: list[int] = []
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            pids += [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{task}/children").read_text().split()]
        return pids

    def wait_exit(self, timeout: float) -> int:
        """Wait for the dashboard to exit, still reading its output; its exit status."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"dashboard still running {timeout:.0f}s after the signal: {self.text()[-500:]}")
            self.read(None, 0.2)
        self.read(None, 0.2)
        return self.proc.returncode

    def close(self) -> None:
        """Stop the dashboard and everything it started, by PID, whatever the test's outcome (also when it failed
        before the test read the children: they are read now, while the dashboard still runs)."""
        children = self.children
        if not children and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                children = self.child_pids()
        pids = [*children, self.proc.pid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)  # its children, now orphans, are reaped by init
        os.close(self.master)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, already exited and waiting to be reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Those of `pids` still running after `timeout`: waits on each process's pidfd (readable once it exits)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
    return [p for p in pids if alive(p)]


@pytest.fixture
def dashboards(tmp_path: Path) -> Iterator[list[Dashboard]]:
    started: list[Dashboard] = []
    yield started
    for dashboard in started:
        dashboard.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_demo_stops_all_its_processes_on_sigterm_or_hangup(
    sig: signal.Signals, dashboards: list[Dashboard], tmp_path: Path
) -> None:
    """The demo's backends, engine and load leave with the dashboard instead of running on unseen."""
    dashboard = Dashboard(["--demo"], tmp_path)
    dashboards.append(dashboard)
    dashboard.read(b"Backends 6/6", READY_S)
    dashboard.children = dashboard.child_pids()
    assert len(dashboard.children) == 8, dashboard.children  # chat's 4 and feed's 2 backends, the engine, the load

    os.kill(dashboard.proc.pid, sig)

    assert dashboard.wait_exit(EXIT_S) == 0
    assert wait_gone(dashboard.children, EXIT_S) == [], "demo processes left running"


def test_started_engine_is_left_serving_on_hangup(dashboards: list[Dashboard], tmp_path: Path) -> None:
    """An engine started from flags keeps serving after a hang-up; the dashboard says how to re-attach."""
    dashboard = Dashboard(
        ["--listen", "127.0.0.1:0", "--backend", "b1=127.0.0.1:9", "--check", "none", "--state-file", "st.json"],
        tmp_path,
    )
    dashboards.append(dashboard)
    dashboard.read(b"Backends 1/1", READY_S)
    dashboard.children = dashboard.child_pids()
    assert len(dashboard.children) == 1, dashboard.children
    engine = dashboard.children[0]
    argv = Path(f"/proc/{engine}/cmdline").read_bytes().split(b"\0")
    control = argv[argv.index(b"--control") + 1].decode()

    os.kill(dashboard.proc.pid, signal.SIGHUP)

    assert dashboard.wait_exit(EXIT_S) == 0
    assert "re-attach with: wsproxy-tui --attach" in dashboard.text()
    assert alive(engine)

    async def status() -> dict[str, Any]:
        async with ControlClient(uds=control, timeout=5.0) as client:
            return await client.status()

    assert asyncio.run(status())["engine"]["pid"] == engine
