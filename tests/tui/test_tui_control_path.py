"""The engine `wsproxy-tui` starts is on the CLI's default socket: `wsproxy status` from another shell finds it.

These run the dashboard's real launch path (`tui.__main__.launch`, what `wsproxy-tui --demo` calls) and the real
`wsproxy` CLI as another process. Sync tests: launch() runs its own event loop, as under `wsproxy-tui`.
$TMPDIR points into tmp_path so the dashboard's fresh socket directories (and the CLI's search of them) see only
this test's engines, not those of tests running beside it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Markdown
from tui_support import ROOT, SIZE, unit, wait_until

from proxy_core.sources.wsproxy import WsproxySource
from tui.__main__ import build_parser, launch
from tui.app import DashboardApp
from tui.launcher import Launcher
from tui.source import LiveSource


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No inherited control settings; $TMPDIR and the working directory inside tmp_path."""
    for name in ("WSPROXY_CONTROL", "XDG_RUNTIME_DIR", "WSPROXY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads $TMPDIR again
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work


@pytest.fixture
def launchers() -> Iterator[list[Launcher]]:
    """Launchers started by the test; every process they started is stopped by PID afterwards."""
    started: list[Launcher] = []
    try:
        yield started
    finally:
        for launcher in started:
            launcher.stop_all()
            for child in launcher.children:  # shown by pytest only when the test failed
                print(f"--- {child.name} (pid {child.pid}, exit {child.proc.returncode})\n{child.tail()}")
            launcher.cleanup()


def start(launchers: list[Launcher], *argv: str) -> tuple[Launcher, str]:
    """`wsproxy-tui ARGV`'s launch step: the launcher and the notice the dashboard shows."""
    parser, engine_only = build_parser()
    launcher = Launcher()
    launchers.append(launcher)
    return launcher, launch(launcher, parser.parse_args(list(argv)), engine_only)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`wsproxy ARGS` as another process, with this environment (what a second shell would have)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "proxy_core", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=unit(20),
        check=False,
    )


def status_pid(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout)["engine"]["pid"])


def test_demo_engine_answers_the_cli_with_only_wsproxy_control_set(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launchers: list[Launcher]
) -> None:
    """With $WSPROXY_CONTROL set, the demo's engine listens there and `wsproxy status` elsewhere reads it."""
    socket = tmp_path / "run" / "control.sock"
    monkeypatch.setenv("WSPROXY_CONTROL", str(socket))
    launcher, notice = start(launchers, "--demo")
    assert (launcher.control_path, launcher.taken, notice) == (str(socket), None, "")
    assert launcher.engine is not None
    other_shell = tmp_path / "elsewhere"
    other_shell.mkdir()
    assert status_pid(cli("status", "--json", cwd=other_shell)) == launcher.engine.pid
    plain = cli("status", cwd=other_shell)
    assert plain.returncode == 0, plain.stderr
    assert all(f"pool {pool}" in plain.stdout for pool in ("chat", "feed")), plain.stdout  # the demo's two services


def test_demo_engine_answers_the_cli_with_nothing_set(
    isolated: Path, launchers: list[Launcher], capsys: pytest.CaptureFixture[str]
) -> None:
    """With no variable set, the demo's engine is on ./.wsproxy/control.sock, where a bare `wsproxy status` looks."""
    launcher, notice = start(launchers, "--demo")
    default = str(isolated / ".wsproxy" / "control.sock")
    assert (launcher.control_path, notice) == (default, "")
    out = capsys.readouterr().out
    assert f"engine control socket: {default}" in out and "try:" not in out  # the default needs no hint
    assert launcher.engine is not None
    assert status_pid(cli("status", "--json", cwd=isolated)) == launcher.engine.pid


def test_dashboard_shows_the_control_path_and_the_cli_command(isolated: Path, launchers: list[Launcher]) -> None:
    """The status bar and the help screen name the engine's socket and the `wsproxy status` that reads it."""
    launcher, _ = start(launchers, "--demo")
    path = launcher.control_path

    async def run() -> None:
        app = DashboardApp(LiveSource(WsproxySource(uds=path)), owns_engine=True)
        async with app.run_test(size=SIZE) as pilot:
            bar = app.main_screen.status_bar
            await wait_until(pilot, lambda: "● live" in str(bar.content), "first snapshot", timeout=15)
            assert f"control {path}" in str(bar.content)
            assert "from another shell: wsproxy status" in str(bar.content)
            await pilot.press("f1")
            await wait_until(pilot, lambda: bool(app.screen.query(Markdown)), "help screen")
            help_text = app.screen.query_one(Markdown).source
            assert f"Control socket `{path}`" in help_text and "`wsproxy status`" in help_text

    asyncio.run(run())


def test_second_dashboard_with_the_default_taken_starts_and_says_where(
    isolated: Path, launchers: list[Launcher], capsys: pytest.CaptureFixture[str]
) -> None:
    """A second launch finds the default answered, uses a fresh socket, prints and shows it; the CLI points there."""
    first, _ = start(launchers, "--demo")
    default = first.control_path
    backend = first.children[0].tail()  # demo backend b1's start line: "demo backend b1 on HOST:PORT"
    address = backend.split(" on ")[-1].split()[0]
    capsys.readouterr()
    second, notice = start(launchers, "--backend", f"x1={address}", "--check", "tcp")
    fresh = str(second.workdir / "control.sock")
    assert second.control_path == fresh
    assert notice == f"an engine already answers at {default}; this dashboard's engine is on {fresh}"
    out = capsys.readouterr().out
    assert f"try: wsproxy status --control {fresh}" in out
    assert first.engine is not None and second.engine is not None
    assert status_pid(cli("status", "--json", cwd=isolated)) == first.engine.pid
    assert status_pid(cli("status", "--json", "--control", fresh, cwd=isolated)) == second.engine.pid

    async def run() -> None:
        app = DashboardApp(LiveSource(WsproxySource(uds=fresh)), owns_engine=True, notice=notice)
        async with app.run_test(size=SIZE) as pilot:
            bar = app.main_screen.status_bar
            await wait_until(pilot, lambda: "● live" in str(bar.content), "first snapshot", timeout=15)
            assert f"wsproxy status --control {fresh}" in str(bar.content)
            assert [n.message for n in app._notifications] == [notice]

    asyncio.run(run())

    # The first engine gone, a bare `wsproxy status` misses the default but names the one live socket.
    first.stop_all()
    missed = cli("status", cwd=isolated)
    assert missed.returncode == 3
    assert f"one engine answers at {fresh}: try `wsproxy status --control {fresh}`" in missed.stderr, missed.stderr
