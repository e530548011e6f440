"""What each part of a new connection costs inside the running engine: variants of one engine, side by side.

Run as `python bench/ablate.py [--rounds R] [--duration S] [--json FILE]` (about 2 min with defaults). Each variant
is a fresh engine on the proxy core with the features-on flags (`--check tcp --check-interval 1000`, the handshake
log, an access log, one event-stream subscriber), started through `python -c` so that one Python statement (the
variant's patch) runs before the engine: a part of the per-connection work replaced by a no-op. The load is
`wrk -c50 -H "Connection: close"` on the load core, as in bench/run.py scenario 2; the figure is µs of proxy CPU
per connection. Rounds alternate the variants, so a drift (TIME_WAIT sockets piling up) weighs on all alike; the
median of the rounds is reported, with the difference to the unpatched engine.

Why not a profiler: py-spy's line attribution over this churn put 71 µs per connection on the response
sniffer, which, replaced by a no-op, saves 18. And why not a micro-benchmark: the same code runs about twice as
slow between the kernel's socket work as in a loop of its own (the request sniffer 9 µs alone, 21 µs in the
engine, measured with perf_counter_ns around each call), so only the engine itself says what a part costs.
A removed part costs what its no-op saves; the variants do not add up exactly (what one skips, the next may do).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadgen import PROXY_CPU, run_wrk, start_sse
from procs import Launcher, free_port, raise_nofile, start_backends, wait_port, wait_unix

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["--check", "tcp", "--check-interval", "1000"]
LEAN = ["--check", "none", "--no-handshake-log"]

# name -> (extra flags, the patch run before the engine starts); "features" is the engine as it ships.
VARIANTS: dict[str, tuple[list[str], str]] = {
    "features": (FEATURES, ""),
    "no response sniff": (
        FEATURES,
        "import proxy_core.datapath.sniffer as s; s.ResponseSniffer.feed = lambda self, data: True",
    ),
    "no request or response sniff": (
        FEATURES,
        "import proxy_core.datapath.sniffer as s; s.ResponseSniffer.feed = lambda self, data: True; "
        "s.RequestSniffer.feed = lambda self, data: setattr(self, 'state', 'raw') or True",
    ),
    "no close record": (
        FEATURES,
        "import proxy_core.datapath.switchboard as s; s.Switchboard._log_close = lambda self, c, publish=True: None",
    ),
    "no publishing": (FEATURES, "import proxy_core.events as e; e.EventBus.publish = lambda self, event: event"),
    "no stream encoding": (FEATURES, "import proxy_core.control.stream as s; s.format_event = lambda e: b''"),
    "lean": (LEAN, ""),
}


def start_engine(launcher: Launcher, name: str, ports: list[int], tmp: str) -> tuple[Any, int, str]:
    flags, patch = VARIANTS[name]
    port = free_port()
    control = f"{tmp}/{len(launcher.procs)}.ctl.sock"
    boot = "import runpy, sys; exec(sys.argv.pop(1)); runpy.run_module('proxy_core', run_name='__main__')"
    argv = [
        sys.executable, "-c", boot, patch or "pass", "serve", "--listen", f"127.0.0.1:{port}",
        "--backend", f"127.0.0.1:{ports[0]}", "--backend", f"127.0.0.1:{ports[1]}", *flags,
        "--control", control,
    ]  # fmt: skip
    if flags is FEATURES:
        argv += ["--access-log", f"{tmp}/{len(launcher.procs)}.access.jsonl"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = launcher.start(argv, PROXY_CPU, f"engine-{len(launcher.procs)}", env=env, cwd=str(ROOT))
    wait_port(port, proc)
    wait_unix(control)
    return proc, port, control


def one_round(launcher: Launcher, name: str, ports: list[int], tmp: str, duration: float) -> float:
    """A fresh engine of this variant (and its subscriber), one wrk run; µs of engine CPU per connection."""
    proc, port, control = start_engine(launcher, name, ports, tmp)
    subscriber = start_sse(launcher, control) if VARIANTS[name][0] is FEATURES else None
    try:
        run_wrk(launcher, port, proc.pid, duration=1, close=True)  # warm-up: imports, first allocations
        out, window = run_wrk(launcher, port, proc.pid, duration=duration, close=True)
    finally:
        if subscriber is not None:
            launcher.stop(subscriber)
        launcher.stop(proc)
    assert window.cpu_s is not None
    return window.cpu_s * 1e6 / max(1, out["requests"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--only", help="comma-separated variant names (default: all)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    raise_nofile()
    runs: dict[str, list[float]] = {n: [] for n in names}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wsproxy-ablate-") as tmp:
        launcher = Launcher(Path(tmp))
        try:
            ports, _ = start_backends(launcher, 1)
            for _ in range(args.rounds):
                for name in names:
                    runs[name].append(one_round(launcher, name, ports, tmp, args.duration))
        finally:
            launcher.stop_all()
    median = {n: statistics.median(v) for n, v in runs.items()}
    base = median.get("features")
    print(f"µs proxy CPU per new connection (wrk -c50 Connection: close), median of {args.rounds} round(s)")
    print(f"{'variant':32}{'median':>9}{'vs features':>13}  rounds")
    for name in names:
        diff = f"{median[name] - base:+.1f}" if base is not None and name != "features" else ""
        rounds = " ".join(f"{v:.0f}" for v in runs[name])
        print(f"{name:32}{median[name]:9.1f}{diff:>13}  {rounds}")
    print(f"(run took {time.monotonic() - started:.0f}s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"median": median, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
