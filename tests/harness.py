"""An end-to-end harness: the real gateway app on a local port, fake Twilio and fake Watson over real HTTP.

Twilio tenants, one per engine kind:
    V1      +15005550001  Watson Assistant v1 workspace WS1
    SOE     +15005550002  an SOE at /soe/orchestrate (v1 API, URL as given)
    V2      +15005550003  Watson Assistant v2, environment paths (ibm-watson 11.x)
    V2OLD   +15005550004  Watson Assistant v2, legacy paths (no environment segment)
With `sinch=True`, a fake Sinch too and its tenant; with `telesign=True`, a fake TeleSign and its tenant:
    SINCH     +15005550011  Watson Assistant v1 workspace WS1, Sinch's Conversation API (the fake's app)
    TELESIGN  12345         Watson Assistant v1 workspace WS1, TeleSign from a US short code (the fake's account)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver
from twilio.request_validator import RequestValidator

from sms_gateway.app import create_app
from sms_gateway.config.model import Config, EngineConfig, MediaPolicy, ProviderConfig, TenantConfig
from sms_gateway.keys import JOBS, METRICS, STORE, WORKER
from sms_gateway.serve import listen
from sms_gateway.store.base import Store
from tests.fakes.dns import harness_resolver
from tests.fakes.sinch import FakeSinch, serve_fake_sinch
from tests.fakes.telesign import FakeTeleSign, serve_fake_telesign
from tests.fakes.twilio import FakeTwilio, SentMessage, serve_fake_twilio
from tests.fakes.watson import FakeWatson, serve

V1 = "+15005550001"
SOE = "+15005550002"
V2 = "+15005550003"
V2OLD = "+15005550004"
SINCH = "+15005550011"
TELESIGN = "12345"
USER = "+15551230001"
ACCOUNT = "AC" + "0123456789abcdef" * 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


def inbound_form(
    text: str = "hello",
    media: list[tuple[str, str]] | None = None,
    *,
    user: str = USER,
    tenant: str = V1,
    sid: str | None = None,
) -> dict[str, str]:
    media = media or []
    form = {
        "ToCountry": "US",
        "MessageSid": sid or new_sid("MM" if media else "SM"),
        "AccountSid": ACCOUNT,
        "From": user,
        "To": tenant,
        "Body": text,
        "NumMedia": str(len(media)),
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    form["SmsMessageSid"] = form["SmsSid"] = form["MessageSid"]
    for i, (url, content_type) in enumerate(media):
        form[f"MediaUrl{i}"] = url
        form[f"MediaContentType{i}"] = content_type
    return form


def twilio_media(n: int) -> str:
    return f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Messages/MM{'a' * 32}/Media/ME{n:032x}"


@dataclass
class Harness:
    config: Config
    app: web.Application
    url: str
    http: aiohttp.ClientSession
    twilio: FakeTwilio
    watson: FakeWatson
    watson_url: str
    sinch: FakeSinch | None = None
    telesign: FakeTeleSign | None = None

    @property
    def store(self) -> Store:
        return self.app[STORE]

    def sign(self, url: str, params: Mapping[str, str], token: str | None = None) -> str:
        return str(RequestValidator(token or self.twilio.auth_token).compute_signature(url, dict(params)))

    async def post_form(
        self,
        form: Mapping[str, str],
        *,
        path: str = "/sms.receiver/SmsRecv",
        signature: str | None = None,
        sign: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str, Mapping[str, str]]:
        url = self.url + path
        all_headers = dict(headers or {})
        if sign:
            all_headers["X-Twilio-Signature"] = signature or self.sign(url, form)
        async with self.http.post(url, data=dict(form), headers=all_headers) as response:
            return response.status, await response.text(), response.headers

    async def sms(self, text: str = "hello", media: list[tuple[str, str]] | None = None, **kw: Any) -> str:
        """Deliver an inbound message as Twilio would; returns its MessageSid."""
        form = inbound_form(text, media, **kw)
        status, body, _ = await self.post_form(form)
        assert status == 200, body
        return form["MessageSid"]

    def v1_contexts(self) -> list[dict[str, Any]]:
        """The context of each Watson v1 turn, in order: what the engines saw."""
        return [r.json["context"] for r in self.watson.of_kind("v1")]

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the gateway's Prometheus registry (0 when it was never counted)."""
        return self.app[METRICS].registry.get_sample_value(name, labels) or 0.0

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every accepted message has been processed."""
        deadline = time.monotonic() + timeout
        worker, jobs = self.app[WORKER], self.app[JOBS]
        while time.monotonic() < deadline:
            idle = worker.runner.busy_keys == 0 and jobs.busy == 0
            if idle and await self.store.pending_inbound_count() == 0 and not await self._jobs_due():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the gateway did not settle")

    async def _jobs_due(self) -> bool:
        return await self.store.pending_job_count() > 0

    async def wait_sent(self, count: int, timeout: float = 10.0) -> list[SentMessage]:
        deadline = time.monotonic() + timeout
        while len(self.twilio.messages) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(self.twilio.messages) >= count, f"{len(self.twilio.messages)} of {count} messages sent"
        return self.twilio.messages

    async def post_status(self, sent: SentMessage, status: str, **extra: str) -> int:
        assert sent.status_callback
        form = {
            "MessageSid": sent.sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": ACCOUNT,
            "From": sent.from_ or "",
            "To": sent.to,
            "ApiVersion": "2010-04-01",
            **extra,
        }
        signature = self.sign(sent.status_callback, form)
        async with self.http.post(
            sent.status_callback, data=form, headers={"X-Twilio-Signature": signature}
        ) as response:
            return response.status


def tenants(
    twilio: FakeTwilio,
    watson_url: str,
    sinch: FakeSinch | None = None,
    telesign: FakeTeleSign | None = None,
    **overrides: Any,
) -> tuple[TenantConfig, ...]:
    def tenant(number: str, engine: EngineConfig, provider: ProviderConfig | None = None) -> TenantConfig:
        base = TenantConfig(
            phone_number=number,
            engine=dataclasses.replace(engine, connect_timeout_ms=2000, read_timeout_ms=2000, max_retries=1),
            provider=provider or twilio.provider_config(max_retries=2),
            allow_session_create_via_sms=True,
            conversation_failed_reply_message="Sorry, we can't answer right now.",
        )
        return dataclasses.replace(base, **overrides)

    v1 = EngineConfig(kind="watson_v1", url=watson_url, workspace_id="WS1")
    return (
        tenant(V1, v1),
        tenant(SOE, EngineConfig(kind="soe", url=f"{watson_url}/soe/orchestrate")),
        tenant(V2, EngineConfig(kind="watson_v2", url=watson_url, assistant_id="A1", environment_id="E1")),
        tenant(V2OLD, EngineConfig(kind="watson_v2", url=watson_url, assistant_id="A1", v2_path_style="legacy")),
        *([tenant(SINCH, v1, sinch.settings(max_retries=2))] if sinch is not None else []),
        *([tenant(TELESIGN, v1, telesign.settings(max_retries=2))] if telesign is not None else []),
    )


@asynccontextmanager
async def running_gateway(
    tmp_path: Any,
    *,
    store_url: str | None = None,
    public_url: bool = True,
    tenant_overrides: Mapping[str, Any] | None = None,
    configure: Callable[[Config], Config] | None = None,
    sweep_interval: float = 0.05,
    sinch: bool = False,
    telesign: bool = False,
    allow_anonymous_control: bool = False,
    resolver: AbstractResolver | None = None,
) -> AsyncIterator[Harness]:
    watson = FakeWatson()
    watson_runner, watson_url = await serve(watson)
    try:
        async with serve_fake_twilio() as twilio, contextlib.AsyncExitStack() as stack:
            fake_sinch = await stack.enter_async_context(serve_fake_sinch()) if sinch else None
            fake_telesign = await stack.enter_async_context(serve_fake_telesign()) if telesign else None
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            config = Config(
                tenants=tenants(twilio, watson_url, fake_sinch, fake_telesign, **(tenant_overrides or {})),
                public_url=url if public_url else None,
                store_url=store_url or f"sqlite:///{tmp_path / 'gateway.db'}",
                media=MediaPolicy(check_size=False),
                latency_reporting_threshold_ms=1000,
                # The tenants have no control credentials: their REST API is closed unless a test opens it.
                allow_anonymous_control=allow_anonymous_control,
            )
            if configure is not None:
                config = configure(config)
            # Media and callback hosts are resolved by the gateway: never by this machine's DNS in tests.
            app = create_app(config, sweep_interval=sweep_interval, resolver=resolver or harness_resolver())
            # As `sms-gateway serve` listens: its connection deadlines and JSON answers to unparsable requests.
            listener = await listen(app, config, "127.0.0.1", port, shutdown_timeout=1.0)
            try:
                async with aiohttp.ClientSession() as http:
                    yield Harness(config, app, url, http, twilio, watson, watson_url, fake_sinch, fake_telesign)
            finally:
                await listener.close()
    finally:
        await watson_runner.cleanup()
