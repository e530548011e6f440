"""Regenerate screenshots/*.svg from a real demo run (two pools: backends, engine, load) driven by Pilot.

main (both pools grouped), routes (`R`), add-form (the pool field), drain (chat/n2), detail (chat/n1), haproxy.

Run: .venv/bin/python scripts/screenshots.py [--out screenshots] [--warmup 8]
The fleet view (fleet.svg) needs a Redis: WSPROXY_SCREENSHOTS=1 .venv/bin/pytest tests/cluster/test_fleet_dashboard.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy_core.sources.haproxy import HaproxySource  # noqa: E402
from proxy_core.sources.wsproxy import WsproxySource  # noqa: E402
from tui.app import DashboardApp  # noqa: E402
from tui.demo import start_backends, start_demo  # noqa: E402
from tui.launcher import Launcher  # noqa: E402
from tui.source import LiveSource  # noqa: E402

SIZE = (140, 42)
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HAPROXY_CFG = """global
    stats socket {sock} level admin
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend fe_ws
    bind 127.0.0.1:{port}
    default_backend be_ws
backend be_ws
    balance roundrobin
{servers}
"""


async def shoot(out: Path, warmup: float) -> None:
    """Start the two-pool demo, drive the dashboard through its views, save one SVG per view."""
    launcher = Launcher()
    try:
        await start_demo(launcher)
        source = LiveSource(WsproxySource(uds=launcher.control_path))
        app = DashboardApp(
            source,
            owns_engine=True,
            attach_hint=f"wsproxy-tui --attach {launcher.control_path}",
        )
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(warmup)
            app.clear_notifications()
            await pilot.pause(0.5)
            app.save_screenshot("main.svg", str(out))  # both pools, grouped under their headers

            await pilot.press("R")  # the routes: what each matched, and the default pool
            await pilot.pause(3.0)  # two snapshots a second or more apart: the rates column has figures
            app.save_screenshot("routes.svg", str(out))
            await pilot.press("escape")

            app.main_screen.backends.select("feed/n2")  # the form proposes the selected server's pool
            await pilot.press("a")
            await pilot.press(*"n3")
            await pilot.press("tab", *"127.0.0.1:70000")
            await pilot.pause(0.3)
            app.save_screenshot("add-form.svg", str(out))
            await pilot.press("escape")

            app.main_screen.backends.select("chat/n2")
            await pilot.press("d")
            await pilot.pause(0.5)
            await pilot.press("enter")  # the confirmation with its impact preview
            await pilot.pause(6.0)
            app.clear_notifications()
            await pilot.pause(0.5)
            app.save_screenshot("drain.svg", str(out))

            app.main_screen.backends.select("chat/n1")
            await pilot.press("enter")
            await pilot.pause(1.5)
            app.save_screenshot("detail.svg", str(out))
    finally:
        launcher.stop_all()
        launcher.cleanup()


async def shoot_haproxy(out: Path, warmup: float) -> None:
    """The same dashboard attached to an HAProxy in front of three demo backends, one of them stopped."""
    launcher = Launcher()
    try:
        addresses = await start_backends(launcher, ["s1", "s2", "s3"])
        sock = launcher.workdir / "haproxy.sock"
        servers = "\n".join(f"    server {n} {a} check inter 500 rise 2 fall 3" for n, a in addresses.items())
        cfg = launcher.workdir / "haproxy.cfg"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        cfg.write_text(HAPROXY_CFG.format(sock=sock, servers=servers, port=port))
        launcher.spawn("haproxy", [HAPROXY, "-db", "-f", str(cfg)])
        launcher.spawn("load", [sys.executable, "-m", "tui.demo_load", "--target", f"127.0.0.1:{port}"])
        source = HaproxySource(str(sock))
        for _ in range(100):
            with contextlib.suppress(Exception):
                await source.status()
                break
            await asyncio.sleep(0.1)
        await source.set_weight("s1", 3)
        app = DashboardApp(LiveSource(source), attach_hint=f"wsproxy-tui --haproxy {sock}")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(warmup / 2)
            launcher.stop(next(c for c in launcher.children if c.name == "backend-s3"))
            app.main_screen.backends.select("be_ws/s2")
            await pilot.press("d")
            await pilot.pause(0.5)
            await pilot.press("enter")  # HAProxy has no impact preview: the confirmation says so
            await pilot.pause(warmup / 2)
            app.clear_notifications()
            await pilot.pause(0.5)
            app.save_screenshot("haproxy.svg", str(out))
    finally:
        launcher.stop_all()
        launcher.cleanup()


def main() -> None:
    """Parse flags and take the screenshots."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "screenshots"))
    parser.add_argument("--warmup", type=float, default=8.0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot(out, args.warmup))
    if Path(HAPROXY).exists():
        asyncio.run(shoot_haproxy(out, args.warmup))
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.svg')))} to {out}")


if __name__ == "__main__":
    main()
