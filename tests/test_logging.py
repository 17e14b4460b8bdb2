"""Every log line is one JSON object, whoever logs it (our code, aiohttp, asyncio, any stdlib logger); what a
client did wrong is not logged as the gateway's error; phone numbers are redacted in free text too."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from sms_gateway.logs import configure_logging, redact_numbers_in_text, reset_logging
from tests.harness import running_gateway


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
        writer.write(b"POST /sms.receiver/SmsRecv HTTP/1.1\r\nHost: gateway\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\nFrom=%2B1")
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
    log.warning("send_failed", error="The 'To' number +15551230001 is not a valid phone number",
                details=["sent from 15005550001", {"note": "call +1 (555) 123-0002 or 555-123-0003"}])
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
