"""Load generators, run on the load core: wrk for HTTP, bench/wsclient.py for WebSocket.

Each run measures a window: the proxy process tree's CPU seconds (utime+stime from /proc), wall time and how busy
the load core was, from just before the load starts to just after it ends.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure import CoreTimes, tree_cpu_seconds, tree_rss_kib, tree_wait_seconds
from procs import Launcher, LineReader

LOAD_CPU = 1
PROXY_CPU = 0
WSCLIENT = str(Path(__file__).with_name("wsclient.py"))
SLACK = 60.0  # seconds a child may take beyond its nominal duration before we give up on it.
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass(slots=True)
class Window:
    """What the proxy spent during one measured window."""

    cpu_s: float | None  # proxy tree CPU seconds; None for the direct column
    wait_s: float | None  # proxy tree run-queue wait: runnable, but the core was busy with something else
    wall_s: float
    load_busy: float  # fraction of the window the load core was busy
    proxy_busy: float  # fraction of the window the proxy core was busy (all processes on it)


class Meter:
    """Open with start(), close with stop(): proxy CPU and run-queue wait, wall time, both cores' busy fractions."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._cpu0 = self._wait0 = 0.0
        self._t0 = 0.0
        self._load0 = self._proxy0 = CoreTimes(0, 0)

    def start(self) -> None:
        self._load0, self._proxy0 = CoreTimes.read(LOAD_CPU), CoreTimes.read(PROXY_CPU)
        self._cpu0 = tree_cpu_seconds(self.pid) if self.pid else 0.0
        self._wait0 = tree_wait_seconds(self.pid) if self.pid else 0.0
        self._t0 = time.monotonic()

    def stop(self) -> Window:
        wall = time.monotonic() - self._t0
        cpu = tree_cpu_seconds(self.pid) - self._cpu0 if self.pid else None
        wait = tree_wait_seconds(self.pid) - self._wait0 if self.pid else None
        return Window(
            cpu_s=cpu,
            wait_s=wait,
            wall_s=wall,
            load_busy=CoreTimes.read(LOAD_CPU).busy_since(self._load0),
            proxy_busy=CoreTimes.read(PROXY_CPU).busy_since(self._proxy0),
        )


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"bad wrk time {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests, seconds, errors and latency percentiles (ms) from `wrk --latency` output."""
    res: dict[str, Any] = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not m:
        raise ValueError("wrk printed no request count:\n" + out)
    res["requests"] = int(m.group(1))
    res["seconds"] = _ms(m.group(2) + m.group(3)) / 1e3
    for q in ("50", "99"):
        pm = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        res[f"p{q}"] = _ms(pm.group(1)) if pm else None
    errs = 0
    em = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if em:
        errs += sum(int(x) for x in em.groups())
    nm = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if nm:
        errs += int(nm.group(1))
    res["errors"] = errs
    return res


def run_wrk(
    launcher: Launcher,
    port: int,
    pid: int | None,
    *,
    path: str = "/",
    conns: int = 50,
    duration: float = 5.0,
    close: bool = False,
    scheme: str = "http",
) -> tuple[dict[str, Any], Window]:
    """One wrk run (`-t1`, whole seconds) against 127.0.0.1:port; returns (parsed output, window)."""
    secs = max(1, round(duration))
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"{scheme}://127.0.0.1:{port}{path}")
    meter = Meter(pid)
    meter.start()
    proc = launcher.start(argv, LOAD_CPU, "wrk", pipe_stdio=True)
    try:
        out, _ = proc.communicate(timeout=secs + SLACK)
    finally:
        launcher.stop(proc)
    window = meter.stop()
    return parse_wrk(out.decode(errors="replace")), window


def _wsclient_argv(mode: str, port: int, **opts: Any) -> list[str]:
    argv = [sys.executable, WSCLIENT, mode, "--port", str(port)]
    for key, val in opts.items():
        for v in val if isinstance(val, list) else [val]:
            argv += [f"--{key}", str(v)]
    return argv


def _result(line: str) -> dict[str, Any]:
    """The JSON of a `RESULT` line; a client that reports an error raises it here."""
    res: dict[str, Any] = json.loads(line[len("RESULT ") :])
    if "error" in res:
        raise RuntimeError(f"load generator: {res['error']}")
    return res


def _expect_or_result(lines: LineReader, prefix: str, timeout: float) -> str:
    """Wait for a line starting with prefix; an early RESULT line means the client gave up (raises)."""
    line = lines.expect((prefix, "RESULT "), timeout)
    if line.startswith("RESULT "):
        _result(line)
        raise RuntimeError(f"load generator ended before {prefix}: {line}")
    return line


def run_ws(
    launcher: Launcher, mode: str, port: int, pid: int | None, duration: float, **opts: Any
) -> tuple[dict[str, Any], Window]:
    """One timed wsclient run (echo, open or handshake); the window spans its START..STOP lines."""
    argv = _wsclient_argv(mode, port, duration=duration, **opts)
    proc = launcher.start(argv, LOAD_CPU, f"wsclient-{mode}", pipe_stdio=True)
    try:
        lines = LineReader(proc.stdout)  # type: ignore[arg-type]
        meter = Meter(pid)
        _expect_or_result(lines, "START", SLACK)
        meter.start()
        lines.expect("STOP", duration + SLACK)
        window = meter.stop()
        res = _result(lines.expect("RESULT ", SLACK))
        proc.wait(SLACK)
    finally:
        launcher.stop(proc)
    return res, window


def run_idle(
    launcher: Launcher, port: int, pid: int | None, conns: int, sources: list[str], settle: float = 1.0
) -> dict[str, Any]:
    """Open `conns` WebSockets through the proxy, hold them idle, and read the proxy's VmRSS before and after."""
    before = tree_rss_kib(pid) if pid else 0
    argv = _wsclient_argv("idle", port, conns=conns, source=sources)
    proc = launcher.start(argv, LOAD_CPU, "wsclient-idle", pipe_stdio=True)
    try:
        lines = LineReader(proc.stdout)  # type: ignore[arg-type]
        held = int(_expect_or_result(lines, "READY", SLACK + conns / 500).split()[1])
        time.sleep(settle)
        after = tree_rss_kib(pid) if pid else 0
        assert proc.stdin is not None
        proc.stdin.write(b"close\n")
        proc.stdin.flush()
        res = _result(lines.expect("RESULT ", SLACK))
        proc.wait(SLACK)
    finally:
        launcher.stop(proc)
    res.update(held=held, rss_before_kib=before, rss_after_kib=after)
    res["rss_per_conn_kib"] = (after - before) / held if pid and held else None
    return res


def start_sse(launcher: Launcher, control: str) -> subprocess.Popen[bytes]:
    """Attach one event-stream subscriber (on the load core) to a wsproxy control socket."""
    proc = launcher.start([sys.executable, WSCLIENT, "sse", "--unix", control], LOAD_CPU, "sse", pipe_stdio=True)
    LineReader(proc.stdout).expect("READY", 15.0)  # type: ignore[arg-type]
    return proc
