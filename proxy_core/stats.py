"""The status page (HTML, CSV, JSON) and Prometheus metrics, all from one field table over `Engine.status()`.

Pure functions: a status dict in, text out. The JSON and CSV layouts are the nginx upstream check module's
`check_status` (proxy-semantics.md §1 "Status page — UC"), so scrapers written for the seed keep working;
its trailing-comma quirk under `?status=` is not reproduced. Metrics are computed at scrape time from the
same snapshot, never counted on the data path.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from proxy_core.poolconfig import DEFAULT_POOL

JSON = dict[str, Any]

# The seed's nginx config named its upstream block "websockets"; the check module reports it per row.
UPSTREAM = "websockets"
# nginx bumps the generation on each reload; wsproxy changes its pool at runtime instead, so it stays 1.
GENERATION = 1
# The checked port: nginx's `port=` parameter, where 0 means "the server's own port" (wsproxy's only mode).
CHECK_PORT = 0
REFRESH_S = 3  # the HTML page reloads itself this often
FORMATS = ("html", "json", "csv")
STATES = ("up", "down", "draining", "disabled")
METRIC_PREFIX = "wsproxy"


def upstream(server: JSON, status: JSON) -> str:
    """The server's pool, as nginx names an upstream block; a single unnamed pool keeps the seed's name."""
    pool = server.get("pool")
    if not pool or (pool == DEFAULT_POOL and len(status.get("pools") or ()) <= 1):
        return UPSTREAM
    return str(pool)


def _health(server: JSON) -> JSON:
    health = server.get("health")
    return health if isinstance(health, dict) else {}


def _latency_s(server: JSON) -> float | None:
    latency = _health(server).get("last_latency_ms")
    return None if latency is None else float(latency) / 1000.0


@dataclass(frozen=True, slots=True)
class Field:
    """One column of the status page and, when `metric` is set, one per-server Prometheus series."""

    key: str  # JSON key and CSV position (nginx fields) or HTML-only column id
    header: str  # HTML column header
    get: Callable[[int, JSON, JSON], Any]  # (index, server, engine status) -> value
    nginx: bool = False  # part of the check module's JSON/CSV layout
    json_extra: bool = False  # added to the JSON after the check module's fields (CSV stays as nginx's)
    metric: str | None = None  # metric name without the prefix
    kind: str = "gauge"  # "gauge" | "counter"
    help: str = ""
    value: Callable[[JSON], float | None] | None = None  # the metric's value when it differs from `get`


FIELDS: tuple[Field, ...] = (
    Field("index", "Index", lambda i, s, st: i, nginx=True),
    Field("upstream", "Upstream", lambda i, s, st: upstream(s, st), nginx=True),
    Field("name", "Name", lambda i, s, st: s["address"], nginx=True),
    Field(
        "status",
        "Status",
        lambda i, s, st: _health(s).get("status", "down"),
        nginx=True,
        metric="server_up",
        help="1 when the health check counts the server up, else 0",
        value=lambda s: 1.0 if _health(s).get("status") == "up" else 0.0,
    ),
    Field(
        "rise",
        "Rise counts",
        lambda i, s, st: _health(s).get("rise_count", 0),
        nginx=True,
        metric="server_check_rise_count",
        help="consecutive passing checks",
    ),
    Field(
        "fall",
        "Fall counts",
        lambda i, s, st: _health(s).get("fall_count", 0),
        nginx=True,
        metric="server_check_fall_count",
        help="consecutive failing checks",
    ),
    Field("type", "Check type", lambda i, s, st: st["engine"]["check"]["type"], nginx=True),
    Field("port", "Check port", lambda i, s, st: CHECK_PORT, nginx=True),
    # The check module's `name` is the address; wsproxy's own name, so a scraper need not map addresses back.
    Field("server_name", "Server", lambda i, s, st: s["name"], json_extra=True),
    Field("state", "State", lambda i, s, st: _state_label(s)),
    Field("weight", "Weight", lambda i, s, st: s["weight"], metric="server_weight", help="configured weight (0..256)"),
    Field(
        "active",
        "Active",
        lambda i, s, st: s["active"],
        metric="server_active_connections",
        help="open client connections relayed to the server",
    ),
    Field(
        "total",
        "Total",
        lambda i, s, st: s["total"],
        metric="server_connections",
        kind="counter",
        help="client connections relayed to the server",
    ),
    Field(
        "bytes_in",
        "Bytes in",
        lambda i, s, st: s["bytes_in"],
        metric="server_received_bytes",
        kind="counter",
        help="bytes from clients to the server",
    ),
    Field(
        "bytes_out",
        "Bytes out",
        lambda i, s, st: s["bytes_out"],
        metric="server_sent_bytes",
        kind="counter",
        help="bytes from the server to clients",
    ),
    Field(
        "handshakes",
        "Handshakes",
        lambda i, s, st: s["handshakes"],
        metric="server_handshakes",
        kind="counter",
        help="request heads answered by the server (or closed before an answer)",
    ),
    Field(
        "connect_failures",
        "Connect failures",
        lambda i, s, st: s["connect_failures"],
        metric="server_connect_failures",
        kind="counter",
        help="failed attempts to connect to the server for a client",
    ),
    Field(
        "checks",
        "Checks",
        lambda i, s, st: _health(s).get("checks", 0),
        metric="server_checks",
        kind="counter",
        help="health checks run",
    ),
    Field(
        "check_failures",
        "Check failures",
        lambda i, s, st: _health(s).get("failures", 0),
        metric="server_check_failures",
        kind="counter",
        help="health checks failed",
    ),
    Field(
        "check_latency",
        "Check latency (ms)",
        lambda i, s, st: _health(s).get("last_latency_ms"),
        metric="server_check_latency_seconds",
        help="duration of the last health check",
        value=_latency_s,
    ),
    Field("last_failure", "Last failure", lambda i, s, st: _health(s).get("last_failure")),
)
NGINX_FIELDS = tuple(f for f in FIELDS if f.nginx)
JSON_FIELDS = NGINX_FIELDS + tuple(f for f in FIELDS if f.json_extra)


def _state_label(server: JSON) -> str:
    progress = server.get("progress") or ""
    return f"{server['state']} ({progress})" if progress else str(server["state"])


# -- the status page --------------------------------------------------------------------------------


def parse_query(format_value: str | None, status_value: str | None) -> tuple[str, str | None]:
    """The check module's query rules: case-insensitive, and unknown values are ignored (html, no filter)."""
    fmt = (format_value or "html").lower()
    status = (status_value or "").lower()
    return (fmt if fmt in FORMATS else "html"), (status if status in ("up", "down") else None)


