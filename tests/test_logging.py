"""Every log line is one JSON object, whoever logs it (our code, aiohttp, asyncio, any stdlib logger); what a
client did wrong is not logged as the gateway's error; phone numbers are redacted in free text too."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from sms_gateway.config.model import Credentials
from sms_gateway.logs import configure_logging, redact_numbers_in_text, reset_logging
from sms_gateway.web.rejections import RejectionLog
from tests.harness import USER, inbound_form, running_gateway
from tests.phones import SinchPhone, TeleSignPhone


class Logs:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def configure(self, level: str = "info", redact_numbers: bool = True) -> None:
        configure_logging(level, redact_numbers=redact_numbers, stream=self.stream)

    def lines(self) -> list[dict[str, Any]]:
        for handler in logging.getLogger().handlers:
            handler.flush()  # ours writes the lines batched on the event loop
        raw = [line for line in self.stream.getvalue().splitlines() if line.strip()]
        return [json.loads(line) for line in raw]  # every line is JSON, or this fails


@pytest.fixture
def logs() -> Iterator[Logs]:
    captured = Logs()
    captured.configure()
    try:
        yield captured
    finally:
        reset_logging()


async def test_aiohttp_refusing_a_malformed_request_is_one_json_line_at_info(tmp_path: Path, logs: Logs) -> None:
    async with running_gateway(tmp_path) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: gateway\r\nBad Header\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.")
        writer.close()
    lines = logs.lines()
    # aiohttp's own "Error handling request" (or, served by `listen`, our bad_http_request) as one line
    refused = [line for line in lines if "Bad Header" in json.dumps(line)]
    assert len(refused) == 1 and refused[0]["level"] == "info" and "exception" not in refused[0]
    assert not [line for line in lines if line["level"] in ("error", "critical")]


async def test_a_client_hanging_up_mid_body_is_info_without_a_traceback(tmp_path: Path, logs: Logs) -> None:
    async with running_gateway(tmp_path) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /sms.receiver/SmsRecv HTTP/1.1\r\nHost: gateway\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\nFrom=%2B1"
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        for _ in range(100):
            if any(line["event"] == "client_disconnected" for line in logs.lines()):
                break
            await asyncio.sleep(0.02)
    lines = logs.lines()
    (gone,) = [line for line in lines if line["event"] == "client_disconnected"]
    assert gone["level"] == "info" and gone["path"] == "/sms.receiver/SmsRecv"
    assert not [line for line in lines if line["level"] in ("error", "critical") or "exception" in line]


def test_stdlib_loggers_write_one_json_line_each_with_the_traceback_as_a_field(logs: Logs) -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=True)
    logging.getLogger().warning("a root warning about %s", "something")
    logging.getLogger("some.library").info("an info line")
    logging.getLogger("aiohttp.access").info('127.0.0.1 "GET /sms.gateway/sessions?user=+15551230001"')
    assert len(logs.stream.getvalue().splitlines()) == 3
    task, root, library = logs.lines()
    assert task["logger"] == "asyncio" and task["level"] == "error" and task["event"].startswith("Task exception")
    assert "ValueError: boom" in task["exception"] and "Traceback" in task["exception"]
    assert root["event"] == "a root warning about something" and root["level"] == "warning" and "timestamp" in root
    assert library["logger"] == "some.library" and library["level"] == "info"


def test_the_level_applies_to_stdlib_loggers(logs: Logs) -> None:
    logs.configure("warning")
    logging.getLogger("asyncio").info("not shown")
    logging.getLogger("asyncio").warning("shown")
    assert [line["event"] for line in logs.lines()] == ["shown"]


def test_phone_numbers_in_free_text_are_redacted(logs: Logs) -> None:
    log = structlog.get_logger("sms_gateway.test")
    log.warning(
        "send_failed",
        error="The 'To' number +15551230001 is not a valid phone number",
        details=["sent from 15005550001", {"note": "call +1 (555) 123-0002 or 555-123-0003"}],
    )
    logging.getLogger("some.library").warning("retrying +447700900123")
    try:
        raise ValueError("no route to +15551230004")
    except ValueError:
        log.exception("turn_failed")
    raw = logs.stream.getvalue()
    for number in ("5551230001", "5005550001", "123-0002", "123-0003", "7700900123", "5551230004"):
        assert number not in raw
    failed, library, turn = logs.lines()
    assert failed["error"] == "The 'To' number ***01 is not a valid phone number"
    assert failed["details"] == ["sent from ***01", {"note": "call ***02 or ***03"}]
    assert library["event"] == "retrying ***23" and "***04" in turn["exception"]


@pytest.mark.parametrize(
    "text",
    [
        "Twilio error 21211 at 2026-12-07T06:14:52.833339Z",
        "short code 12345, port 9080, 3 of 10 retries, 127.0.0.1:9080",
        "message SM0123456789abcdef0123456789abcdef, reference 0123456789ABCDEF0123456789ABCDEF",
        "took 0.123456789012 s; session 6f1c0e1e-8a3f-4b7e-9d2a-1234567890ab",
    ],
)
def test_text_without_phone_numbers_is_left_alone(text: str) -> None:
    assert redact_numbers_in_text(text) == text


def test_free_text_is_kept_when_the_operator_asks(logs: Logs) -> None:
    logs.configure(redact_numbers=False)
    structlog.get_logger("t").warning("send_failed", error="The 'To' number +15551230001 is not valid")
    assert logs.lines()[0]["error"] == "The 'To' number +15551230001 is not valid"


def rejected(logs: Logs) -> list[dict[str, Any]]:
    return [line for line in logs.lines() if line["event"] == "webhook_rejected"]


async def test_a_bad_twilio_signature_is_logged_once_with_the_url_checked_and_the_fix(
    tmp_path: Path, logs: Logs
) -> None:
    async with running_gateway(tmp_path) as gw:
        for _ in range(3):
            status, _, _ = await gw.post_form(inbound_form("hi"), signature="RSOYDt4T1cUTdK1PDd93/VVr8B8=")
            assert status == 403
    (line,) = rejected(logs)
    assert line["level"] == "warning" and line["outcome"] == "bad_signature" and line["route"] == "inbound"
    assert f"checked against the URL {gw.url}/sms.receiver/SmsRecv" in line["hint"]
    assert "set PUBLIC_URL to the URL configured at Twilio" in line["hint"]
    assert line["tenant"] == "***01"
    raw = logs.stream.getvalue()
    assert "RSOYDt4T1cUTdK1PDd93" not in raw and gw.twilio.auth_token not in raw


async def test_an_unknown_to_is_logged_once_with_the_configured_numbers_redacted(tmp_path: Path, logs: Logs) -> None:
    async with running_gateway(tmp_path) as gw:
        for to in ("5005550001", "+19998887777"):  # a tenant number without its country code, then a stranger
            status, _, _ = await gw.post_form(inbound_form("hi", tenant=to))
            assert status == 403
    (line,) = rejected(logs)  # one cause: the second refusal is counted, not logged
    assert line["level"] == "warning" and line["outcome"] == "unknown_tenant"
    assert "the Twilio tenants' numbers are ***01, ***02, ***03, ***04" in line["hint"]
    assert "E.164" in line["hint"]
    raw = logs.stream.getvalue()
    assert "5005550001" not in raw and "9998887777" not in raw


async def test_bad_basic_credentials_are_logged_once_without_them_and_the_challenge_not_at_all(
    tmp_path: Path, logs: Logs
) -> None:
    creds = Credentials("twilio-hook", "s3cret-hook-pass")
    async with running_gateway(tmp_path, tenant_overrides={"webhook_credentials": creds}) as gw:
        status, _, _ = await gw.post_form(inbound_form("hi"))
        assert status == 401  # the challenge a provider expects: not a rejection to report
        assert rejected(logs) == []
        wrong = "Basic " + base64.b64encode(b"twilio-hook:guess").decode()
        for _ in range(2):
            status, _, _ = await gw.post_form(inbound_form("hi"), headers={"Authorization": wrong})
            assert status == 403
    (line,) = rejected(logs)
    assert line["outcome"] == "unauthorized" and line["tenant"] == "***01" and "webHookCredentials" in line["hint"]
    raw = logs.stream.getvalue()
    assert "twilio-hook" not in raw and "guess" not in raw and "s3cret" not in raw


async def test_sinch_and_telesign_signatures_are_logged_with_their_own_hints(tmp_path: Path, logs: Logs) -> None:
    async with running_gateway(tmp_path, sinch=True, telesign=True) as gw:
        sinch, telesign = SinchPhone(gw), TeleSignPhone(gw)
        status, _ = await sinch.fake.post_webhook(
            gw.http, sinch.url, sinch._event("hi", None, USER, None), secret="not-the-secret"
        )
        assert status == 403
        status, _ = await telesign.fake.post_callback(
            gw.http,
            telesign.url,
            telesign.callback("hi", None, USER),
            api_key="T3RoZXIga2V5IG9mIGFub3RoZXIgY3VzdG9tZXI=",
        )
        assert status == 403
    by_route = {line["route"]: line for line in rejected(logs)}
    assert by_route["sinch"]["outcome"] == "bad_signature" and "webhookSecret" in by_route["sinch"]["hint"]
    assert by_route["telesign"]["outcome"] == "bad_signature" and "apiKey" in by_route["telesign"]["hint"]
    assert "Twilio" not in json.dumps(by_route)


def test_a_cause_is_logged_again_after_the_interval_with_the_count_refused_since() -> None:
    now = [0.0]
    rejections = RejectionLog(interval=300, clock=lambda: now[0])
    with structlog.testing.capture_logs() as captured:
        for second in (0, 1, 2, 299, 301, 302):
            now[0] = second
            rejections.refused("inbound", "bad_signature", "+15005550001", reason="invalid")
        rejections.refused("inbound", "bad_signature", "+15005550002", reason="invalid")  # another tenant
    assert [(line["tenant"], line["refused_since_last_logged"]) for line in captured] == [
        ("+15005550001", 0),
        ("+15005550001", 3),
        ("+15005550002", 0),
    ]
