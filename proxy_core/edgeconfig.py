"""Settings for running at the edge: `[[listener]]` tables and `--listen` options (TLS, PROXY protocol), `[limits]`.

Pure parsing like config.py: each bad key or value raises ConfigError naming it. Files are not opened here;
tlsfiles.py checks the certificates when the engine starts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy_core.errors import ConfigError

# Any source may send a PROXY header unless proxy_protocol_from narrows it (HAProxy's `accept-proxy` default).
ANY_SOURCE: tuple[str, ...] = ("0.0.0.0/0", "::/0")
MAX_ACCEPT_RATE = 1_000_000  # new connections/s: beyond anything one engine accepts, a typo guard
LISTEN_FLAG_FORM = "HOST:PORT[,cert=FILE,key=FILE][,proxy_protocol][,proxy_protocol_from=CIDR]..."


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate chain (leaf first) and its private key, both PEM files."""

    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One listening address; TLS when it has certificates (the first is the default, the others chosen by SNI)."""

    host: str
    port: int
    certificates: tuple[Certificate, ...] = ()
    proxy_protocol: bool = False
    proxy_protocol_from: tuple[str, ...] = ANY_SOURCE
    default_pool: str | None = None  # with [[pool]]: where a connection no route matches goes (None: 404)

    @property
    def tls(self) -> bool:
        return bool(self.certificates)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Per-client and engine-wide admission limits; 0 means off."""

    max_conns_per_client: int = 0  # open connections per client address
    new_conns_per_client_per_s: float = 0.0  # token bucket refill rate per client address
    new_conns_per_client_burst: int = 0  # bucket size; 0: one second's worth of the rate (at least 1)
    max_accept_rate: float = 0.0  # new connections/s for the whole engine; accepts are paced above it

    @property
    def per_client(self) -> bool:
        return self.max_conns_per_client > 0 or self.new_conns_per_client_per_s > 0

    @property
    def burst(self) -> float:
        return float(self.new_conns_per_client_burst or max(1, round(self.new_conns_per_client_per_s)))


LISTENER_KEYS = (
    "address", "tls_cert", "tls_key", "certificate", "proxy_protocol", "proxy_protocol_from", "default_pool",
)  # fmt: skip
LIMIT_KEYS = tuple(LimitsConfig.__dataclass_fields__)


def _path(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, value, "a file path")
    return value