def rows(status: JSON, only: str | None = None) -> list[tuple[int, JSON]]:
    """(global index, server) pairs, filtered on health status; the index is never renumbered."""
    out = []
    for index, server in enumerate(status.get("servers", [])):
        if only is None or _health(server).get("status") == only:
            out.append((index, server))
    return out


def render_json(status: JSON, only: str | None = None) -> str:
    """The check module's JSON, in its line layout (one server object per line), plus `server_name`."""
    selected = rows(status, only)
    lines = [
        '{"servers": {',
        f'  "total": {len(selected)},',
        f'  "generation": {GENERATION},',
        '  "server": [',
    ]
    for n, (index, server) in enumerate(selected):
        items = ", ".join(f"{json.dumps(f.key)}: {json.dumps(f.get(index, server, status))}" for f in JSON_FIELDS)
        lines.append(f"    {{{items}}}" + ("," if n < len(selected) - 1 else ""))
    lines += ["  ]", "}}"]
    return "\n".join(lines) + "\n"


def render_csv(status: JSON, only: str | None = None) -> str:
    """The check module's CSV: no header line, `index,upstream,name,status,rise,fall,type,port` per server."""
    out = []
    for index, server in rows(status, only):
        out.append(",".join(_csv_cell(f.get(index, server, status)) for f in NGINX_FIELDS))
    return "".join(line + "\n" for line in out)


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def render_html(status: JSON, only: str | None = None) -> str:
    """A table a person reads at a glance: down rows red, disabled grey, draining yellow; reloads itself."""
    selected = rows(status, only)
    engine = status.get("engine", {})
    head = "".join(f"<th>{html.escape(f.header)}</th>" for f in FIELDS)
    body = []
    pools = {str(p.get("name")): p for p in status.get("pools") or ()}
    if len(pools) > 1:  # grouped: the pool's line, then its servers (indexes stay the engine's)
        order = list(pools)
        selected = sorted(
            selected, key=lambda r: order.index(r[1]["pool"]) if r[1].get("pool") in pools else len(order)
        )
    shown = None
    for index, server in selected:
        if len(pools) > 1 and server.get("pool") != shown:
            shown = server.get("pool")
            body.append(
                f'  <tr bgcolor="#E0E0E0"><th colspan="{len(FIELDS)}">{_pool_title(pools.get(str(shown)))}</th></tr>'
            )
        cells = "".join(f"<td>{_html_cell(f.get(index, server, status))}</td>" for f in FIELDS)
        body.append(f"  <tr{_row_style(server)}>{cells}</tr>")
    title = "wsproxy upstream check status"
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        '<meta charset="utf-8">\n'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">\n'
        f"<title>{title}</title>\n</head>\n<body>\n"
        f"<h1>{title}</h1>\n"
        f"<h2>Check upstream server number: {len(selected)}, generation: {GENERATION}</h2>\n"
        f"<p>wsproxy {html.escape(str(engine.get('version', '')))}, pid {engine.get('pid', '')}, "
        f"up {_duration(float(engine.get('uptime_s') or 0))}</p>\n"
        '<table style="background-color:white" cellspacing="0" cellpadding="3" border="1">\n'
        f'  <tr bgcolor="#C0C0C0">{head}</tr>\n' + "\n".join(body) + "\n</table>\n</body>\n</html>\n"
    )


