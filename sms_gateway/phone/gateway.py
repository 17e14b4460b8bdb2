"""The gateway the phone talks to: the configured tenants (or one echo tenant per provider), each tenant's
provider played by its sandbox, a temporary SQLite store, everything on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from sms_gateway.app import create_app
from sms_gateway.config.model import Config, EngineConfig, TenantConfig
from sms_gateway.demo import free_port
from sms_gateway.engines.factory import create_engine
from sms_gateway.keys import STORE
from sms_gateway.phone.observing import ObservingEngine
from sms_gateway.phone.simulator import Bubble, Simulator, TenantView
from sms_gateway.providers import PROVIDER_TYPES
from sms_gateway.providers.sandbox import Sandbox, SandboxMessage, UserMedia

# The numbers of the echo tenants when none is configured: one per provider, each a number it can send MMS from.
ECHO_TENANT_NUMBERS: Mapping[str, str] = {"twilio": "+15005550006", "sinch": "+15005550007", "telesign": "12345"}


def phone_config(base: Config, gateway_url: str, api_urls: Mapping[str, str], db_path: Path) -> Config:
    """`base` (the operator's configuration) made local: each tenant sends through its provider's sandbox at
    `api_urls[kind]`, users may start sessions by texting, media may be on this machine."""
    tenants = base.tenants or tuple(
        TenantConfig(
            phone_number=number,
            description="echo engine",
            engine=EngineConfig(kind="echo"),
            provider=PROVIDER_TYPES[kind].sandbox().settings(""),
            notify_on_session_timeout=True,
        )
        for kind, number in ECHO_TENANT_NUMBERS.items()
    )
    local = tuple(
        dataclasses.replace(
            tenant,
            provider=PROVIDER_TYPES[tenant.provider.kind].sandbox().settings(api_urls[tenant.provider.kind]),
            allow_session_create_via_sms=True,
            webhook_credentials=None,
        )
        for tenant in tenants
    )
    return dataclasses.replace(
        base,
        tenants=local,
        public_url=gateway_url,
        store_url=f"sqlite:///{db_path}",
        http_host="127.0.0.1",
        # The pictures users attach are served by the phone, on this machine; sizes are not asked for.
        media=dataclasses.replace(base.media, allow_private_hosts=True, check_size=False),
    )


@dataclass(slots=True)
class Gateway:
    """The running gateway and the sandboxes, as the phone's server drives them."""

    url: str
    app: web.Application
    sandboxes: dict[str, Sandbox]  # by provider kind
    simulator: Simulator
    http: aiohttp.ClientSession
    _reports: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)

    def sandbox_of(self, tenant: str) -> Sandbox | None:
        view = self.simulator.tenant(tenant)
        return self.sandboxes.get(view.provider) if view is not None else None

    async def send(self, user: str, tenant: str, text: str, media: list[UserMedia]) -> Bubble:
        """Post the user's message to the gateway as the tenant's provider would (signed)."""
        sandbox = self.sandbox_of(tenant)
        assert sandbox is not None
        bubble = self.simulator.user_sends(user, tenant, text, [m.url for m in media])
        try:
            answer = await sandbox.send_message(self.http, self.url, tenant, user, text, media)
        except aiohttp.ClientError as exc:
            self.simulator.set_status(bubble, "rejected", f"the gateway could not be reached: {exc}")
            return bubble
        if 200 <= answer.status < 300:
            self.simulator.set_status(bubble, "accepted")
        else:
            self.simulator.set_status(bubble, "rejected", f"{answer.status}: {answer.body[:300]}")
        return bubble

    async def time_out(self, user: str, tenant: str) -> str | None:
        """Let the user's session with `tenant` time out now: the sweeper ends it as it ends any idle session
        (the engine's smsResponseTimeout turn where the tenant asks for it). The session's id, None if none."""
        session_id = self.simulator.last_session_id(user, tenant)
        store = self.app[STORE]
        session = await store.find_session(session_id) if session_id is not None else None
        if session is None:
            return None
        session.last_activity = time.time() - session.timeout_seconds - 1
        await store.save_session(session)
        return session.session_id

    async def watch(self, kind: str, sandbox: Sandbox) -> None:
        """Show each message that reaches the sandbox on its user's phone, and report it delivered as the
        provider would (a refused one stays failed)."""
        seen = 0
        while True:
            sandbox.arrived.clear()
            while seen < len(sandbox.sent):
                message = sandbox.sent[seen]
                seen += 1
                bubble = self.simulator.provider_received(kind, message)
                if not message.refused:
                    report = asyncio.create_task(self._deliver(sandbox, bubble, message))
                    self._reports.add(report)
                    report.add_done_callback(self._reports.discard)
            await sandbox.arrived.wait()

    async def _deliver(self, sandbox: Sandbox, bubble: Bubble, message: SandboxMessage) -> None:
        with contextlib.suppress(aiohttp.ClientError):
            status = await sandbox.report_delivered(self.http, self.url, bubble.tenant, message)
            if status is None or 200 <= status < 300:
                self.simulator.set_status(bubble, "delivered")


@asynccontextmanager
async def running_gateway(base: Config, db_path: Path) -> AsyncIterator[Gateway]:
    kinds = sorted({t.provider.kind for t in base.tenants} or ECHO_TENANT_NUMBERS.keys())
    sandboxes: dict[str, Sandbox] = {kind: PROVIDER_TYPES[kind].sandbox() for kind in kinds}
    api_ports = {kind: free_port() for kind in kinds}
    gateway_port = free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    config = phone_config(base, gateway_url, {k: f"http://127.0.0.1:{p}" for k, p in api_ports.items()}, db_path)
    simulator = Simulator(
        [
            TenantView(t.phone_number, t.provider.kind, sandboxes[t.provider.kind].name, t.description)
            for t in config.tenants
        ]
    )
    app = create_app(
        config, engine_factory=lambda cfg, http: ObservingEngine(create_engine(cfg, http), simulator.engine_turn)
    )
    runners = [web.AppRunner(sandbox.api()) for sandbox in sandboxes.values()] + [web.AppRunner(app)]
    tasks: list[asyncio.Task[None]] = []
    try:
        for runner, port in zip(runners, [*api_ports.values(), gateway_port], strict=True):
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession() as http:
            gateway = Gateway(gateway_url, app, sandboxes, simulator, http)
            tasks = [asyncio.create_task(gateway.watch(kind, sandbox)) for kind, sandbox in sandboxes.items()]
            yield gateway
    finally:
        for task in tasks:
            task.cancel()
        for runner in reversed(runners):
            await runner.cleanup()
