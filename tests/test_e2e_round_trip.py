"""An MMS round trip per engine, through real HTTP: Twilio webhook -> gateway -> engine -> Twilio REST."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.watson import text_output
from tests.harness import SOE, USER, V1, V2, V2OLD, inbound_form, running_gateway, twilio_media

PHOTOS = [(twilio_media(1), "image/jpeg"), (twilio_media(2), "image/png")]
REPLY_MEDIA = ["https://cdn.example.com/claim/receipt.png", "https://cdn.example.com/claim/next-steps.gif"]


def v1_send_media_dialog(text: str, context: dict[str, Any]) -> dict[str, Any]:
    if context.get("smsMedia"):
        return {
            "output": text_output(
                f"Thanks, {len(context['smsMedia'])} photos received.",
                smsAction={"command": "smsActSendMedia", "parameters": {"mediaURL": REPLY_MEDIA}},
            )
        }
    return {"output": text_output(f"You said: {text}")}


def v2_send_media_dialog(text: str, user_defined: dict[str, Any]) -> dict[str, Any]:
    generic: list[dict[str, Any]] = [{"response_type": "text", "text": f"You said: {text}"}]
    if user_defined.get("smsMedia"):
        generic = [
            {"response_type": "text", "text": f"Thanks, {len(user_defined['smsMedia'])} photos received."},
            {
                "response_type": "user_defined",
                "user_defined": {"smsAction": {"command": "smsActSendMedia", "parameters": {"mediaURL": REPLY_MEDIA}}},
            },
        ]
    return {"output": {"generic": generic}}


@pytest.mark.parametrize("tenant", [V1, SOE, V2, V2OLD])
async def test_mms_round_trip(tmp_path: Path, tenant: str) -> None:
    async with running_gateway(tmp_path) as gw:
        gw.watson.v1_dialog = v1_send_media_dialog
        gw.watson.v2_dialog = v2_send_media_dialog
        await gw.sms("Here are the photos", PHOTOS, tenant=tenant)
        sent = await gw.wait_sent(1)
        mms = sent[0]
        assert (mms.to, mms.from_) == (USER, tenant)
        assert mms.body == "Thanks, 2 photos received."
        assert mms.media_urls == REPLY_MEDIA, "text and media go out as one MMS"
        assert mms.status_callback and mms.status_callback.startswith(gw.url + "/sms.receiver/twilio/status?mid=")

        kinds = {V1: ("v1",), SOE: ("soe",), V2: ("v2_message",), V2OLD: ("v2_message",)}[tenant]
        first = gw.watson.of_kind(*kinds)[0]
        expected_media = [{"mediaURL": url, "mediaContentType": ct} for url, ct in PHOTOS]
        if tenant in (V1, SOE):
            context = first.json["context"]
            assert first.json["input"]["text"] == "Here are the photos"
        else:
            context = first.json["context"]["skills"]["main skill"]["user_defined"]
            assert first.json["input"]["text"] == "Here are the photos"
            assert first.json["input"]["attachments"] == [{"url": u, "media_type": c} for u, c in PHOTOS]
        assert context["smsMedia"] == expected_media
        assert context["smsTenantPhoneNumber"] == tenant
        assert context["smsUserPhoneNumber"] == USER
        session_id = context["smsSessionID"]

        # The next turn, without media: smsMedia is [] (never the earlier turn's), same session.
        await gw.sms("and what now?", tenant=tenant)
        sent = await gw.wait_sent(2)
        assert sent[1].body == "You said: and what now?" and sent[1].media_urls == []
        second = gw.watson.of_kind(*kinds)[1]
        if tenant in (V1, SOE):
            context2 = second.json["context"]
            # The fake assigned conversation_id and system on the first turn: they must come back.
            assert "conversation_id" not in context
            assert isinstance(context2["conversation_id"], str) and context2["conversation_id"]
            assert context2["system"]["dialog_turn_counter"] == 1, "the engine's context is sent back"
        else:
            context2 = second.json["context"]["skills"]["main skill"]["user_defined"]
            assert second.path == first.path, "the v2 session is reused"
        assert context2["smsMedia"] == []
        assert context2["smsSessionID"] == session_id


async def test_v2_paths_by_style(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        await gw.sms("hi", tenant=V2)
        await gw.sms("hi", tenant=V2OLD, user="+15551230002")
        await gw.wait_sent(2)
        paths = sorted(r.path for r in gw.watson.of_kind("v2_session"))
        assert paths == ["/v2/assistants/A1/environments/E1/sessions", "/v2/assistants/A1/sessions"]
        assert all(r.query.get("version") for r in gw.watson.of_kind("v2_session", "v2_message"))


async def test_v2_expired_session_is_renewed_within_the_turn(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        await gw.sms("first", tenant=V2)
        await gw.wait_sent(1)
        gw.watson.expire_sessions()
        await gw.sms("second", tenant=V2)
        sent = await gw.wait_sent(2)
        assert sent[1].body == "You said: second"
        assert len(gw.watson.of_kind("v2_session")) == 2


async def test_webhook_is_acknowledged_before_the_engine_answers(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        slow_answer = {"output": text_output("finally"), "context": {}}
        gw.watson.fail(1, status=200, body=slow_answer, delay=1.5)
        started = time.perf_counter()
        status, body, headers = await gw.post_form(inbound_form("hi"))
        elapsed = time.perf_counter() - started
        assert status == 200 and headers["Content-Type"].startswith("text/xml")
        assert body == '<?xml version="1.0" encoding="UTF-8"?><Response />'
        assert elapsed < 1.0, f"acknowledged after {elapsed:.2f}s: it waited for the engine"
        assert gw.twilio.messages == []
        sent = await gw.wait_sent(1)
        assert sent[0].body == "finally"


async def test_turns_of_one_user_run_in_order(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        for i in range(8):
            await gw.sms(f"message {i}")
        await gw.wait_sent(8)
        await gw.settle()
        texts = [r.json["input"]["text"] for r in gw.watson.of_kind("v1")]
        assert texts == [f"message {i}" for i in range(8)]
        assert [m.body for m in gw.twilio.messages] == [f"You said: message {i}" for i in range(8)]


async def test_different_users_run_concurrently(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        for _ in range(4):
            gw.watson.fail(1, status=200, body={"output": text_output("slow"), "context": {}}, delay=0.5)
        started = time.perf_counter()
        await asyncio.gather(*(gw.sms("hi", user=f"+1555123100{i}") for i in range(4)))
        await gw.wait_sent(4)
        assert time.perf_counter() - started < 1.5, "four users' turns ran one after another"