def _pool_title(pool: JSON | None) -> str:
    if pool is None:
        return "?"
    return html.escape(
        f"pool {pool.get('name')} ({pool.get('balance')}): {pool.get('up', 0)}/{pool.get('servers', 0)} up, "
        f"{pool.get('active', 0)} active, {pool.get('total', 0)} total"
    )


def _row_style(server: JSON) -> str:
    state = server.get("state")
    if state == "disabled":
        return ' bgcolor="#C0C0C0"'
    if state == "draining":
        return ' bgcolor="#FFFF00"'
    if _health(server).get("status") != "up":
        return ' bgcolor="#FF0000"'
    return ""


def _html_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}"
    return html.escape(str(value))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


CONTENT_TYPES = {"html": "text/html", "json": "application/json", "csv": "text/plain"}


def render_page(status: JSON, fmt: str, only: str | None = None) -> tuple[str, str]:
    """(body, content type without charset) for one of FORMATS."""
    if fmt == "json":
        return render_json(status, only), CONTENT_TYPES["json"]
    if fmt == "csv":
        return render_csv(status, only), CONTENT_TYPES["csv"]
    return render_html(status, only), CONTENT_TYPES["html"]


# -- Prometheus -------------------------------------------------------------------------------------


def _name(metric: str) -> str:
    return f"{METRIC_PREFIX}_{metric}"


