"""Settings from TOML and flags: good input parses, bad input names the key, the value and what is allowed."""

from __future__ import annotations

import argparse
import tomllib

import pytest

from proxy_core.checkspec import CheckConfig
from proxy_core.config import load_file, parse_backend_flag, parse_check_flag, parse_config
from proxy_core.errors import ConfigError
from proxy_core.flags import add_engine_flags, build_config

GOOD = """
listen = ["127.0.0.1:8000", "127.0.0.1:8443"]
balance = "ip_hash"
retries = 3

[check]
type = "http"
path = "/health"
interval_ms = 3000
rise = 2
fall = 5
timeout_ms = 1000
expect_status = ["2xx", 418]

[timeouts]
connect = 1.5
idle = 0

[[server]]
name = "node1"
address = "127.0.0.1:8001"

[[server]]
name = "node2"
address = "127.0.0.1:8002"
weight = 3
max_conns = 100
"""


def test_full_file_parses() -> None:
    """Every documented section of a good file lands in the settings."""
    config = parse_config(tomllib.loads(GOOD))
    assert [(x.host, x.port, x.tls) for x in config.listen] == [("127.0.0.1", 8000, False), ("127.0.0.1", 8443, False)]
    assert config.balance == "ip_hash"
    assert config.retries == 3
    assert config.check.type == "http" and config.check.path == "/health"
    assert 204 in config.check.expect_status and 418 in config.check.expect_status
    assert 301 not in config.check.expect_status
    assert config.timeouts.connect == 1.5 and config.timeouts.idle == 0
    assert [s.name for s in config.servers] == ["node1", "node2"]
    assert config.servers[1].weight == 3 and config.servers[1].max_conns == 100


def test_defaults_mirror_the_seed() -> None:
    """Check defaults are the seed's `interval=3000 rise=2 fall=5 timeout=1000`; tunnels never idle out."""
    config = parse_config({})
    assert (config.check.interval_ms, config.check.rise, config.check.fall, config.check.timeout_ms) == (
        3000, 2, 5, 1000,
    )  # fmt: skip
    assert config.timeouts.idle == 0


@pytest.mark.parametrize(
    ("document", "key", "fragment"),
    [
        ({"balance": "random"}, "balance", "one of round_robin"),
        ({"listen": "localhost"}, "listen", "HOST:PORT"),
        ({"listen": "127.0.0.1:70000"}, "listen", "1..65535"),
        ({"lissen": "127.0.0.1:1"}, "lissen", "unknown key"),
        ({"check": {"rise": 0}}, "check.rise", "integer in 1..1000"),
        ({"check": {"type": "icmp"}}, "check.type", "one of tcp"),
        ({"check": {"intervl_ms": 5}}, "check.intervl_ms", "unknown key"),
        ({"timeouts": {"connect": -1}}, "timeouts.connect", ">= 0"),
        ({"server": [{"name": "a b", "address": "127.0.0.1:1"}]}, "server[0].name", "1-64 characters"),
        ({"server": [{"name": "a", "address": "127.0.0.1:1", "weight": 999}]}, "server[0].weight", "0..256"),
        ({"server": [{"name": "a", "address": "127.0.0.1:1", "colour": 1}]}, "server[0].colour", "unknown"),
        ({"server": [{"name": "a"}]}, "server[0].address", "needs address"),
        ({"resolve": "later"}, "resolve", "one of strict, lazy"),
        (
            {"server": [{"name": "a", "address": "127.0.0.1:1"}, {"name": "a", "address": "127.0.0.1:2"}]},
            "server.name",
            "unique",
        ),
    ],
)
def test_bad_values_name_key_value_and_allowed(document: dict[str, object], key: str, fragment: str) -> None:
    """A bad key or value raises ConfigError whose message names the key and what is allowed."""
    with pytest.raises(ConfigError) as info:
        parse_config(document)
    assert info.value.key == key
    assert info.value.message.startswith(key)
    assert fragment in info.value.message


def test_backend_flag_forms() -> None:
    """`--backend` takes HOST:PORT, NAME=HOST:PORT and weight/max_conns options."""
    assert parse_backend_flag("127.0.0.1:8001", 0).name == "s1"
    server = parse_backend_flag("b2=127.0.0.1:8002,weight=3,max_conns=7", 1)
    assert (server.name, server.host, server.port, server.weight, server.max_conns) == ("b2", "127.0.0.1", 8002, 3, 7)
    assert parse_backend_flag("v6=[::1]:9000", 0).host == "::1"
    with pytest.raises(ConfigError, match="--backend"):
        parse_backend_flag("b2=127.0.0.1:8002,wieght=3", 1)


def test_check_flag_forms() -> None:
    """`--check` takes tcp, none, http:/path and websocket:/path."""
    base = CheckConfig()
    assert parse_check_flag("http:/health", base).path == "/health"
    assert parse_check_flag("websocket:/ws", base).type == "websocket"
    with pytest.raises(ConfigError, match="--check"):
        parse_check_flag("smtp", base)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_engine_flags(parser)
    return parser.parse_args(list(argv))


def test_flags_override_the_file(tmp_path: object) -> None:
    """Flags win over the file: backends replace the file's servers, check flags adjust its check."""
    from pathlib import Path

    path = Path(str(tmp_path)) / "wsproxy.toml"
    path.write_text(GOOD)
    config = build_config(
        _args("-c", str(path), "--backend", "x=127.0.0.1:9000", "--fall", "3", "--balance", "least_conn")
    )
    assert [s.name for s in config.servers] == ["x"]
    assert config.check.fall == 3 and config.check.type == "http"
    assert config.balance == "least_conn"


@pytest.mark.parametrize(
    ("text", "where", "shown"),
    [
        ('balance = "round_robin"\nlisten = [\n', "line 2", "listen = ["),
        ("[timeouts]\nconnect = 3.0 3.0\n[[server]]\n", "line 2", "connect = 3.0 3.0"),
        ('name = "unterminated\n', "line 1", 'name = "unterminated'),
    ],
)
def test_malformed_toml_names_the_file_line_and_its_text(tmp_path: object, text: str, where: str, shown: str) -> None:
    """A file tomllib refuses is reported with its path, the line it stopped at and that line's text."""
    from pathlib import Path

    path = Path(str(tmp_path)) / "wsproxy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_file(str(path))
    message = str(info.value)
    assert message.startswith(f"{path} {where}: invalid value {shown!r}; valid TOML ("), message


def test_flag_errors_name_the_flag() -> None:
    """A bad flag value is reported under the flag's own name."""
    with pytest.raises(ConfigError) as info:
        build_config(_args("--backend", "127.0.0.1:1", "--rise", "0"))
    assert info.value.key == "--rise"
    with pytest.raises(ConfigError, match="at least one server"):
        build_config(_args())


def test_resolve_mode_from_file_and_flag() -> None:
    """`resolve` is strict by default, lazy from the file, and `--resolve` overrides it; a bad flag names itself."""
    assert parse_config({}).resolve == "strict"
    assert parse_config({"resolve": "lazy"}).resolve == "lazy"
    assert build_config(_args("--backend", "127.0.0.1:1", "--resolve", "lazy")).resolve == "lazy"
    with pytest.raises(ConfigError) as info:
        build_config(_args("--backend", "127.0.0.1:1", "--resolve", "maybe"))
    assert info.value.key == "--resolve" and "strict, lazy" in info.value.message
