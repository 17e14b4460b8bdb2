"""`create_app(config)`: the aiohttp application, its resources created and closed in cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver

from sms_gateway.config.model import Config, normalise_number
from sms_gateway.conversation import ConversationDeps, Conversations
from sms_gateway.engines.factory import create_engine
from sms_gateway.engines.registry import EngineFactory, EngineRegistry
from sms_gateway.jobs import JobWorker
from sms_gateway.keys import (
    CONFIG,
    CONVERSATIONS,
    ENGINES,
    JOBS,
    METRICS,
    OUTBOX,
    PIPES,
    PROVIDERS,
    STATE,
    STORE,
    WORKER,
    RuntimeState,
)
from sms_gateway.media import media_destinations
from sms_gateway.metrics import Metrics
from sms_gateway.model import MessageLimits
from sms_gateway.netguard import GuardedHttp
from sms_gateway.outbox import SEND, Outbox
from sms_gateway.owners import OwnerHeartbeat, this_process
from sms_gateway.pipes import PipeRelay, callback_destinations
from sms_gateway.providers import PROVIDER_TYPES
from sms_gateway.providers.base import Provider, Sender
from sms_gateway.ratelimit import rates_from_config
from sms_gateway.retention import RetentionSweeper
from sms_gateway.store.base import Store
from sms_gateway.store.factory import create_store
from sms_gateway.web import ops, rest, webhooks
from sms_gateway.web.errors import error_middleware
from sms_gateway.worker import TURN, InboundWorker, SessionSweeper

CleanupContext = Callable[[web.Application], AsyncIterator[None]]

# Provider webhooks are a few KB (a 1,600-character body and ten media URLs).
MAX_REQUEST_BYTES = 256 * 1024
SHUTDOWN_GRACE_SECONDS = 10.0


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    engine_factory: EngineFactory = create_engine,
    sweep_interval: float = 1.0,
    resolver: AbstractResolver | None = None,
) -> web.Application:
    """`resolver` resolves the hosts of caller-chosen URLs (media, pipe callbacks), whose addresses are checked
    before any connection; default: the system's (tests give one that knows their names)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_REQUEST_BYTES)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[STATE] = RuntimeState()
    app[STORE] = store if store is not None else create_store(config.store_url)
    app[PROVIDERS] = {kind: provider_type(config) for kind, provider_type in PROVIDER_TYPES.items()}
    ops.setup(app)
    webhooks.setup(app)
    rest.setup(app)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_make_services_ctx(engine_factory, sweep_interval, resolver))
    app.on_shutdown.append(_mark_shutting_down)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[STORE].open()
    yield
    await app[STORE].close()


def _make_services_ctx(
    engine_factory: EngineFactory, sweep_interval: float, resolver: AbstractResolver | None
) -> CleanupContext:
    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        store, metrics = app[STORE], app[METRICS]
        # `http` reaches what the operator configured (engines, providers: private hosts are fine); the guarded
        # sessions reach hosts that callers name (media, pipe callbacks) and only where their policy allows.
        async with (
            aiohttp.ClientSession() as http,
            _system_resolver(resolver) as dns,
            # A media host is looked up within the time a media's size may take to learn.
            GuardedHttp(
                media_destinations(config.media), dns, lookup_seconds=config.media.size_check_timeout_ms / 1000
            ) as media_http,
            GuardedHttp(callback_destinations(config), dns) as callback_http,
        ):
            engines = EngineRegistry(http, engine_factory)
            providers = app[PROVIDERS]
            senders: dict[str, Sender] = {
                normalise_number(t.phone_number): providers[t.provider.kind].sender(t, http) for t in config.tenants
            }
            limits = _limits(config, providers)

            outbox = Outbox(
                # Status callbacks go to PUBLIC_URL only, never to a URL a request claimed: without it, none.
                store,
                senders,
                metrics,
                lambda: config.public_url,
                max_attempts={normalise_number(t.phone_number): t.provider.max_retries + 1 for t in config.tenants},
                rates=rates_from_config(config.rate_limits),
                settle_seconds={
                    normalise_number(t.phone_number): min(60.0, 2 * t.provider.read_timeout_ms / 1000)
                    for t in config.tenants
                },
                retry_interval_seconds={
                    normalise_number(t.phone_number): t.provider.retry_interval_ms / 1000
                    for t in config.tenants
                    if t.provider.retry_interval_ms is not None
                },
                latency_threshold_ms=config.latency_reporting_threshold_ms,
            )
            relay = PipeRelay(store, callback_http)
            owner = this_process()
            jobs = JobWorker(
                store,
                {SEND: outbox.job_kind(), **relay.job_kinds()},
                metrics,
                concurrency=config.worker_concurrency,
                lease_seconds=config.lease_seconds,
                owner=owner.owner_id,
            )
            relay.notify = jobs.notify
            outbox.on_failed.append(relay.on_send_failed)
            app[PIPES] = relay
            conversations = Conversations(
                ConversationDeps(
                    config,
                    store,
                    engines,
                    metrics,
                    media_http,
                    lambda t: limits[normalise_number(t.phone_number)],
                    jobs.notify,
                )
            )
            worker = InboundWorker(
                store,
                conversations,
                metrics,
                concurrency=config.worker_concurrency,
                lease_seconds=config.lease_seconds,
                owner=owner.owner_id,
            )
            jobs.kinds[TURN] = worker.turn_job_kind()
            sweeper = SessionSweeper(store, conversations, worker.runner, interval=sweep_interval)
            app[ENGINES] = engines
            app[CONVERSATIONS] = conversations
            app[WORKER] = worker
            app[JOBS] = jobs
            app[OUTBOX] = outbox

            def lease_now() -> None:
                worker.notify()
                jobs.notify()

            # A dead process's sends whose request had left may still be created by their provider: those jobs
            # wait as the outbox does.
            heartbeat = OwnerHeartbeat(
                store, owner, on_released=lease_now, job_settle_seconds=max(outbox.settle_seconds.values(), default=0.0)
            )
            # Registered, and the work of processes gone meanwhile (a crash before this start) freed, before
            # the workers' first lease: a restart takes the interrupted work at once.
            await heartbeat.start()
            tasks = [
                asyncio.create_task(worker.run()),
                asyncio.create_task(sweeper.run()),
                asyncio.create_task(jobs.run()),
                asyncio.create_task(RetentionSweeper(store).run()),
            ]
            yield
            tasks[0].cancel()  # stop taking new inbound work, then let the turns in flight finish
            tasks[1].cancel()
            # Waiting must not cancel the work: what is still running afterwards is handed back by stop().
            await worker.drain(SHUTDOWN_GRACE_SECONDS)
            await jobs.drain(SHUTDOWN_GRACE_SECONDS)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await worker.stop()
            await jobs.stop()
            await heartbeat.stop()
            await engines.close()

    return services_ctx


@contextlib.asynccontextmanager
async def _system_resolver(given: AbstractResolver | None) -> AsyncIterator[AbstractResolver]:
    """`given`, or aiohttp's default resolver (closed afterwards)."""
    if given is not None:
        yield given
        return
    resolver = aiohttp.DefaultResolver()
    try:
        yield resolver
    finally:
        await resolver.close()


def _limits(config: Config, providers: dict[str, Provider[Any, Any]]) -> dict[str, MessageLimits]:
    """Per tenant number: its provider's limits, narrowed by the operator's."""
    return {
        normalise_number(t.phone_number): config.media.limits(providers[t.provider.kind].limits(t))
        for t in config.tenants
    }


async def _mark_shutting_down(app: web.Application) -> None:
    app[STATE].shutting_down = True
