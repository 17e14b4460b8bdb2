"""`sms-gateway demo [--provider NAME]`: one signed sample MMS through the real HTTP path, with no account and no
other process.

It starts the gateway (SQLite store in a temporary folder, the built-in echo engine) and the provider's sandbox
(a local stand-in for its send API), posts a signed MMS webhook the way the provider would, then prints what the
engine received, the engine's answer (its smsActSendMedia command), the messages that would have gone to the
phone, and reports one delivered. It prints no warning meant for a production gateway.
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

from sms_gateway.app import create_app
from sms_gateway.config.model import Config, Credentials, EngineConfig, MediaPolicy, ProviderConfig, TenantConfig
from sms_gateway.engines.echo import EchoEngine
from sms_gateway.logs import configure_logging
from sms_gateway.providers import DEFAULT_KIND, PROVIDER_TYPES
from sms_gateway.providers.sandbox import Sandbox

USER = "+15551234567"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_config(gateway_url: str, tenant_number: str, provider: ProviderConfig, db_path: Path) -> Config:
    tenant = TenantConfig(
        phone_number=tenant_number,
        description="demo tenant (echo engine)",
        engine=EngineConfig(kind="echo"),
        provider=provider,
        allow_session_create_via_sms=True,
        # The demo does not use the REST API: closed with credentials nobody knows, so the warning a production
        # gateway gives for a tenant without any is not printed here.
        control_credentials=Credentials("demo", secrets.token_urlsafe(16)),
    )
    return Config(
        tenants=(tenant,),
        public_url=gateway_url,
        store_url=f"sqlite:///{db_path}",
        http_host="127.0.0.1",
        # The sample's media live on the provider's hosts, which this machine may not reach: no HEAD size check.
        media=MediaPolicy(check_size=False),
    )


async def _demo(kind: str, out: list[str]) -> bool:
    sandbox = PROVIDER_TYPES[kind].sandbox()
    echo = EchoEngine()
    gateway_port, api_port = free_port(), free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    with tempfile.TemporaryDirectory(prefix="sms-gateway-demo-") as tmp:
        config = demo_config(
            gateway_url, sandbox.tenant_number, sandbox.settings(f"http://127.0.0.1:{api_port}"), Path(tmp) / "demo.db"
        )
        api_runner = web.AppRunner(sandbox.api())
        gateway_runner = web.AppRunner(create_app(config, engine_factory=lambda cfg, http: echo))
        await api_runner.setup()
        await web.TCPSite(api_runner, "127.0.0.1", api_port).start()
        await gateway_runner.setup()
        await web.TCPSite(gateway_runner, "127.0.0.1", gateway_port).start()
        try:
            return await _round_trip(gateway_url, sandbox, echo, out)
        finally:
            await gateway_runner.cleanup()
            await api_runner.cleanup()


async def _round_trip(gateway_url: str, sandbox: Sandbox, echo: EchoEngine, out: list[str]) -> bool:
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        answer = await sandbox.send_sample_mms(http, gateway_url, sandbox.tenant_number, USER)
        ack_ms = (time.perf_counter() - started) * 1000
        out.append(f"1. {sandbox.name} -> gateway: {answer.description}")
        out.append(f"   answered {answer.status} in {ack_ms:.1f} ms: {answer.body}")
        try:
            async with asyncio.timeout(10):
                await _all_media_sent(sandbox, answer.media_count)
        except TimeoutError:
            out.append("the turn did not complete within 10 s")
            return False
        if echo.last_request is None:
            out.append("the engine was not asked")
            return False
        out.append("2. gateway -> engine: the turn's input text and state variables (IBM's names)")
        # As a v1 engine gets them: a None value means "not set this turn" and is left out.
        state = {key: value for key, value in echo.last_request.state.items() if value is not None}
        out.append(_indent(json.dumps({"input": {"text": echo.last_request.text}, "context": state}, indent=2)))
        if echo.last_reply is not None:
            out.append(
                "3. engine -> gateway: its answer, as a Watson Assistant v1 dialog gives it (the smsAction "
                "smsActSendMedia sends the media back)"
            )
            out.append(_indent(json.dumps(echo.last_reply.raw, indent=2)))
        count = len(sandbox.sent)
        out.append(
            f"4. gateway -> {sandbox.api_name}: the {'MMS' if count == 1 else f'{count} messages'}"
            " that would have gone to the phone"
        )
        for message in sandbox.sent:
            out.append(_indent(json.dumps(message.shown, indent=2)))
        status = await sandbox.report_delivered(http, gateway_url, sandbox.tenant_number, sandbox.sent[0])
        if status is not None:
            out.append(f"5. {sandbox.name} -> gateway: delivery status 'delivered' answered {status}")
    return answer.status == 200 and status in (None, 200)


async def _all_media_sent(sandbox: Sandbox, media_count: int) -> bool:
    """True once the echo reply's messages carry every media of the sample (the provider may split them)."""
    while True:
        sandbox.arrived.clear()  # before counting: a message arriving after the count sets it again
        if sandbox.sent and sum(len(m.media_urls) for m in sandbox.sent) >= media_count:
            return True
        await sandbox.arrived.wait()


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())


def run_demo(kind: str = DEFAULT_KIND, show_logs: bool = True) -> int:
    configure_logging("info" if show_logs else "critical", redact_numbers=True, stream=sys.stderr)
    out: list[str] = []
    ok = asyncio.run(_demo(kind, out))
    print("\n".join(out))
    print("demo round trip: OK" if ok else "demo round trip: FAILED")
    return 0 if ok else 1
