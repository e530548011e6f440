"""The benchmark's routing scenario (bench/ scenario 12): its three-pool file is one the engine accepts, and the
load's Host/path mix reaches each pool, so `three pools / one pool` compares routed handshakes with plain ones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxy_core.config import load_file
from proxy_core.poolconfig import pools_of
from proxy_core.routing import decide

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.append(str(BENCH))  # the benchmark's modules import each other by bare name

from loadgen import Window  # noqa: E402
from proxies import POOL_NAMES, ROUTED_UPGRADES, Wsproxy, WsproxyPools, routing_pair  # noqa: E402
from scenarios import merge_windows  # noqa: E402


def test_three_pool_file_is_accepted_with_every_pool_over_the_same_backends(tmp_path: Path) -> None:
    engine = WsproxyPools("wsproxy@3pools", [9001, 9002], tmp_path, port=9000)
    argv = engine.argv()
    assert argv is not None and "--backend" not in argv and "--listen" not in argv
    config = load_file(argv[argv.index("-c") + 1])
    assert [(p.name, [s.address for s in p.servers]) for p in pools_of(config)] == [
        (name, ["127.0.0.1:9001", "127.0.0.1:9002"]) for name in POOL_NAMES
    ]
    assert [(str(x.host), x.port, x.default_pool) for x in config.listen] == [("127.0.0.1", 9000, "api")]


@pytest.mark.parametrize(("upgrade", "pool", "route"), [
    (ROUTED_UPGRADES[0], "chat", 0),  # by Host
    (ROUTED_UPGRADES[1], "notify", 1),  # by path prefix
    (ROUTED_UPGRADES[2], "api", None),  # the listener's default pool
])  # fmt: skip
def test_each_upgrade_of_the_load_lands_in_its_own_pool(
    tmp_path: Path, upgrade: str, pool: str, route: int | None
) -> None:
    engine = WsproxyPools("wsproxy@3pools", [9001, 9002], tmp_path, port=9000)
    path = tmp_path / "pools.toml"
    path.write_text(engine.config())
    config = load_file(str(path))
    host, _, rest = upgrade.partition("/")
    decision = decide(config.routes, "127.0.0.1:9000", "api", host=f"{host}:9000", path="/" + rest)
    assert (decision.pool, decision.route) == (pool, route)


def test_routing_pair_keeps_the_flags_but_not_the_access_log_file(tmp_path: Path) -> None:
    """Both engines get the column's flags; each writes its own access log, never the column's file."""
    flags = ["--check", "tcp", "--access-log", str(tmp_path / "wsproxy+feat.access.jsonl")]
    col = Wsproxy("wsproxy+feat", [9001, 9002], tmp_path, flags=flags, subscribe=True)
    one, three = routing_pair(col)
    assert [e.name for e in (one, three)] == ["wsproxy+feat@1pool", "wsproxy+feat@3pools"]
    assert one.subscribe and three.subscribe and one.edge is None and three.edge is None
    logs = [e.flags[e.flags.index("--access-log") + 1] for e in (one, three)]
    assert logs == [str(tmp_path / f"{e.name}.access.jsonl") for e in (one, three)]
    assert all(e.flags[:2] == ["--check", "tcp"] for e in (one, three))


def test_merged_windows_add_time_and_average_core_use() -> None:
    merged = merge_windows([Window(0.2, 0.01, 1.0, 0.5, 0.4), Window(0.6, 0.03, 3.0, 0.9, 0.8)])
    assert merged.cpu_s == pytest.approx(0.8) and merged.wait_s == pytest.approx(0.04)
    assert (merged.wall_s, merged.load_busy, merged.proxy_busy) == (4.0, pytest.approx(0.8), pytest.approx(0.7))
    assert merge_windows([Window(None, None, 1.0, 0.5, 0.5)]).cpu_s is None
