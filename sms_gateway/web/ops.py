"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sms_gateway.keys import METRICS, STATE, STORE
from sms_gateway.store.base import StoreUnavailable

log = structlog.get_logger("sms_gateway.web.ops")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    if request.app[STATE].shutting_down:
        return web.json_response({"status": "shutting down"}, status=503)
    try:
        await request.app[STORE].ping()
    except StoreUnavailable as exc:
        # The reason names the store's host, file or socket: for the log, not for whoever asks /ready.
        log.warning("store_unreachable", where="ready", error=str(exc))
        return web.json_response({"status": "store unreachable"}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
