"""`--workers 1` against `--workers 2`: proxy CPU per unit of work, and the new-connection rate.

Run as `python bench/workers_bench.py [--duration S] [--rounds R] [--json FILE]` (about 75 s with defaults).
The proxy tree (supervisor and workers) runs unpinned on every core (or on `--proxy-cpus`); wrk and the
backends (two ports, round robin) are pinned to the load core, as in bench/run.py. The backends are HAProxy itself
answering `http-request return` (C, the cheapest load side at hand) when it is installed, else bench/backends.py
(`--python-backends` forces it). Lean settings for both columns: `--check none --no-handshake-log`. Figures per
column: requests/s and µs of proxy CPU per request with keep-alive (`wrk -t1 -c50`), connections/s and µs of
proxy CPU per connection with `Connection: close`, and, in that window, the load side's CPU per connection (both
cores' busy time from /proc/stat minus the proxy tree's): on two cores the second worker shares its core with the
load generator, so the script also derives the rate two workers would reach with both cores to themselves.
Rounds alternate the columns, so a noisy neighbour hurts both; the best round of each is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadgen import LOAD_CPU, run_wrk
from measure import cpu_seconds
from procs import Launcher, free_port, raise_nofile, start_backends, wait_port

ROOT = Path(__file__).resolve().parents[1]
ALL_CPUS = f"0-{(os.cpu_count() or 1) - 1}"


def start_proxy(launcher: Launcher, workers: int, ports: list[int], tmp: str, cpus: str) -> tuple[Any, int]:
    port = free_port()
    argv = [
        sys.executable, "-m", "proxy_core", "serve", "--listen", f"127.0.0.1:{port}",
        "--backend", f"127.0.0.1:{ports[0]}", "--backend", f"127.0.0.1:{ports[1]}",
        "--check", "none", "--no-handshake-log", "--workers", str(workers),
        "--control", f"{tmp}/ctl{workers}.sock", "--state-file", f"{tmp}/state{workers}.json",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = launcher.start(argv, cpus, f"wsproxy-w{workers}", env=env, cwd=tmp)  # type: ignore[arg-type]
    wait_port(port, proc)
    time.sleep(0.5)  # every worker listening (the first one answering is not enough)
    return proc, port


def measure(launcher: Launcher, proc: Any, port: int, duration: float) -> dict[str, float]:
    run_wrk(launcher, port, proc.pid, duration=1, close=True)  # warm-up
    own0 = cpu_seconds(proc.pid)  # the supervisor alone (with N=1, the whole engine)
    keep, kw = run_wrk(launcher, port, proc.pid, duration=duration)
    close, cw = run_wrk(launcher, port, proc.pid, duration=duration, close=True)
    assert kw.cpu_s is not None and cw.cpu_s is not None
    own = cpu_seconds(proc.pid) - own0
    # Everything else both cores did in the close window: the load generator (wrk and the backends) and any other
    # tenant, from /proc/stat; what the proxy tree itself spent is taken out.
    busy_s = (cw.proxy_busy + cw.load_busy) * cw.wall_s
    load_s = max(0.0, busy_s - cw.cpu_s)
    return {
        "close_load_cpu_us": load_s * 1e6 / max(1, close["requests"]),
        "close_cores_busy": cw.proxy_busy + cw.load_busy,
        "close_proxy_cores": cw.cpu_s / cw.wall_s,
        "keepalive_rps": keep["requests"] / keep["seconds"],
        "keepalive_cpu_us": kw.cpu_s * 1e6 / max(1, keep["requests"]),
        "close_cps": close["requests"] / close["seconds"],
        "close_cpu_us": cw.cpu_s * 1e6 / max(1, close["requests"]),
        "close_p99_ms": close["p99"] or 0.0,
        "errors": keep["errors"] + close["errors"],
        "supervisor_cpu_pct": own * 100 / (kw.wall_s + cw.wall_s),
    }


HAPROXY_BACKENDS = """global
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend backends
{binds}    http-request return status 200 content-type text/plain string "Hello, world!"
"""


def start_cheap_backends(launcher: Launcher, tmp: str) -> tuple[list[int], Any] | None:
    """The two backends served by HAProxy itself (`http-request return`, C), far cheaper per connection than
    backends.py, so less of the load core goes to the load side; None without haproxy (then backends.py)."""
    exe = shutil.which("haproxy")
    if exe is None:
        return None
    ports = [free_port(), free_port()]
    config = Path(tmp) / "backends.cfg"
    config.write_text(HAPROXY_BACKENDS.format(binds="".join(f"    bind 127.0.0.1:{p}\n" for p in ports)))
    proc = launcher.start([exe, "-db", "-f", str(config)], LOAD_CPU, "haproxy-backends")
    for port in ports:
        wait_port(port, proc)
    return ports, proc


def print_separated(best: dict[int, dict[str, float]]) -> None:
    """The new-connection scaling with the load generator's share taken out (derived from the measured rows).

    On two cores the load generator (wrk and the Python backends) shares the second core with the second worker, so
    the measured rate is what the machine does, not what two workers could. What each costs is measured apart:
    µs of proxy CPU and µs of load CPU per connection. From those: the rate two workers would reach with both
    cores to themselves (2 cores / µs per connection) against one worker on one core (1 / its µs), and the rate
    this machine can reach at all with the load generator on it ((cores) / (proxy + load µs per connection))."""
    one, two = best[1], best[2]
    if not one["close_cpu_us"] or not two["close_cpu_us"]:
        return
    alone_one = 1e6 / one["close_cpu_us"]  # one worker, one full core
    alone_two = 2e6 / two["close_cpu_us"]  # two workers, two full cores
    machine = 2e6 / (two["close_cpu_us"] + two["close_load_cpu_us"])  # both cores, load generator included
    print("derived (new connections/s):")
    print(f"  one worker on a core of its own      {alone_one:10.0f}")
    print(f"  two workers on two cores of their own{alone_two:10.0f}   {alone_two / alone_one:.2f}x one worker")
    print(f"  this 2-core machine, load included   {machine:10.0f}   measured: {two['close_cps']:.0f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", metavar="FILE")
    p.add_argument(
        "--proxy-cpus",
        default=ALL_CPUS,
        help="CPUs for the proxy tree (taskset list; default every core). `0` puts both workers on the proxy core "
        "alone: CPU per unit then shows coordination cost without the load generator sharing a worker's core",
    )
    p.add_argument(
        "--python-backends",
        action="store_true",
        help="serve the backends with bench/backends.py even when haproxy is installed (dearer per connection)",
    )
    args = p.parse_args()
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="wsproxy-wbench-") as tmp:
        launcher = Launcher(Path(tmp))
        try:
            cheap = None if args.python_backends else start_cheap_backends(launcher, tmp)
            ports, _backends = cheap if cheap is not None else start_backends(launcher, LOAD_CPU)
            backend_kind = "HAProxy (http-request return)" if cheap is not None else "backends.py"
            proxies = {n: start_proxy(launcher, n, ports, tmp, args.proxy_cpus) for n in (1, 2)}
            rounds: dict[int, list[dict[str, float]]] = {1: [], 2: []}
            for _ in range(args.rounds):
                for n, (proc, port) in proxies.items():
                    rounds[n].append(measure(launcher, proc, port, args.duration))
        finally:
            launcher.stop_all()
    best = {
        n: {
            "keepalive_rps": max(r["keepalive_rps"] for r in rs),
            "keepalive_cpu_us": min(r["keepalive_cpu_us"] for r in rs),
            "close_cps": max(r["close_cps"] for r in rs),
            "close_cpu_us": min(r["close_cpu_us"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "supervisor_cpu_pct": min(r["supervisor_cpu_pct"] for r in rs),
            "close_load_cpu_us": min(r["close_load_cpu_us"] for r in rs),
            "close_cores_busy": max(r["close_cores_busy"] for r in rs),
            "close_proxy_cores": max(r["close_proxy_cores"] for r in rs),
        }
        for n, rs in rounds.items()
    }
    print(
        f"cores: {os.cpu_count()}; proxy on CPUs {args.proxy_cpus}; wrk and the backends ({backend_kind}) "
        f"on CPU {LOAD_CPU}"
    )
    print(f"{'':28}{'workers=1':>12}{'workers=2':>12}{'2 vs 1':>10}")
    for key, label in (
        ("keepalive_rps", "keep-alive requests/s"),
        ("keepalive_cpu_us", "µs proxy CPU / request"),
        ("close_cps", "new connections/s"),
        ("close_cpu_us", "µs proxy CPU / connection"),
        ("errors", "wrk errors"),
        ("supervisor_cpu_pct", "% CPU of the top process"),
        ("close_proxy_cores", "cores the proxy used (close)"),
        ("close_load_cpu_us", "µs load CPU / connection"),
        ("close_cores_busy", "cores busy in all (close)"),
    ):
        one, two = best[1][key], best[2][key]
        ratio = f"{(two / one - 1) * 100:+.1f} %" if one else "-"
        print(f"{label:28}{one:12.2f}{two:12.2f}{ratio:>10}")
    print_separated(best)
    if args.json:
        Path(args.json).write_text(json.dumps({"best": best, "rounds": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
