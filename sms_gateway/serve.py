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
from dataclasses import dataclass

import structlog
from aiohttp import web

from sms_gateway import heap
from sms_gateway.app import create_app
from sms_gateway.config.model import Config
from sms_gateway.keys import PROVIDERS, STATE
from sms_gateway.web.connections import ConnectionDeadlines, deadline_protocol_factory
from sms_gateway.web.webhooks import webhook_urls

log = structlog.get_logger("sms_gateway.serve")

LISTEN_BACKLOG = 128  # aiohttp's TCPSite default
DEFAULT_SHUTDOWN_TIMEOUT_S = 60.0  # aiohttp's AppRunner default: how long requests in flight may finish


class CannotListen(Exception):
    """The listening socket could not be opened (address in use, no permission)."""


@dataclass
class Listener:
    """The application listening on a TCP port, every connection with the configured deadlines."""

    runner: web.AppRunner
    server: asyncio.Server

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop accepting, let requests in flight finish (the runner's shutdown timeout), clean the app up."""
        self.server.close()
        await self.runner.cleanup()


async def listen(
    app: web.Application,
    config: Config,
    host: str | None = None,
    port: int | None = None,
    *,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
) -> Listener:
    """Start `app` (its startup and cleanup contexts) and serve it on `host:port` (default: the configuration's;
    port 0 picks a free one) with the head, body and keep-alive deadlines of `config`.

    Used instead of aiohttp's TCPSite, whose protocol has no deadline for a request's head or body."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout)
    try:
        await runner.setup()
    except BaseException:
        await runner.cleanup()  # what did start (e.g. the store, when a later context failed) is closed again
        raise
    server = runner.server
    assert server is not None  # set by setup()
    loop = asyncio.get_running_loop()
    factory = deadline_protocol_factory(server, ConnectionDeadlines.from_config(config), loop=loop, access_log=None)
    host = config.http_host if host is None else host
    port = config.http_port if port is None else port
    try:
        listening = await loop.create_server(factory, host, port, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        await runner.cleanup()
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return Listener(runner, listening)


async def serve(config: Config, *, drain_seconds: float = 2.0) -> None:
    app = create_app(config)
    listener = await listen(app, config)
    stop = asyncio.Event()
    trimming: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Everything made so far (modules, config, app) lives as long as the process: keep it out of the
        # cyclic collector's full passes, which otherwise stop the loop for tens of milliseconds under load.
        gc.collect()
        gc.freeze()
        trimming = asyncio.create_task(heap.trim_forever())
        log.info(
            "gateway_started",
            host=config.http_host,
            port=listener.port,
            store=config.store_url.split(":")[0],
            tenants=len(config.tenants),
            header_timeout_s=config.header_timeout_s,
            body_timeout_s=config.body_timeout_s,
            keepalive_timeout_s=config.keepalive_timeout_s,
        )
        base = config.public_url or f"http://{_local_host(config.http_host)}:{listener.port}"
        log.info(
            "webhook_urls",
            urls=webhook_urls(config, app[PROVIDERS], base),
            public_url_set=config.public_url is not None,
        )
        await stop.wait()
        log.info("shutdown_requested", drain_seconds=drain_seconds)
        app[STATE].shutting_down = True
        await asyncio.sleep(drain_seconds)
    finally:
        if trimming is not None:
            trimming.cancel()
        await listener.close()
        log.info("gateway_stopped")


def _local_host(host: str) -> str:
    """The host to show in a URL for the address the gateway listens on (every interface: this machine)."""
    if host in ("", "0.0.0.0", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host else host


def run(config: Config, drain_seconds: float = 2.0) -> None:
    asyncio.run(serve(config, drain_seconds=drain_seconds))
