"""`GET /status`, `/websocket_status` (the seed's path) and `/metrics`: read-only pages for people and scrapers."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from proxy_core import stats
from proxy_core.control.routes import ENGINE, engine_of

METRICS: web.AppKey[CollectorRegistry] = web.AppKey("metrics")


async def status_page(request: web.Request) -> web.Response:
    """The nginx check module's page; like it, unknown `format`/`status` values are ignored, not refused."""
    fmt, only = stats.parse_query(request.query.get("format"), request.query.get("status"))
    body, content_type = stats.render_page(engine_of(request).status(), fmt, only)
    return web.Response(text=body, content_type=content_type, charset="utf-8")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition, computed now from one snapshot; the encoder follows the Accept header."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(request.app[METRICS]), headers={"Content-Type": content_type})


def add_page_routes(app: web.Application) -> None:
    """Register the pages, with one metrics registry per app holding the scrape-time collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(stats.StatusCollector(lambda: app[ENGINE].status()))
    app[METRICS] = registry
    app.router.add_get("/status", status_page)
    app.router.add_get("/websocket_status", status_page)
    app.router.add_get("/metrics", metrics)
