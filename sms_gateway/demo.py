"""`sms-gateway demo`: one signed sample MMS through the real HTTP path, with no account and no other process.

It starts the gateway (SQLite store in a temporary folder, the built-in echo engine) and a local stand-in for
Twilio's Messages API, posts a signed MMS webhook the way Twilio would, then prints what the engine received
and the MMS that would have gone to the phone.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from sms_gateway.app import create_app
from sms_gateway.config.model import (
    Config,
    EngineConfig,
    MediaPolicy,
    ProviderConfig,
    TenantConfig,
)
from sms_gateway.engines.echo import EchoEngine
from sms_gateway.logs import configure_logging
from sms_gateway.sink import Sink

TENANT = "+15005550006"
USER = "+15551234567"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "demo-auth-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_mms(message_sid: str) -> dict[str, str]:
    media = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}/Media"
    return {
        "ToCountry": "US",
        "MessageSid": message_sid,
        "SmsMessageSid": message_sid,
        "SmsSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": USER,
        "To": TENANT,
        "Body": "Here are the photos of the damage",
        "NumMedia": "2",
        "NumSegments": "1",
        "MediaUrl0": f"{media}/ME{secrets.token_hex(16)}",
        "MediaContentType0": "image/jpeg",
        "MediaUrl1": f"{media}/ME{secrets.token_hex(16)}",
        "MediaContentType1": "image/png",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }


def demo_config(gateway_url: str, sink_url: str, db_path: Path) -> Config:
    tenant = TenantConfig(
        phone_number=TENANT,
        description="demo tenant (echo engine)",
        engine=EngineConfig(kind="echo"),
        provider=ProviderConfig(url=sink_url, username=ACCOUNT_SID, password=AUTH_TOKEN),
        allow_session_create_via_sms=True,
    )
    return Config(
        tenants=(tenant,),
        public_url=gateway_url,
        store_url=f"sqlite:///{db_path}",
        http_host="127.0.0.1",
        # The sample's media live on api.twilio.com, which this machine may not reach: skip the HEAD size check.
        media=MediaPolicy(check_size=False),
    )


async def _demo(out: list[str]) -> bool:
    sink = Sink()
    echo = EchoEngine()
    gateway_port, sink_port = free_port(), free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    with tempfile.TemporaryDirectory(prefix="sms-gateway-demo-") as tmp:
        config = demo_config(gateway_url, f"http://127.0.0.1:{sink_port}", Path(tmp) / "demo.db")
        sink_runner = web.AppRunner(sink.app())
        gateway_runner = web.AppRunner(create_app(config, engine_factory=lambda cfg, http: echo))
        await sink_runner.setup()
        await web.TCPSite(sink_runner, "127.0.0.1", sink_port).start()
        await gateway_runner.setup()
        await web.TCPSite(gateway_runner, "127.0.0.1", gateway_port).start()
        try:
            return await _round_trip(gateway_url, sink, echo, out)
        finally:
            await gateway_runner.cleanup()
            await sink_runner.cleanup()


async def _round_trip(gateway_url: str, sink: Sink, echo: EchoEngine, out: list[str]) -> bool:
    webhook = f"{gateway_url}/sms.receiver/SmsRecv"
    form = sample_mms("MM" + secrets.token_hex(16))
    signature = RequestValidator(AUTH_TOKEN).compute_signature(webhook, form)
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        async with http.post(webhook, data=form, headers={"X-Twilio-Signature": signature}) as response:
            ack = await response.text()
            ack_ms = (time.perf_counter() - started) * 1000
        out.append(f"1. Twilio -> gateway: POST {webhook} (signed MMS, 2 media)")
        out.append(f"   answered {response.status} in {ack_ms:.1f} ms: {ack}")
        try:
            await asyncio.wait_for(sink.arrived.wait(), 10)
        except TimeoutError:
            pass
        if echo.last_request is None or not sink.messages:
            out.append("the turn did not complete within 10 s")
            return False
        out.append("2. gateway -> engine: the turn's input text and state variables (IBM's names)")
        # As a v1 engine gets them: a None value means "not set this turn" and is left out.
        state = {key: value for key, value in echo.last_request.state.items() if value is not None}
        out.append(_indent(json.dumps({"input": {"text": echo.last_request.text}, "context": state}, indent=2)))
        sent = sink.messages[0]
        out.append("3. gateway -> Twilio Messages API: the MMS that would have gone to the phone")
        out.append(_indent(json.dumps({"To": sent.to, "From": sent.from_, "Body": sent.body,
                                       "MediaUrl": sent.media_urls, "StatusCallback": sent.status_callback},
                                      indent=2)))
        if sent.status_callback:
            status = {"MessageSid": sent.sid, "MessageStatus": "delivered", "AccountSid": ACCOUNT_SID,
                      "From": sent.from_, "To": sent.to, "ApiVersion": "2010-04-01"}
            signature = RequestValidator(AUTH_TOKEN).compute_signature(sent.status_callback, status)
            async with http.post(sent.status_callback, data=status,
                                 headers={"X-Twilio-Signature": signature}) as response:
                out.append(f"4. Twilio -> gateway: delivery status 'delivered' answered {response.status}")
    return response.status == 200 and len(sent.media_urls) == 2


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())


def run_demo(show_logs: bool = True) -> int:
    configure_logging("info" if show_logs else "critical", redact_numbers=True, stream=sys.stderr)
    out: list[str] = []
    ok = asyncio.run(_demo(out))
    print("\n".join(out))
    print("demo round trip: OK" if ok else "demo round trip: FAILED")
    return 0 if ok else 1