def metric_families(status: JSON) -> list[Metric]:
    """Every metric of one snapshot: engine totals, listeners, and the per-server fields of FIELDS."""
    engine = status.get("engine", {})
    totals = status.get("totals", {})
    families: list[Metric] = []
    info = InfoMetricFamily(_name("build"), "wsproxy version and balancing policy")
    info.add_metric([], {"version": str(engine.get("version", "")), "balance": str(engine.get("balance", ""))})
    families.append(info)
    families.append(GaugeMetricFamily(_name("start_time_seconds"), "engine start, unix time", engine.get("started", 0)))
    for key, metric, kind, text in (
        ("active", "active_connections", "gauge", "open client connections"),
        ("total", "connections", "counter", "client connections accepted"),
        ("connect_failures", "connect_failures", "counter", "failed connects to servers"),
        ("bytes_in", "received_bytes", "counter", "bytes from clients to servers"),
        ("bytes_out", "sent_bytes", "counter", "bytes from servers to clients"),
        ("handshakes", "handshakes", "counter", "request heads logged"),
        ("dropped_events", "subscriber_dropped_events", "counter", "events dropped for slow event subscribers"),
    ):
        families.append(_family(_name(metric), kind, text, [], [([], totals.get(key, 0))]))
    listeners = status.get("listeners", [])
    for key, metric, kind, text in (
        ("active", "listener_active_connections", "gauge", "open client connections per listener"),
        ("total", "listener_connections", "counter", "client connections accepted per listener"),
        ("handshake_failures", "listener_tls_handshake_failures", "counter", "failed TLS handshakes per listener"),
        ("days_left", "listener_tls_certificate_days_left", "gauge", "days until the listener's certificate expires"),
        ("bad_headers", "listener_proxy_header_failures", "counter", "missing, bad or slow PROXY headers"),
        (
            "refused_sources",
            "listener_proxy_refused_sources",
            "counter",
            "connections from outside proxy_protocol_from",
        ),
    ):
        samples = [([str(item["address"])], item[key]) for item in listeners if key in item]
        families.append(_family(_name(metric), kind, text, ["listener"], samples))
    limits = status.get("limits", {})
    families.append(
        _family(_name("limit_refused"), "counter", "connections refused by per-client limits", [],
                [([], limits.get("refused", 0))])
    )  # fmt: skip
    servers = status.get("servers", [])
    labels = ["pool", "server", "address"]
    for field in FIELDS:
        if field.metric is None:
            continue
        samples = []
        for index, server in enumerate(servers):
            raw = field.value(server) if field.value is not None else field.get(index, server, status)
            if raw is not None:
                samples.append((_server_labels(server), float(raw)))
        families.append(_family(_name(field.metric), field.kind, field.help, labels, samples))
    by_status = CounterMetricFamily(
        _name("server_handshake_statuses"), "handshake answers by HTTP status", labels=[*labels, "status"]
    )
    for server in servers:
        for code, count in server.get("handshake_statuses", {}).items():
            by_status.add_metric([*_server_labels(server), str(code)], float(count))
    families.append(by_status)
    families.extend(pool_families(status))
    state = GaugeMetricFamily(
        _name("server_state"),
        "1 for the server's effective state (disabled > draining > health)",
        labels=[*labels, "state"],
    )
    for server in servers:
        for name in STATES:
            state.add_metric([*_server_labels(server), name], 1.0 if server["state"] == name else 0.0)
    families.append(state)
    return families


def _server_labels(server: JSON) -> list[str]:
    return [str(server.get("pool", DEFAULT_POOL)), str(server["name"]), str(server["address"])]


def pool_families(status: JSON) -> list[Metric]:
    """Per pool: servers up and connections; per route: matches; requests no route took, by answer."""
    pools = status.get("pools") or []
    families: list[Metric] = []
    for key, metric, kind, text in (
        ("up", "pool_servers_up", "gauge", "servers up and taking connections per pool"),
        ("active", "pool_active_connections", "gauge", "open client connections per pool"),
        ("total", "pool_connections", "counter", "client connections per pool (of its current servers)"),
    ):
        samples = [([str(pool["name"])], float(pool.get(key, 0))) for pool in pools]
        families.append(_family(_name(metric), kind, text, ["pool"], samples))
    routes = [([str(r["index"]), str(r["pool"])], float(r.get("matched", 0))) for r in status.get("routes") or []]
    families.append(
        _family(_name("route_matched"), "counter", "connections each route took", ["route", "pool"], routes)
    )
    unrouted = status.get("unrouted") or {}
    samples = [([code], float(unrouted.get(key, 0))) for key, code in (("not_found", "404"), ("misdirected", "421"))]
    families.append(_family(_name("unrouted"), "counter", "requests no route took, by answer", ["status"], samples))
    return families


def _family(name: str, kind: str, text: str, labels: list[str], samples: Iterable[tuple[list[str], float]]) -> Metric:
    family: GaugeMetricFamily | CounterMetricFamily
    if kind == "counter":
        family = CounterMetricFamily(name, text, labels=labels)
    else:
        family = GaugeMetricFamily(name, text, labels=labels)
    for values, value in samples:
        family.add_metric(values, float(value))
    return family


class StatusCollector(Collector):
    """A prometheus_client collector that takes one engine snapshot per scrape."""

    def __init__(self, snapshot: Callable[[], JSON]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self._snapshot())


def render_metrics(status: JSON) -> bytes:
    """The Prometheus text exposition of one snapshot (for tests and one-off use)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(lambda: status))
    data: bytes = generate_latest(registry)
    return data