def parse_networks(key: str, value: object) -> tuple[str, ...]:
    """`["10.0.0.0/8", "192.168.1.7"]` into normalised networks; a bad one is named."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigError(key, value, 'a list of networks such as ["10.0.0.0/8", "::1"]')
    networks = []
    for item in items:
        try:
            networks.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError as exc:
            raise ConfigError(key, item, "a network such as 10.0.0.0/8 or an address") from exc
    return tuple(networks)


def parse_listener(key: str, raw: object, parse_listen: Any) -> ListenerConfig:
    """One `[[listener]]` table."""
    if not isinstance(raw, dict):
        raise ConfigError(key, raw, "a table")
    for name in raw:
        if name not in LISTENER_KEYS:
            raise ConfigError(f"{key}.{name}", raw[name], f"unknown key; allowed: {', '.join(LISTENER_KEYS)}")
    if "address" not in raw:
        raise ConfigError(f"{key}.address", None, 'every listener needs address = "HOST:PORT"')
    host, port = parse_listen(f"{key}.address", raw["address"])
    certificates: list[Certificate] = []
    if ("tls_cert" in raw) != ("tls_key" in raw):
        missing = "tls_key" if "tls_cert" in raw else "tls_cert"
        raise ConfigError(f"{key}.{missing}", None, "tls_cert and tls_key go together")
    if "tls_cert" in raw:
        certificates.append(
            Certificate(_path(f"{key}.tls_cert", raw["tls_cert"]), _path(f"{key}.tls_key", raw["tls_key"]))
        )
    extra = raw.get("certificate", [])
    if not isinstance(extra, list):
        raise ConfigError(f"{key}.certificate", extra, "[[listener.certificate]] tables with cert and key")
    for i, entry in enumerate(extra):
        where = f"{key}.certificate[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"cert", "key"}:
            raise ConfigError(where, entry, "a table with cert and key (PEM files) and nothing else")
        certificates.append(Certificate(_path(f"{where}.cert", entry["cert"]), _path(f"{where}.key", entry["key"])))
    proxy = raw.get("proxy_protocol", False)
    if not isinstance(proxy, bool):
        raise ConfigError(f"{key}.proxy_protocol", proxy, "true or false")
    sources = ANY_SOURCE
    if "proxy_protocol_from" in raw:
        if not proxy:
            raise ConfigError(f"{key}.proxy_protocol_from", raw["proxy_protocol_from"], "needs proxy_protocol = true")
        sources = parse_networks(f"{key}.proxy_protocol_from", raw["proxy_protocol_from"])
    default_pool = raw.get("default_pool")
    if default_pool is not None and (not isinstance(default_pool, str) or not default_pool):
        raise ConfigError(f"{key}.default_pool", default_pool, "the name of a [[pool]]")
    return ListenerConfig(host, port, tuple(certificates), proxy, sources, default_pool)


def parse_listen_flag(value: str, parse_listen: Any) -> ListenerConfig:
    """`--listen 0.0.0.0:443,cert=FILE,key=FILE` or `--listen 0.0.0.0:8000,proxy_protocol[,proxy_protocol_from=N]`."""
    address, *options = value.split(",")
    host, port = parse_listen("--listen", address)
    certs: list[str] = []
    keys: list[str] = []
    proxy = False
    sources: list[str] = []
    for option in options:
        name, sep, text = option.partition("=")
        name = name.strip()
        if name == "cert" and sep and text:
            certs.append(text)
        elif name == "key" and sep and text:
            keys.append(text)
        elif name == "proxy_protocol" and not sep:
            proxy = True
        elif name == "proxy_protocol_from" and sep and text:
            sources.append(text)
        else:
            raise ConfigError("--listen", value, f"{LISTEN_FLAG_FORM} (unknown option {option!r})")
    if len(certs) != len(keys):
        raise ConfigError("--listen", value, "every cert=FILE needs its key=FILE (pairs in order)")
    if sources and not proxy:
        raise ConfigError("--listen", value, "proxy_protocol_from needs proxy_protocol")
    networks = parse_networks("--listen", sources) if sources else ANY_SOURCE
    listener = ListenerConfig(
        host, port, tuple(Certificate(c, k) for c, k in zip(certs, keys, strict=True)), proxy, networks
    )
    return listener


def parse_limits(raw: object) -> LimitsConfig:
    """The `[limits]` table."""
    if not isinstance(raw, dict):
        raise ConfigError("limits", raw, "a table")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"limits.{name}"
        if name not in LIMIT_KEYS:
            raise ConfigError(key, value, f"unknown key; allowed: {', '.join(LIMIT_KEYS)}")
        if name in ("max_conns_per_client", "new_conns_per_client_burst"):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
                raise ConfigError(key, value, "an integer in 0..1000000 (0 = off)")
        elif isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_ACCEPT_RATE:
            raise ConfigError(key, value, f"connections per second in 0..{MAX_ACCEPT_RATE} (0 = off)")
        values[name] = value
    limits = LimitsConfig(**values)
    if limits.new_conns_per_client_burst and not limits.new_conns_per_client_per_s:
        raise ConfigError("limits.new_conns_per_client_burst", values["new_conns_per_client_burst"],
                          "needs new_conns_per_client_per_s")  # fmt: skip
    return limits


def server_options(table: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A server's `send_proxy`, `tls`, `tls_verify`, `tls_ca`, `tls_sni`, validated."""
    out: dict[str, Any] = {}
    if "send_proxy" in table:
        if table["send_proxy"] not in ("v1", "v2"):
            raise ConfigError(f"{key}.send_proxy", table["send_proxy"], '"v1" or "v2"')
        out["send_proxy"] = table["send_proxy"]
    for name in ("tls", "tls_verify"):
        if name in table:
            if not isinstance(table[name], bool):
                raise ConfigError(f"{key}.{name}", table[name], "true or false")
            out[name] = table[name]
    for name in ("tls_ca", "tls_sni"):
        if name in table:
            if not isinstance(table[name], str) or not table[name].strip():
                raise ConfigError(f"{key}.{name}", table[name], "a non-empty string")
            out[name] = table[name]
    if not out.get("tls", False):
        for name in ("tls_verify", "tls_ca", "tls_sni"):
            if name in out:
                raise ConfigError(f"{key}.{name}", out[name], "needs tls = true")
    return out


SERVER_EDGE_KEYS = ("send_proxy", "tls", "tls_verify", "tls_ca", "tls_sni")


def backend_flag_option(name: str, sep: str, text: str) -> tuple[str, object] | None:
    """One `--backend` option of the edge kind (`send_proxy=v2`, `tls`, `tls_verify=off`, ...), or None."""
    if name == "tls" and not sep:
        return "tls", True
    if name == "tls_verify" and sep and text in ("on", "off", "true", "false"):
        return "tls_verify", text in ("on", "true")
    if name in ("send_proxy", "tls_ca", "tls_sni") and sep:
        return name, text
    return None
