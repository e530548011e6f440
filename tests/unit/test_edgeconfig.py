"""Edge settings: `[[listener]]` tables, `--listen` options, per-server TLS and PROXY options, `[limits]`."""

from __future__ import annotations

import argparse

import pytest

from proxy_core.config import parse_backend_flag, parse_config
from proxy_core.edgeconfig import ANY_SOURCE, Certificate
from proxy_core.errors import ConfigError
from proxy_core.flags import add_engine_flags, build_config


def _flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_engine_flags(parser)
    return parser.parse_args([*argv, "--backend", "127.0.0.1:9"])


def test_listener_tables_beside_the_listen_list() -> None:
    """`listen = [...]` keeps working and `[[listener]]` tables add TLS and PROXY-protocol listeners."""
    config = parse_config(
        {
            "listen": ["127.0.0.1:8000"],
            "listener": [
                {
                    "address": "0.0.0.0:443",
                    "tls_cert": "a.pem",
                    "tls_key": "a.key",
                    "certificate": [{"cert": "b.pem", "key": "b.key"}],
                },
                {"address": "0.0.0.0:8001", "proxy_protocol": True, "proxy_protocol_from": ["10.0.0.0/8", "::1"]},
            ],
        }
    )
    plain, tls, proxy = config.listen
    assert (plain.port, plain.tls, plain.proxy_protocol) == (8000, False, False)
    assert tls.certificates == (Certificate("a.pem", "a.key"), Certificate("b.pem", "b.key")) and tls.tls
    assert proxy.proxy_protocol and proxy.proxy_protocol_from == ("10.0.0.0/8", "::1/128")


def test_listen_flag_options() -> None:
    """`--listen ADDR,cert=F,key=F` is TLS, `--listen ADDR,proxy_protocol[,proxy_protocol_from=CIDR]` PROXY."""
    config = build_config(
        _flags("--listen", "127.0.0.1:0,cert=c.pem,key=k.pem", "--listen", "127.0.0.1:9000,proxy_protocol")
    )
    assert config.listen[0].certificates == (Certificate("c.pem", "k.pem"),)
    assert config.listen[1].proxy_protocol and config.listen[1].proxy_protocol_from == ANY_SOURCE
    only = build_config(_flags("--listen", "127.0.0.1:9000,proxy_protocol,proxy_protocol_from=127.0.0.2"))
    assert only.listen[0].proxy_protocol_from == ("127.0.0.2/32",)


def test_backend_flag_edge_options() -> None:
    """`--backend b1=HOST:PORT,send_proxy=v2,tls` sets the server's PROXY header and TLS options."""
    server = parse_backend_flag("b1=10.0.0.1:8001,send_proxy=v2,tls,tls_verify=off,tls_sni=app.example", 0)
    assert (server.send_proxy, server.tls, server.tls_verify, server.tls_sni) == ("v2", True, False, "app.example")
    assert parse_backend_flag("10.0.0.1:8001", 0).send_proxy is None


def test_limits_table_and_flags() -> None:
    """`[limits]` and its flags; the burst defaults to one second's worth of the rate."""
    limits = parse_config({"limits": {"max_conns_per_client": 10, "new_conns_per_client_per_s": 5}}).limits
    assert limits.max_conns_per_client == 10 and limits.burst == 5.0 and limits.per_client
    flags = build_config(_flags("--new-conns-per-client", "2/8", "--max-accept-rate", "500")).limits
    assert (flags.new_conns_per_client_per_s, flags.burst, flags.max_accept_rate) == (2.0, 8.0, 500.0)


@pytest.mark.parametrize(
    ("document", "key", "fragment"),
    [
        ({"listener": [{"tls_cert": "a"}]}, "listener[0].address", "needs address"),
        ({"listener": [{"address": "127.0.0.1:1", "tls_cert": "a"}]}, "listener[0].tls_key", "go together"),
        ({"listener": [{"address": "127.0.0.1:1", "tls": True}]}, "listener[0].tls", "unknown key"),
        ({"listener": [{"address": "127.0.0.1:1", "proxy_protocol": "yes"}]}, "listener[0].proxy_protocol", "true"),
        (
            {"listener": [{"address": "127.0.0.1:1", "proxy_protocol": True, "proxy_protocol_from": ["10.0.0.300"]}]},
            "listener[0].proxy_protocol_from",
            "a network",
        ),
        (
            {"listener": [{"address": "127.0.0.1:1", "proxy_protocol_from": ["10.0.0.0/8"]}]},
            "listener[0].proxy_protocol_from",
            "needs proxy_protocol",
        ),
        (
            {"listener": [{"address": "127.0.0.1:1", "certificate": [{"cert": "a"}]}]},
            "listener[0].certificate[0]",
            "cert and key",
        ),
        ({"listen": ["127.0.0.1:1"], "listener": [{"address": "127.0.0.1:1"}]}, "listener.address", "unique"),
        ({"server": [{"address": "127.0.0.1:1", "send_proxy": "v3"}]}, "server[0].send_proxy", '"v1" or "v2"'),
        ({"server": [{"address": "127.0.0.1:1", "tls_sni": "x"}]}, "server[0].tls_sni", "needs tls = true"),
        ({"server": [{"address": "127.0.0.1:1", "tls": "yes"}]}, "server[0].tls", "true or false"),
        ({"limits": {"max_conns_per_client": -1}}, "limits.max_conns_per_client", "0..1000000"),
        ({"limits": {"max_accept_rate": "fast"}}, "limits.max_accept_rate", "connections per second"),
        ({"limits": {"per_client": 1}}, "limits.per_client", "unknown key"),
        ({"limits": {"new_conns_per_client_burst": 4}}, "limits.new_conns_per_client_burst", "needs new_conns"),
    ],
)
def test_bad_edge_values_name_the_key(document: dict[str, object], key: str, fragment: str) -> None:
    """Each bad edge setting raises ConfigError naming its key and what is allowed."""
    with pytest.raises(ConfigError) as info:
        parse_config(document)
    assert info.value.key == key and fragment in info.value.message, info.value.message


@pytest.mark.parametrize(
    "value",
    ["127.0.0.1:1,cert=a.pem", "127.0.0.1:1,proxy", "127.0.0.1:1,proxy_protocol_from=10.0.0.0/8", "127.0.0.1:1,x=1"],
)
def test_bad_listen_flags(value: str) -> None:
    """A bad `--listen` option names the flag, the value and the accepted form."""
    with pytest.raises(ConfigError) as info:
        build_config(_flags("--listen", value))
    assert info.value.key == "--listen"
