"""The benchmark's columns: direct (no proxy), wsproxy (lean and features on), HAProxy and the naive proxy.

Each column starts its proxy pinned to the proxy core, and knows the port clients use and the PID whose CPU and
memory are measured. A column whose proxy cannot start is kept, with `note` saying why, and reports nothing.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge import EdgeFiles
from loadgen import PROXY_CPU, start_sse
from procs import Launcher, free_port, wait_port, wait_unix

REPO = Path(__file__).resolve().parent.parent
NAIVE = str(Path(__file__).with_name("naive_proxy.py"))
FLOOR = str(Path(__file__).with_name("floor_proxy.py"))
START_TRIES = 2

# wsproxy's two columns differ only in these flags (override with --lean-args / --features-args):
# lean: no health checks and no head parsing; features on: TCP checks every second and the handshake log
# (on by default), plus an access log (a file in the run's work directory, unless the flags name one) and
# one event-stream subscriber attached to the control socket.
WSPROXY_LEAN_ARGS: list[str] = ["--check", "none", "--no-handshake-log"]
WSPROXY_FEATURE_ARGS: list[str] = ["--check", "tcp", "--check-interval", "1000"]

HAPROXY_FD_RESERVE = 256  # fds HAProxy keeps for listeners, pollers and logs beyond two per connection
HAPROXY_CFG = """\
global
    nbthread 1
    maxconn {maxconn}
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 5s
    timeout client 5m
    timeout server 5m
frontend fe
    bind 127.0.0.1:{port} backlog 4096
{edge_binds}    default_backend be
backend be
    balance roundrobin
{servers}
"""


@dataclass
class Column:
    """One proxy under test (or none, for `direct`)."""

    name: str
    backends: list[int]
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    note: str = ""
    edge: EdgeFiles | None = None  # the TLS certificate, when the edge scenarios can run
    tls_port: int = 0  # a TLS listener beside the plain one (0: this column has none)
    proxy_port: int = 0  # a PROXY-protocol listener beside the plain one
    has_edge = False  # wsproxy and HAProxy listen with TLS and the PROXY protocol too
    can_route = False  # wsproxy: the routing scenario starts one-pool and three-pool engines with its flags

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def available(self) -> bool:
        return self.name == "direct" or self.proc is not None

    def argv(self) -> list[str] | None:
        """Command line of the proxy, or None when it cannot run here (note says why)."""
        raise NotImplementedError

    def start(self, launcher: Launcher) -> None:
        """Start the proxy and wait until it listens; on failure set note and leave proc None.

        A start is tried again on a new port (a port seen free can be taken by another tenant meanwhile).
        """
        for _ in range(START_TRIES):
            self.note = ""
            self.port = free_port()
            if self.has_edge and self.edge is not None:
                self.tls_port, self.proxy_port = free_port(), free_port()
            argv = self.argv()
            if argv is None:
                return
            proc = launcher.start(argv, PROXY_CPU, self.name, env=self.env(), cwd=str(REPO))
            try:
                wait_port(self.port, proc)
                self.proc = proc
                self.after_start(launcher)
                return
            except Exception as exc:
                tail = launcher.log_tail(self.name, 3)
                self.note = f"not available: {exc}" + (f" (log: {tail})" if tail else "")
                self.stop(launcher)
                launcher.stop(proc)
                self.proc = None

    def after_start(self, launcher: Launcher) -> None:
        """Hook for columns that attach helpers once the proxy listens."""

    def env(self) -> dict[str, str] | None:
        return None

    def stop(self, launcher: Launcher) -> None:
        for h in self.helpers:
            launcher.stop(h)
        self.helpers.clear()
        if self.proc is not None:
            launcher.stop(self.proc)
            self.proc = None

    def restart(self, launcher: Launcher) -> None:
        """A fresh process (the idle-hold scenario measures memory from a clean start)."""
        if self.name == "direct" or not self.available:
            return
        self.stop(launcher)
        self.start(launcher)


class Direct(Column):
    """No proxy: load generators hit the first backend port directly."""

    def start(self, launcher: Launcher) -> None:
        self.port = self.backends[0]


class Haproxy(Column):
    has_edge = True

    def argv(self) -> list[str] | None:
        exe = shutil.which("haproxy")
        if exe is None:
            self.note = "skipped: haproxy not installed"
            return None
        servers = "\n".join(f"    server b{i} 127.0.0.1:{p}" for i, p in enumerate(self.backends, 1))
        cfg = self.workdir / "haproxy.cfg"
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        # HAProxy refuses to start when 2*maxconn (+ a few) exceeds the fd limit it may not raise.
        maxconn = (nofile - HAPROXY_FD_RESERVE) // 2
        binds = ""
        if self.edge is not None:
            binds = (
                f"    bind 127.0.0.1:{self.tls_port} backlog 4096 ssl crt {self.edge.combined} alpn http/1.1\n"
                f"    bind 127.0.0.1:{self.proxy_port} backlog 4096 accept-proxy\n"
            )
        cfg.write_text(HAPROXY_CFG.format(port=self.port, servers=servers, maxconn=maxconn, edge_binds=binds))
        return [exe, "-db", "-f", str(cfg)]


class Naive(Column):
    def argv(self) -> list[str] | None:
        backs = [a for p in self.backends for a in ("--backend", f"127.0.0.1:{p}")]
        return [sys.executable, NAIVE, "--listen", f"127.0.0.1:{self.port}", *backs]


class Floor(Column):
    """The least a relay on uvloop does per connection (floor_proxy.py): what is above it is wsproxy's own work."""

    def argv(self) -> list[str] | None:
        backs = [a for p in self.backends for a in ("--backend", f"127.0.0.1:{p}")]
        return [sys.executable, FLOOR, "--listen", f"127.0.0.1:{self.port}", *backs]


