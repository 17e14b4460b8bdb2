"""`sms-gateway serve`: run until SIGTERM/SIGINT, then shut down gracefully.

On the signal `/ready` answers 503 at once (so an orchestrator stops routing here) while webhooks are still
accepted for `drain_seconds`; then the listener closes, turns and sends in flight get a grace period to finish,
and whatever is left stays leased in the store for this or another process to pick up. Nothing is lost:
every accepted message is already stored.
"""

from __future__ import annotations

import asyncio
import gc
import signal

import structlog
from aiohttp import web

from sms_gateway import heap
from sms_gateway.app import create_app
from sms_gateway.config.model import Config
from sms_gateway.keys import STATE

log = structlog.get_logger("sms_gateway.serve")


async def serve(config: Config, *, drain_seconds: float = 2.0) -> None:
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    trimming: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, config.http_host, config.http_port)
        await site.start()
        # Everything made so far (modules, config, app) lives as long as the process: keep it out of the
        # cyclic collector's full passes, which otherwise stop the loop for tens of milliseconds under load.
        gc.collect()
        gc.freeze()
        trimming = asyncio.create_task(heap.trim_forever())
        log.info("gateway_started", host=config.http_host, port=config.http_port, store=config.store_url.split(":")[0],
                 tenants=len(config.tenants))
        await stop.wait()
        log.info("shutdown_requested", drain_seconds=drain_seconds)
        app[STATE].shutting_down = True
        await asyncio.sleep(drain_seconds)
    finally:
        if trimming is not None:
            trimming.cancel()
        await runner.cleanup()
        log.info("gateway_stopped")


def run(config: Config, drain_seconds: float = 2.0) -> None:
    asyncio.run(serve(config, drain_seconds=drain_seconds))
