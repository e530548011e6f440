"""`--cluster` costs: proxy CPU per relayed message and per new connection with and without it, and how long a
change takes to be applied on all three instances of a fleet (p50/p99 over `--changes`).

Run as `python bench/cluster_bench.py [--duration S] [--rounds R] [--changes N] [--json FILE]` (about 1 min with
defaults; the lead's full run: `--duration 10 --rounds 3 --changes 1000`). A real redis-server is started in a
temporary directory on a free port and stopped by PID. CPU columns: one engine on one core, lean settings
(`--check none --no-handshake-log`), wrk and the backends (bench/backends.py) pinned to the load core as in
bench/run.py; "per relayed message" is a keep-alive request (`wrk -t1 -c50`), "per new connection" one with
`Connection: close`. Rounds alternate the columns; the best round of each is reported.
Change latency: each change (a weight) goes to n1 with `?wait_applied=true`, answered once every live instance
reports it applied (their live views are published at once after applying), timed at the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadgen import LOAD_CPU, run_wrk
from procs import Launcher, free_port, raise_nofile, start_backends, wait_port, wait_unix

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from proxy_core.client import ControlClient  # noqa: E402

PROXY_CPU = 0
REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"


def start_redis(launcher: Launcher, tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [REDIS_BIN, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", "", "--appendonly", "no"]
    proc = launcher.start(argv, LOAD_CPU, "redis")
    wait_port(port, proc)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_proxy(
    launcher: Launcher, name: str, ports: list[int], tmp: str, cluster: str | None, cpu: int = PROXY_CPU
) -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    control = f"{tmp}/{name}.sock"
    argv = [
        sys.executable, "-m", "proxy_core", "serve", "--listen", f"127.0.0.1:{port}",
        "--backend", f"b1=127.0.0.1:{ports[0]}", "--backend", f"b2=127.0.0.1:{ports[1]}",
        "--check", "none", "--no-handshake-log", "--control", control, "--state-file", f"{tmp}/{name}.json",
    ]  # fmt: skip
    if cluster:
        argv += ["--cluster", cluster, "--instance", name]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = launcher.start(argv, cpu, name, env=env, cwd=tmp)
    wait_port(port, proc)
    wait_unix(control)
    return proc, port, control


def measure_cpu(launcher: Launcher, proc: Any, port: int, duration: float) -> dict[str, float]:
    run_wrk(launcher, port, proc.pid, duration=1, close=True)  # warm-up
    keep, kw = run_wrk(launcher, port, proc.pid, duration=duration)
    close, cw = run_wrk(launcher, port, proc.pid, duration=duration, close=True)
    assert kw.cpu_s is not None and cw.cpu_s is not None
    return {
        "message_cpu_us": kw.cpu_s * 1e6 / max(1, keep["requests"]),
        "connection_cpu_us": cw.cpu_s * 1e6 / max(1, close["requests"]),
        "errors": keep["errors"] + close["errors"],
    }


async def change_latency(control: str, changes: int) -> list[float]:
    """Seconds from sending each change to n1 until every live instance reports it applied."""
    samples = []
    async with ControlClient(control) as client:
        client.change_params = {"wait_applied": "true"}
        for i in range(changes):
            started = time.perf_counter()
            await client.set_weight("b2", 1 + i % 5)
            samples.append(time.perf_counter() - started)
    return samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--changes", type=int, default=200)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="wsproxy-cbench-") as tmp:
        launcher = Launcher(Path(tmp))
        try:
            ports, _backends = start_backends(launcher, LOAD_CPU)
            _redis, url = start_redis(launcher, tmp)
            plain = start_proxy(launcher, "plain", ports, tmp, None)
            fleet = [start_proxy(launcher, f"n{i}", ports, tmp, url) for i in (1, 2, 3)]
            columns = {"without": plain, "with": fleet[0]}
            rounds: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
            for _ in range(args.rounds):
                for key, (proc, port, _control) in columns.items():
                    rounds[key].append(measure_cpu(launcher, proc, port, args.duration))
            latency = asyncio.run(change_latency(fleet[0][2], args.changes))
        finally:
            launcher.stop_all()
    best = {
        key: {
            "message_cpu_us": min(r["message_cpu_us"] for r in rs),
            "connection_cpu_us": min(r["connection_cpu_us"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
        }
        for key, rs in rounds.items()
    }
    ordered = sorted(latency)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"proxy on CPU {PROXY_CPU}; wrk, backends and redis on CPU {LOAD_CPU}")
    print(f"{'':32}{'without':>10}{'--cluster':>11}{'change':>10}")
    labels = (("message_cpu_us", "µs CPU / relayed message"), ("connection_cpu_us", "µs CPU / new connection"))
    for key, label in labels:
        one, two = best["without"][key], best["with"][key]
        print(f"{label:32}{one:10.1f}{two:11.1f}{(two / one - 1) * 100:+9.1f} %")
    print(f"wrk errors: {best['without']['errors']:.0f} / {best['with']['errors']:.0f}")
    print(
        f"change applied on all three: p50 {statistics.median(latency) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms over {len(latency)} changes"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"best": best, "rounds": rounds, "latency_s": latency}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