@dataclass
class Wsproxy(Column):
    """wsproxy's engine started with `flags`; `subscribe` attaches an event-stream subscriber."""

    flags: list[str] = field(default_factory=lambda: list(WSPROXY_LEAN_ARGS))
    subscribe: bool = False
    has_edge = True
    can_route = True

    def control_path(self) -> str:
        return str(self.workdir / f"{self.name}.ctl.sock")

    def argv(self) -> list[str] | None:
        if not (REPO / "proxy_core" / "__main__.py").exists():
            self.note = "not available: proxy_core/__main__.py is missing"
            return None
        ctl = self.control_path()
        if os.path.exists(ctl):
            os.unlink(ctl)
        return [sys.executable, "-m", "proxy_core", "serve", *self.endpoints(), *self.flags, "--control", ctl]

    def endpoints(self) -> list[str]:
        """The listeners and the servers: flags here; a configuration file in WsproxyPools."""
        backs = [a for p in self.backends for a in ("--backend", f"127.0.0.1:{p}")]
        return ["--listen", f"127.0.0.1:{self.port}", *self.edge_listeners(), *backs]

    def edge_listeners(self) -> list[str]:
        if self.edge is None:
            return []
        tls = f"127.0.0.1:{self.tls_port},cert={self.edge.cert},key={self.edge.key}"
        return ["--listen", tls, "--listen", f"127.0.0.1:{self.proxy_port},proxy_protocol"]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def after_start(self, launcher: Launcher) -> None:
        if not self.subscribe:
            return
        wait_unix(self.control_path())
        self.helpers.append(start_sse(launcher, self.control_path()))


# The routing scenario's three pools, each over the same backends, and its routes: by Host, by path prefix, and the
# listener's default pool for the rest. ROUTED_UPGRADES (wsclient --upgrade) reach each pool once per three workers.
POOL_NAMES = ("chat", "notify", "api")
ROUTES_TOML = """
[[route]]
host = "chat.bench"
pool = "chat"

[[route]]
path_prefix = "/notify"
pool = "notify"
"""
ROUTED_UPGRADES = ["chat.bench/ws", "127.0.0.1/notify/ws", "127.0.0.1/ws"]


@dataclass
class WsproxyPools(Wsproxy):
    """wsproxy with the same flags, its servers in three pools behind one listener routed by Host and path."""

    has_edge = False

    def config(self) -> str:
        """The TOML: the listener (its default pool takes what no route matches), the pools, the routes."""
        text = f'[[listener]]\naddress = "127.0.0.1:{self.port}"\ndefault_pool = "{POOL_NAMES[-1]}"\n'
        for pool in POOL_NAMES:
            text += f'\n[[pool]]\nname = "{pool}"\n'
            text += "".join(
                f'[[pool.server]]\nname = "b{i}"\naddress = "127.0.0.1:{p}"\n' for i, p in enumerate(self.backends, 1)
            )
        return text + ROUTES_TOML

    def endpoints(self) -> list[str]:
        path = self.workdir / f"{self.name}.toml"
        path.write_text(self.config())
        return ["-c", str(path)]


def routing_pair(col: Wsproxy) -> tuple[Wsproxy, WsproxyPools]:
    """Fresh one-pool and three-pool engines with `col`'s flags (an access log of their own), no edge listeners."""

    def flags(name: str) -> list[str]:
        out = list(col.flags)
        if "--access-log" in out and out[out.index("--access-log") + 1] != "-":
            out[out.index("--access-log") + 1] = str(col.workdir / f"{name}.access.jsonl")
        return out

    one, three = f"{col.name}@1pool", f"{col.name}@3pools"
    return (
        Wsproxy(one, col.backends, col.workdir, flags=flags(one), subscribe=col.subscribe),
        WsproxyPools(three, col.backends, col.workdir, flags=flags(three), subscribe=col.subscribe),
    )


COLUMN_NAMES = ["direct", "wsproxy", "wsproxy+feat", "haproxy", "floor", "naive"]


def with_access_log(flags: list[str], workdir: Path) -> list[str]:
    """The features-on flags with the access log on, written to the run's work directory."""
    if "--access-log" in flags:
        return flags
    return [*flags, "--access-log", str(workdir / "wsproxy+feat.access.jsonl")]


def make_columns(
    names: list[str],
    backends: list[int],
    workdir: Path,
    lean: list[str],
    features: list[str],
    edge: EdgeFiles | None = None,
) -> list[Column]:
    """Columns in display order."""
    make: dict[str, Callable[[], Column]] = {
        "direct": lambda: Direct("direct", backends, workdir),
        "wsproxy": lambda: Wsproxy("wsproxy", backends, workdir, flags=lean),
        "wsproxy+feat": lambda: Wsproxy(
            "wsproxy+feat", backends, workdir, flags=with_access_log(features, workdir), subscribe=True
        ),
        "haproxy": lambda: Haproxy("haproxy", backends, workdir),
        "floor": lambda: Floor("floor", backends, workdir),
        "naive": lambda: Naive("naive", backends, workdir),
    }
    columns = [make[n]() for n in COLUMN_NAMES if n in names]
    for column in columns:
        column.edge = edge if column.has_edge else None
    return columns
