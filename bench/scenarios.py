"""The seven scenarios: what load each applies and which figures it derives from a run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backends import BULK_KA
from loadgen import Window, run_idle, run_wrk, run_ws
from procs import Launcher
from proxies import POOL_NAMES, ROUTED_UPGRADES, Column, Wsproxy, routing_pair

GIB = 1 << 30
Metrics = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """Sizes and durations; `--quick` shortens the timed windows and holds fewer idle connections."""

    duration: float = 5.0
    wrk_seconds: int = 5
    http_conns: int = 50
    bulk_conns: int = 8
    ws_conns: int = 200
    open_conns: int = 50
    open_rate: float = 5000.0
    ws_size: int = 32
    handshake_workers: int = 20
    idle_conns: int = 9000
    sources: list[str] = field(default_factory=lambda: [f"127.0.0.{i}" for i in range(1, 5)])
    # Noisy runs are repeated only this many seconds into the run, so repeats never make a run much longer (waiting
    # for TIME_WAIT sockets counts too). A full run takes about 17 min with the waits, 5-6 without; quick 2.
    retry_budget_s: float = 100.0
    # Wait before each run until earlier runs' TIME_WAIT sockets have expired (see run.py's TW_SETTLE).
    settle_time_wait: bool = True
    # The routing scenario runs the one-pool and the three-pool engine this many times each, in ABBA order.
    routing_rounds: int = 2

    @staticmethod
    def quick() -> Settings:
        return Settings(duration=1.0, wrk_seconds=1, idle_conns=2000, retry_budget_s=35.0, settle_time_wait=False)


@dataclass(frozen=True)
class Scenario:
    """One scenario: its figures (key, label) in display order and the one that is its CPU cost per unit."""

    num: int
    key: str
    title: str
    rows: list[tuple[str, str]]
    summary: list[str]  # figure keys shown in the closing comparison
    run: Callable[[Launcher, Column, Settings], Metrics]
    proxied_only: bool = False  # direct has nothing to measure here
    needs: str = ""  # "tls" or "proxy": only columns with such a listener (wsproxy, HAProxy) run it


def _window(w: Window, units: float, per: float, key: str) -> Metrics:
    """CPU cost per unit (scaled by `per`), the proxy's share of its core, and how much it had to wait for it.

    `wait_pct` is the share of the window the proxy was runnable while its core ran something else (other
    tenants of the machine): 0 on a quiet machine, so it is the noise indicator. None for the direct column.
    """
    load = 100 * w.load_busy
    if w.cpu_s is None or w.wait_s is None:
        return {key: None, "proxy_pct": None, "wait_pct": None, "other_pct": None, "load_core_pct": load}
    own = 100 * w.cpu_s / w.wall_s if w.wall_s else 0.0
    return {
        key: w.cpu_s * per / units if units else None,
        "proxy_pct": own,
        "wait_pct": 100 * w.wait_s / w.wall_s if w.wall_s else 0.0,
        "other_pct": max(0.0, 100 * w.proxy_busy - own),
        "load_core_pct": load,
    }


def keepalive(launcher: Launcher, col: Column, s: Settings) -> Metrics:
    res, w = run_wrk(launcher, col.port, col.pid, conns=s.http_conns, duration=s.wrk_seconds)
    return {
        "rate": res["requests"] / res["seconds"],
        "p50": res["p50"],
        "p99": res["p99"],
        "errors": res["errors"],
        **_window(w, res["requests"], 1e6, "cpu"),
    }


def close(launcher: Launcher, col: Column, s: Settings) -> Metrics:
    res, w = run_wrk(launcher, col.port, col.pid, conns=s.http_conns, duration=s.wrk_seconds, close=True)
    return {
        "rate": res["requests"] / res["seconds"],
        "p50": res["p50"],
        "p99": res["p99"],
        "errors": res["errors"],
        **_window(w, res["requests"], 1e6, "cpu"),
    }


def bulk(launcher: Launcher, col: Column, s: Settings) -> Metrics:
    res, w = run_wrk(launcher, col.port, col.pid, path="/bulk", conns=s.bulk_conns, duration=s.wrk_seconds)
    nbytes = res["requests"] * len(BULK_KA)
    return {
        "rate": nbytes / res["seconds"] / 1e6,
        "p50": res["p50"],
        "errors": res["errors"],
        **_window(w, nbytes / GIB, 1e3, "cpu"),
    }


def ws_echo(launcher: Launcher, col: Column, s: Settings) -> Metrics:
    res, w = run_ws(launcher, "echo", col.port, col.pid, s.duration, conns=s.ws_conns, size=s.ws_size)
    return {
        "rate": res["rate"],
        "p50": res["p50"],
        "p99": res["p99"],
        "errors": res["connect_failures"],
        **_window(w, res["messages"], 1e6, "cpu"),
    }


def ws_open(launcher: Launcher, col: Column, s: Settings) -> Metrics:
    res, w = run_ws(
        launcher, "open", col.port, col.pid, s.duration, conns=s.open_conns, rate=s.open_rate, size=s.ws_size
    )
    return {
        "rate": res["rate"],
        "p50": res["p50"],
        "p99": res["p99"],
        "p999": res["p999"],
        "lost": res["sent"] - res["received"],
        **_window(w, res["received"], 1e6, "cpu"),
    }


def ws_handshake(launcher: Launcher, col: Column, s: Settings) -> Metrics:
    res, w = run_ws(launcher, "handshake", col.port, col.pid, s.duration, conns=s.handshake_workers, source=s.sources)
    return {
        "rate": res["rate"],
        "p50": res["p50"],
        "p99": res["p99"],
        "errors": res["errors"],
        **_window(w, res["handshakes"], 1e6, "cpu"),
    }


def ws_idle(launcher: Launcher, col: Column, s: Settings) -> Metrics:
    res = run_idle(launcher, col.port, col.pid, s.idle_conns, s.sources)
    return {
        "held": res["held"],
        "rss": res["rss_per_conn_kib"],
        "open_s": res["open_seconds"],
        "rss_before": res["rss_before_kib"] / 1024,
        "rss_after": res["rss_after_kib"] / 1024,
    }


def tls_handshake(launcher: Launcher, col: Column, s: Settings) -> Metrics:
    assert col.edge is not None
    res, w = run_ws(
        launcher, "handshake", col.tls_port, col.pid, s.duration, conns=s.handshake_workers, tls=str(col.edge.ca)
    )
    return {
        "rate": res["rate"],
        "p50": res["p50"],
        "p99": res["p99"],
        "errors": res["errors"],
        **_window(w, res["handshakes"], 1e6, "cpu"),
    }


def tls_bulk(launcher: Launcher, col: Column, s: Settings) -> Metrics:
    res, w = run_wrk(
        launcher, col.tls_port, col.pid, path="/bulk", conns=s.bulk_conns, duration=s.wrk_seconds, scheme="https"
    )
    nbytes = res["requests"] * len(BULK_KA)
    return {
        "rate": nbytes / res["seconds"] / 1e6,
        "p50": res["p50"],
        "errors": res["errors"],
        **_window(w, nbytes / GIB, 1e3, "cpu"),
    }


def tls_echo(launcher: Launcher, col: Column, s: Settings) -> Metrics:
    assert col.edge is not None
    res, w = run_ws(
        launcher, "echo", col.tls_port, col.pid, s.duration, conns=s.ws_conns, size=s.ws_size, tls=str(col.edge.ca)
    )
    return {
        "rate": res["rate"],
        "p50": res["p50"],
        "p99": res["p99"],
        "errors": res["connect_failures"],
        **_window(w, res["messages"], 1e6, "cpu"),
    }


def proxy_churn(launcher: Launcher, col: Column, s: Settings) -> Metrics:
    """The same churn on the plain listener and on the PROXY-protocol one (v2 header), back to back."""
    plain, w_plain = run_ws(launcher, "churn", col.port, col.pid, s.duration, conns=s.http_conns)
    proxied, w_proxied = run_ws(
        launcher, "churn", col.proxy_port, col.pid, s.duration, conns=s.http_conns, **{"proxy-header": "v2"}
    )
    plain_cost = _window(w_plain, plain["connections"], 1e6, "cpu")
    figures = {
        "rate": proxied["rate"],
        "rate_plain": plain["rate"],
        "cpu_plain": plain_cost["cpu"],
        "errors": plain["errors"] + proxied["errors"],
        **_window(w_proxied, proxied["connections"], 1e6, "cpu"),
    }
    if figures["cpu"] and figures["cpu_plain"]:
        figures["proxy_vs_plain"] = figures["cpu"] / figures["cpu_plain"]
    return figures


def merge_windows(windows: list[Window]) -> Window:
    """Several windows as one: CPU, wait and wall time add up; core business is averaged over the wall time."""
    wall = sum(w.wall_s for w in windows)
    cpus = [w.cpu_s for w in windows]
    waits = [w.wait_s for w in windows]
    return Window(
        cpu_s=None if None in cpus else sum(c or 0.0 for c in cpus),
        wait_s=None if None in waits else sum(x or 0.0 for x in waits),
        wall_s=wall,
        load_busy=sum(w.load_busy * w.wall_s for w in windows) / wall if wall else 0.0,
        proxy_busy=sum(w.proxy_busy * w.wall_s for w in windows) / wall if wall else 0.0,
    )


def pool_split(engine: Wsproxy) -> str:
    """Each pool's share of the engine's connections in % (POOL_NAMES order), from `wsproxy status --json`: proof
    that the routes spread them."""
    out = subprocess.run(
        [sys.executable, "-m", "proxy_core", "status", "--json", "--control", engine.control_path()],
        capture_output=True,
        text=True,
        timeout=15,
        env=engine.env(),
        check=True,
    ).stdout
    pools = json.loads(out)["pools"]
    total = sum(int(p["total"]) for p in pools) or 1
    return "/".join(f"{100 * int(p['total']) / total:.0f}" for p in pools)


def routing(launcher: Launcher, col: Column, s: Settings) -> Metrics:
    """Scenario 6's handshakes through a fresh one-pool engine and a fresh three-pool one (same flags, same backends,
    the same Host/path mix), in ABBA order; CPU per handshake of each and their ratio."""
    assert isinstance(col, Wsproxy)
    engines = routing_pair(col)
    runs: dict[int, list[tuple[dict[str, Any], Window]]] = {0: [], 1: []}
    try:
        for engine in engines:
            engine.start(launcher)
            if engine.proc is None:
                raise RuntimeError(f"{engine.name}: {engine.note}")
        for r in range(s.routing_rounds):
            # One, three, three, one, ...: a drift that grows through the runs (TIME_WAIT sockets piling up, which
            # make each connect dearer) weighs on both engines alike instead of always on the second.
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for i in order:
                engine = engines[i]
                runs[i].append(
                    run_ws(
                        launcher,
                        "handshake",
                        engine.port,
                        engine.pid,
                        s.duration,
                        conns=s.handshake_workers,
                        source=s.sources,
                        upgrade=ROUTED_UPGRADES,
                    )
                )
        split = pool_split(engines[1])
    finally:
        for engine in engines:
            engine.stop(launcher)
    costs = []
    for i in (0, 1):
        window = merge_windows([w for _, w in runs[i]])
        done = sum(r["handshakes"] for r, _ in runs[i])
        cost = _window(window, done, 1e6, "cpu")
        cost["rate"] = done / window.wall_s if window.wall_s else None
        cost["errors"] = sum(r["errors"] for r, _ in runs[i])
        costs.append(cost)
    one, three = costs
    figures: Metrics = {**three, "rate_one": one["rate"], "cpu_one": one["cpu"], "errors_one": one["errors"]}
    # Noise in either engine's runs makes the ratio suspect: the retry in run.py looks at the worse of the two.
    figures["wait_pct"] = max((c["wait_pct"] for c in costs if c["wait_pct"] is not None), default=None)
    figures["split"] = split
    if figures.get("cpu") and figures.get("cpu_one"):
        figures["pools_vs_one"] = figures["cpu"] / figures["cpu_one"]
    return figures


_CORES = [
    ("proxy_pct", "proxy CPU % of its core"),
    ("wait_pct", "proxy waiting for its core %"),
    ("other_pct", "other work on proxy core %"),
    ("load_core_pct", "load core busy %"),
    ("tw_start", "TIME_WAIT sockets at start"),
]

SCENARIOS: list[Scenario] = [
    Scenario(
        1,
        "keepalive",
        "HTTP keep-alive, small responses (wrk -t1 -c{http_conns} -d{wrk_seconds}s)",
        [
            ("rate", "requests/s"),
            ("p50", "latency p50 ms"),
            ("p99", "latency p99 ms"),
            ("cpu", "proxy CPU µs/request"),
            *_CORES,
            ("errors", "errors"),
        ],
        ["cpu"],
        keepalive,
    ),
    Scenario(
        2,
        "close",
        "New connection per request (wrk -t1 -c{http_conns} -d{wrk_seconds}s, Connection: close)",
        [
            ("rate", "connections/s"),
            ("p50", "latency p50 ms"),
            ("p99", "latency p99 ms"),
            ("cpu", "proxy CPU µs/connection"),
            *_CORES,
            ("errors", "errors"),
        ],
        ["cpu"],
        close,
    ),
    Scenario(
        3,
        "bulk",
        "Bulk: 1 MiB responses (wrk -t1 -c{bulk_conns} -d{wrk_seconds}s /bulk)",
        [("rate", "MB/s"), ("p50", "latency p50 ms"), ("cpu", "proxy CPU ms/GiB"), *_CORES, ("errors", "errors")],
        ["cpu"],
        bulk,
    ),
    Scenario(
        4,
        "ws-echo",
        "WebSocket echo, {ws_conns} connections closed loop, {ws_size}-byte messages, {duration}s",
        [
            ("rate", "messages/s"),
            ("p50", "RTT p50 ms"),
            ("p99", "RTT p99 ms"),
            ("cpu", "proxy CPU µs/message"),
            *_CORES,
            ("errors", "connect failures"),
        ],
        ["cpu"],
        ws_echo,
    ),
    Scenario(
        5,
        "ws-open",
        "WebSocket open loop, {open_rate:.0f} msg/s over {open_conns} connections, {duration}s",
        [
            ("rate", "messages/s sent"),
            ("p50", "RTT p50 ms"),
            ("p99", "RTT p99 ms"),
            ("p999", "RTT p99.9 ms"),
            ("cpu", "proxy CPU µs/message"),
            *_CORES,
            ("lost", "unanswered"),
        ],
        ["p99", "cpu"],
        ws_open,
    ),
    Scenario(
        6,
        "ws-handshake",
        "New WebSocket connections: connect, upgrade, close handshake ({handshake_workers} workers, {duration}s)",
        [
            ("rate", "handshakes/s"),
            ("p50", "upgrade p50 ms"),
            ("p99", "upgrade p99 ms"),
            ("cpu", "proxy CPU µs/handshake"),
            *_CORES,
            ("errors", "errors"),
        ],
        ["cpu"],
        ws_handshake,
    ),
    Scenario(
        7,
        "ws-idle",
        "{idle_conns} idle WebSockets held open (fresh proxy process)",
        [
            ("held", "connections held"),
            ("rss", "proxy RSS KiB/connection"),
            ("rss_before", "proxy RSS MiB before"),
            ("rss_after", "proxy RSS MiB holding"),
            ("open_s", "seconds to open all"),
            ("tw_start", "TIME_WAIT sockets at start"),
        ],
        ["rss"],
        ws_idle,
        proxied_only=True,
    ),
    Scenario(
        8,
        "tls-handshake",
        "New WebSocket connections over TLS (ECDSA P-256, full handshakes, {handshake_workers} workers, {duration}s)",
        [
            ("rate", "handshakes/s"),
            ("p50", "TLS + upgrade p50 ms"),
            ("p99", "TLS + upgrade p99 ms"),
            ("cpu", "proxy CPU µs/TLS handshake"),
            *_CORES,
            ("errors", "errors"),
        ],
        ["cpu"],
        tls_handshake,
        proxied_only=True,
        needs="tls",
    ),
    Scenario(
        9,
        "tls-bulk",
        "Bulk over TLS: 1 MiB responses (wrk -t1 -c{bulk_conns} -d{wrk_seconds}s https://…/bulk)",
        [("rate", "MB/s"), ("p50", "latency p50 ms"), ("cpu", "proxy CPU ms/GiB"), *_CORES, ("errors", "errors")],
        ["cpu"],
        tls_bulk,
        proxied_only=True,
        needs="tls",
    ),
    Scenario(
        10,
        "tls-echo",
        "WebSocket echo over TLS, {ws_conns} connections closed loop, {ws_size}-byte messages, {duration}s",
        [
            ("rate", "messages/s"),
            ("p50", "RTT p50 ms"),
            ("p99", "RTT p99 ms"),
            ("cpu", "proxy CPU µs/message"),
            *_CORES,
            ("errors", "connect failures"),
        ],
        ["cpu"],
        tls_echo,
        proxied_only=True,
        needs="tls",
    ),
    Scenario(
        11,
        "proxy-churn",
        "New connection per request on a PROXY-protocol listener (v2 header) vs the plain one ({http_conns} workers)",
        [
            ("rate_plain", "plain: connections/s"),
            ("cpu_plain", "plain: proxy CPU µs/connection"),
            ("rate", "PROXY: connections/s"),
            ("cpu", "PROXY: proxy CPU µs/connection"),
            ("proxy_vs_plain", "PROXY / plain CPU per connection"),
            *_CORES,
            ("errors", "errors"),
        ],
        ["cpu_plain", "cpu", "proxy_vs_plain"],
        proxy_churn,
        proxied_only=True,
        needs="proxy",
    ),
    Scenario(
        12,
        "routing",
        "New WebSocket connections routed among three pools by Host and path vs one pool (fresh engines, same flags; "
        "{handshake_workers} workers, {routing_rounds} x {duration}s each, ABBA order)",
        [
            ("rate_one", "one pool: handshakes/s"),
            ("cpu_one", "one pool: proxy CPU µs/handshake"),
            ("rate", "three pools: handshakes/s"),
            ("cpu", "three pools: proxy CPU µs/handshake"),
            ("pools_vs_one", "three pools / one pool CPU per handshake"),
            ("split", f"three pools: % of connections {'/'.join(POOL_NAMES)}"),
            *_CORES,
            ("errors_one", "one pool: errors"),
            ("errors", "three pools: errors"),
        ],
        ["cpu_one", "cpu", "pools_vs_one"],
        routing,
        proxied_only=True,
        needs="routing",
    ),
]


def select(only: str | None) -> list[Scenario]:
    """Scenarios named by number or key (comma-separated), or all."""
    if not only:
        return SCENARIOS
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    picked = [sc for sc in SCENARIOS if str(sc.num) in wanted or sc.key in wanted]
    unknown = wanted - {str(sc.num) for sc in picked} - {sc.key for sc in picked}
    if unknown:
        names = ", ".join(f"{sc.num}/{sc.key}" for sc in SCENARIOS)
        raise SystemExit(f"unknown scenario {', '.join(sorted(unknown))}; choose from {names}")
    return picked
