"""Health, readiness, metrics and logs: phone numbers redacted by default, secrets never."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
import structlog

from sms_gateway.config.model import Config
from sms_gateway.logs import configure_logging, redact_number, reset_logging
from sms_gateway.store.base import StoreUnavailable
from tests.fakes.watson import text_output
from tests.harness import USER, running_gateway, twilio_media


async def test_health_ready_and_metrics(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        async with gw.http.get(gw.url + "/health") as response:
            assert response.status == 200 and (await response.json())["status"] == "ok"
        async with gw.http.get(gw.url + "/ready") as response:
            assert response.status == 200
        await gw.sms("hello", [(twilio_media(1), "image/jpeg")])
        await gw.wait_sent(1)
        await gw.settle()
        async with gw.http.get(gw.url + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        for line in (
            'smsgw_webhooks_total{outcome="accepted",route="inbound"} 1.0',
            'smsgw_turns_total{outcome="ok"} 1.0',
            'smsgw_sends_total{kind="sms",outcome="sent"} 1.0',
            'smsgw_jobs_total{kind="send",outcome="done"} 1.0',
        ):
            assert line in text, line
        assert 'smsgw_engine_latency_seconds_count{engine="watson_v1"} 1.0' in text
        assert 'smsgw_provider_latency_seconds_count{provider="twilio"} 1.0' in text


async def test_ready_says_the_store_is_unreachable_without_saying_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    configure_logging("info", redact_numbers=True, stream=stream)
    try:
        async with running_gateway(tmp_path) as gw:

            async def unreachable() -> None:
                raise StoreUnavailable("redis: ConnectionError: Error 111 connecting to 10.20.30.40:6379")

            monkeypatch.setattr(gw.store, "ping", unreachable)
            async with gw.http.get(gw.url + "/ready") as response:
                status, body = response.status, await response.json()
    finally:
        reset_logging()
    assert status == 503 and body == {"status": "store unreachable"}
    logged = [json.loads(line) for line in stream.getvalue().splitlines() if "store_unreachable" in line]
    assert logged and "10.20.30.40:6379" in logged[0]["error"]  # the operator finds the address in the log


async def test_logs_are_json_with_ids_numbers_redacted_and_no_secrets(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("debug", redact_numbers=True, stream=stream)
    try:
        async with running_gateway(tmp_path) as gw:
            await gw.sms("my account number is 12345")
            await gw.wait_sent(1)
            await gw.settle()
            secrets = [gw.twilio.auth_token]
    finally:
        reset_logging()
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    events = {line["event"] for line in lines}
    assert {"inbound_accepted", "session_created", "message_sent"} <= events
    raw = stream.getvalue()
    assert USER not in raw and USER.lstrip("+") not in raw, "phone numbers are redacted"
    assert "my account number" not in raw, "message text is logged only with ENABLE_TRANSCRIPTION_MESSAGES"
    for secret in secrets:
        assert secret not in raw
    sent = next(line for line in lines if line["event"] == "message_sent")
    assert sent["session_id"] and sent["message_id"] and sent["user"] == redact_number(USER)
    accepted = next(line for line in lines if line["event"] == "inbound_accepted")
    assert accepted["message_id"].startswith("SM")


def test_numbers_shown_when_the_operator_asks() -> None:
    stream = io.StringIO()
    configure_logging("info", redact_numbers=False, stream=stream)
    try:
        structlog.get_logger("t").info("x", user=USER, password="hunter2")
    finally:
        reset_logging()
    line = json.loads(stream.getvalue())
    assert line["user"] == USER and line["password"] == "****"
    assert redact_number("+15551230001") == "***01"


async def test_latency_reporting_threshold_warns_for_slow_engine_and_provider(tmp_path: Path) -> None:
    def threshold(config: Config) -> Config:
        return dataclasses.replace(config, latency_reporting_threshold_ms=100)

    stream = io.StringIO()
    configure_logging("info", redact_numbers=True, stream=stream)
    try:
        async with running_gateway(tmp_path, configure=threshold) as gw:
            gw.watson.fail(1, status=200, body={"output": text_output("slow"), "context": {}}, delay=0.3)
            gw.twilio.delay_next(1, seconds=0.3)
            await gw.sms("hi")
            await gw.wait_sent(1)
            await gw.settle()
    finally:
        reset_logging()
    warnings = [json.loads(line) for line in stream.getvalue().splitlines() if '"latency_threshold_exceeded"' in line]
    assert sorted(w["call"] for w in warnings) == ["engine", "provider"]
    assert all(w["latency_ms"] >= 300 and w["threshold_ms"] == 100 and w["session_id"] for w in warnings)
