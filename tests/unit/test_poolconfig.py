"""`[[pool]]` and `[[route]]`: good files parse into pools and routes, every bad cross-reference names itself."""

from __future__ import annotations

import tomllib

import pytest

from proxy_core.config import parse_config
from proxy_core.errors import ConfigError
from proxy_core.poolconfig import DEFAULT_POOL, pools_of
from proxy_core.routing import Route

TWO_POOLS = """
[[listener]]
address = "127.0.0.1:8000"
default_pool = "chat"

[[pool]]
name = "chat"
balance = "least_conn"
[pool.check]
type = "http"
path = "/health"
[[pool.server]]
name = "n1"
address = "127.0.0.1:8001"
[[pool.server]]
name = "n2"
address = "127.0.0.1:8002"

[[pool]]
name = "notify"
[[pool.server]]
name = "n1"
address = "127.0.0.1:8003"

[[route]]
host = "*.notify.example.com"
pool = "notify"

[[route]]
listener = "127.0.0.1:8000"
path_prefix = "/notify"
pool = "notify"
"""


def test_two_pools_and_routes_parse() -> None:
    """Each pool keeps its own balance, check and servers; routes keep their order; the listener its default."""
    config = parse_config(tomllib.loads(TWO_POOLS))
    chat, notify = config.pools
    assert (chat.name, chat.balance, chat.check.type, chat.check.path) == ("chat", "least_conn", "http", "/health")
    assert [s.name for s in chat.servers] == ["n1", "n2"]
    assert (notify.name, notify.balance, [s.port for s in notify.servers]) == ("notify", "round_robin", [8003])
    assert config.routes == (
        Route("notify", host="*.notify.example.com"),
        Route("notify", listener="127.0.0.1:8000", path_prefix="/notify"),
    )
    assert config.listen[-1].default_pool == "chat"
    assert pools_of(config) == config.pools


def test_single_pool_form_is_one_pool_named_default() -> None:
    """Today's top-level servers are one pool named `default` with the top-level balance and check."""
    config = parse_config(tomllib.loads('balance = "ip_hash"\n[[server]]\naddress = "127.0.0.1:8001"\n'))
    (pool,) = pools_of(config)
    assert (pool.name, pool.balance, [s.name for s in pool.servers]) == (DEFAULT_POOL, "ip_hash", ["s1"])
    assert config.pools == () and config.routes == ()


POOL = '[[pool]]\nname = "{name}"\n[[pool.server]]\naddress = "127.0.0.1:{port}"\n'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (POOL.format(name="a", port=1) + POOL.format(name="a", port=2), "pool[1].name: invalid value 'a'; pool names"),
        (POOL.format(name="a", port=1) + '[[route]]\nhost = "x"\npool = "b"\n', "route[0].pool: invalid value 'b'"),
        (POOL.format(name="a", port=1) + '[[route]]\nhost = "x"\n', "route[0].pool: invalid value None"),
        (POOL.format(name="a", port=1) + '[[route]]\npool = "a"\ncolour = 1\n', "route[0].colour"),
        (POOL.format(name="a", port=1) + '[[route]]\npool = "a"\nhost = "a.*.com"\n', "route[0].host"),
        (POOL.format(name="a", port=1) + '[[route]]\npool = "a"\npath_prefix = "x"\n', "route[0].path_prefix"),
        (POOL.format(name="a", port=1) + '[[route]]\npool = "a"\nlistener = "1.2.3.4:5"\n', "route[0].listener"),
        (POOL.format(name="a", port=1) + '[[route]]\npool = "a"\nname = "12"\n', "route[0].name: invalid value '12'"),
        (
            POOL.format(name="a", port=1) + '[[route]]\npool = "a"\nname = "x"\n[[route]]\npool = "a"\nname = "x"\n',
            "route[1].name: invalid value 'x'; route names must be unique",
        ),
        ('[[route]]\npool = "a"\n', "routes need [[pool]]"),
        (POOL.format(name="a", port=1) + '[[server]]\naddress = "127.0.0.1:9"\n', "put it inside a pool"),
        ('[[pool]]\n[[pool.server]]\naddress = "127.0.0.1:1"\n', "pool[0].name: invalid value None"),
        ('[[pool]]\nname = "a b"\n', "pool[0].name: invalid value 'a b'"),
        ('[[pool]]\nname = "a"\nbalance = "random"\n', "pool[0].balance"),
        ('[[pool]]\nname = "a"\nweight = 1\n', "pool[0].weight: invalid value 1; unknown key"),
        (
            '[[pool]]\nname = "a"\n[[pool.server]]\nname = "x"\naddress = "127.0.0.1:1"\n'
            '[[pool.server]]\nname = "x"\naddress = "127.0.0.1:2"\n',
            "server names must be unique",
        ),
        (
            POOL.format(name="a", port=1) + '[[listener]]\naddress = "127.0.0.1:0"\ndefault_pool = "zz"\n',
            "default_pool: invalid value 'zz'",
        ),
    ],
)
def test_bad_pool_and_route_tables_name_the_key(text: str, fragment: str) -> None:
    """Duplicate pools, a route to a missing pool, unknown keys, mixed forms: a ConfigError naming the key."""
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text))
    assert fragment in caught.value.message


def test_same_server_name_in_two_pools_is_allowed() -> None:
    """A name is unique within its pool only: `chat/n1` and `notify/n1` are different servers."""
    config = parse_config(tomllib.loads(TWO_POOLS))
    assert {s.name for s in config.pools[0].servers} & {s.name for s in config.pools[1].servers} == {"n1"}
