"""A Voice Gateway simulator: the pipe side of a phone call with SMS integration.

As a client it does what Voice Gateway does during a call (SMS_GW_URL, SMS_GW_USERNAME/PASSWORD): create a
pipe, send `vgwActSendSMS` messages through it, delete it when the call ends. As a server it receives what the
gateway POSTs to the pipe's `callbackURL`: the caller's SMS/MMS replies (relays) and failure events, which it
checks against the SPEC's shape and records. It can be told to answer the next requests with an error (503),
as a Voice Gateway that is briefly down would. It listens on 127.0.0.1, where a gateway sends callbacks only when
its operator allows it (`allow_vgw_callbacks`).

    async with serve_fake_vgw() as vgw:
        call = await vgw.start_call(gateway_url, tenant, user, auth=("vgw", "secret"))
        await call.send_sms("Here is your form", media=["https://example.com/form.pdf"])
        relay = (await vgw.wait_relays(1))[0]
        await call.hang_up()
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from sms_gateway.config.model import Config
from tests.fakes.scripting import Script

JSON = dict[str, Any]
VGW_HOST = "127.0.0.1"
CALLBACK_PATH = "/vgw/sms/{call_id}"
_RELAY_KEYS = {"smsPipeID", "tenantPhoneNumber", "userPhoneNumber", "smsMessage", "smsMedia"}
_EVENT_KEYS = {"smsPipeID", "tenantPhoneNumber", "userPhoneNumber", "event", "messageID", "error"}


def allow_vgw_callbacks(config: Config) -> Config:
    """The config of an operator whose Voice Gateway runs beside the gateway: its loopback address is listed in
    `pipes.allowedCallbackHosts` (loopback is refused otherwise)."""
    return dataclasses.replace(config, pipe_allowed_callback_hosts=(*config.pipe_allowed_callback_hosts, VGW_HOST))


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


@dataclass
class Received:
    call_id: str
    body: Any
    status: int  # what the simulator answered


@dataclass
class Call:
    """One phone call's pipe, driven as Voice Gateway drives it."""

    vgw: FakeVoiceGateway
    http: aiohttp.ClientSession
    gateway_url: str
    call_id: str
    pipe_id: str
    headers: dict[str, str]
    created: JSON = field(default_factory=dict)

    async def send_sms(self, message: str | None = None, media: str | list[str] | None = None) -> tuple[int, JSON]:
        """What Voice Gateway does for `vgwActSendSMS`."""
        body: JSON = {}
        if message is not None:
            body["smsMessage"] = message
        if media is not None:
            body["smsMediaURL"] = media
        url = f"{self.gateway_url}/sms.gateway/smsPipe/{self.pipe_id}/messages"
        async with self.http.post(url, json=body, headers=self.headers) as response:
            return response.status, await response.json()

    async def hang_up(self) -> int:
        async with self.http.delete(
            f"{self.gateway_url}/sms.gateway/smsPipe/{self.pipe_id}", headers=self.headers
        ) as response:
            return response.status


class FakeVoiceGateway:
    def __init__(self) -> None:
        self.received: list[Received] = []  # every request, including the ones answered with an error
        self.problems: list[str] = []  # bodies that do not have the SPEC's shape
        self.base_url: str | None = None
        self._script: Script[tuple[int, str | None]] = Script()  # (status, Retry-After)
        self._calls = 0

    # -- scripting
    def fail_next(self, count: int = 1, *, status: int = 503, retry_after: str | None = None) -> None:
        self._script.fail((status, retry_after), count)

    # -- what arrived
    @property
    def relays(self) -> list[JSON]:
        return [r.body for r in self.received if r.status == 200 and "event" not in r.body]

    @property
    def events(self) -> list[JSON]:
        return [r.body for r in self.received if r.status == 200 and "event" in r.body]

    def callback_url(self, call_id: str, host: str | None = None) -> str:
        """Where the simulator receives a call's relays; `host`: a name the test resolves to it instead."""
        assert self.base_url is not None, "use serve_fake_vgw()"
        base = self.base_url if host is None else self.base_url.replace(VGW_HOST, host)
        return base + CALLBACK_PATH.format(call_id=call_id)

    async def wait_relays(self, count: int, timeout: float = 10.0) -> list[JSON]:
        await self._wait(lambda: len(self.relays) >= count, timeout, f"{count} relays")
        return self.relays

    async def wait_events(self, count: int, timeout: float = 10.0) -> list[JSON]:
        await self._wait(lambda: len(self.events) >= count, timeout, f"{count} events")
        return self.events

    async def _wait(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert done(), f"the simulator did not receive {what}: {self.received}"

    # -- client side: a call
    async def start_call(
        self,
        http: aiohttp.ClientSession,
        gateway_url: str,
        tenant: str,
        user: str,
        *,
        auth: tuple[str, str] | None = None,
        expiration: int | None = None,
        callback_host: str | None = None,
    ) -> Call:
        self._calls += 1
        call_id = f"call-{self._calls}"
        body: JSON = {
            "tenantPhoneNumber": tenant,
            "userPhoneNumber": user,
            "callbackURL": self.callback_url(call_id, callback_host),
        }
        if expiration is not None:
            body["expirationInterval"] = expiration
        headers = {"Authorization": basic_auth(*auth)} if auth else {}
        async with http.post(f"{gateway_url}/sms.gateway/smsPipe", json=body, headers=headers) as response:
            created = await response.json()
            assert response.status == 201, created
        return Call(self, http, gateway_url, call_id, created["smsPipeID"], headers, created)

    # -- server side
    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(CALLBACK_PATH, self._callback)
        return app

    async def _callback(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        try:
            body = await request.json()
        except ValueError:
            body = None
        scripted = self._script.next_error()
        if scripted is not None:
            status, retry_after = scripted
            self.received.append(Received(call_id, body, status))
            headers = {"Retry-After": retry_after} if retry_after is not None else None
            return web.json_response({"error": "scripted failure"}, status=status, headers=headers)
        problem = self._check(body)
        if problem is not None:
            self.problems.append(problem)
            self.received.append(Received(call_id, body, 400))
            return web.json_response({"error": problem}, status=400)
        self.received.append(Received(call_id, body, 200))
        return web.json_response({"status": "received"})

    @staticmethod
    def _check(body: Any) -> str | None:
        if not isinstance(body, dict):
            return "body is not a JSON object"
        expected = _EVENT_KEYS if "event" in body else _RELAY_KEYS
        missing = expected - set(body)
        if missing:
            return f"missing {sorted(missing)}"
        if "event" in body:
            if body["event"] != "smsFailed" or not {"code", "message"} <= set(body["error"]):
                return "bad failure event"
            return None
        media = body["smsMedia"]
        if not isinstance(media, list) or not all(
            isinstance(m, dict) and set(m) == {"mediaURL", "mediaContentType"} for m in media
        ):
            return "smsMedia must be a list of {mediaURL, mediaContentType}"
        return None


@asynccontextmanager
async def serve_fake_vgw() -> AsyncIterator[FakeVoiceGateway]:
    vgw = FakeVoiceGateway()
    runner = web.AppRunner(vgw.make_app(), shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, VGW_HOST, 0).start()
        host, port = runner.addresses[0][:2]
        vgw.base_url = f"http://{host}:{port}"
        yield vgw
    finally:
        await runner.cleanup()
