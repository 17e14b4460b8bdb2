"""Serving a fake provider or engine on a local port for the length of a block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

from aiohttp import web


class Servable(Protocol):
    base_url: str | None

    def make_app(self) -> web.Application: ...


F = TypeVar("F", bound=Servable)


@asynccontextmanager
async def served(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `app` on `host:port` (0 = a free port); yields its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serving(fake: F, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[F]:
    """Serve a fake's app for the length of the block, its `base_url` set meanwhile."""
    async with served(fake.make_app(), host, port) as base_url:
        fake.base_url = base_url
        try:
            yield fake
        finally:
            fake.base_url = None
