"""The same end-to-end scenarios for every provider, through real HTTP: the provider's signed webhook -> gateway
-> Watson v1 -> the provider's send API, and back with delivery statuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.telesign import description as telesign_description
from tests.fakes.watson import text_output
from tests.harness import USER, Harness, running_gateway
from tests.phones import Phone, inbound_sid, phone, wait_sent

PROVIDERS = ["twilio", "sinch", "telesign"]
PHOTO = ("https://media.example.com/claims/4711/photo-front.jpg", "image/jpeg")
REPLY_MEDIA = ["https://cdn.example.com/claim/receipt.png", "https://cdn.example.com/claim/next-steps.gif"]


def send_media_dialog(text: str, context: dict[str, Any]) -> dict[str, Any]:
    if context.get("smsMedia"):
        return {
            "output": text_output(
                f"Thanks, {len(context['smsMedia'])} photo received.",
                smsAction={"command": "smsActSendMedia", "parameters": {"mediaURL": REPLY_MEDIA}},
            )
        }
    return {"output": text_output(f"You said: {text}")}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sinch=True, telesign=True) as harness:
        harness.watson.v1_dialog = send_media_dialog
        yield harness


async def nothing_stored(gw: Harness, p: Phone) -> None:
    await asyncio.sleep(0.1)
    assert await gw.store.pending_inbound_count() == 0
    assert gw.watson.requests == [] and p.sent() == []


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_mms_in_and_mms_out(gw: Harness, provider: str) -> None:
    p = phone(gw, provider)
    await p.send("Here is the damage", [PHOTO])
    # The reply's two media go out within the provider's limits, in order: the text with the first media, or
    # (where an MMS carries no text) in a message of its own before them.
    per_message = p.outbound_media
    groups = [tuple(REPLY_MEDIA[i : i + per_message]) for i in range(0, len(REPLY_MEDIA), per_message)]
    text = "Thanks, 1 photo received."
    expected = (
        [(text, groups[0]), *(("", g) for g in groups[1:])]
        if p.outbound_media_with_text
        else [(text, ()), *(("", g) for g in groups)]
    )
    sent = await wait_sent(p, len(expected))
    assert [(m.text, m.media_urls) for m in sent] == expected
    assert {(m.to, m.from_) for m in sent} == {(USER, p.tenant)}
    assert all(m.our_id for m in sent), "the provider echoes our id back with delivery statuses"

    [first] = gw.v1_contexts()
    assert first["smsMedia"] == [{"mediaURL": PHOTO[0], "mediaContentType": "image/jpeg"}]
    assert (first["smsTenantPhoneNumber"], first["smsUserPhoneNumber"]) == (p.tenant, USER)
    assert gw.watson.of_kind("v1")[0].json["input"]["text"] == "Here is the damage"

    assert await p.report(sent[0], delivered=True) == 200
    # The next turn has no media: smsMedia is [], never the earlier turn's; the session goes on.
    await p.send("and what now?")
    later = await wait_sent(p, len(sent) + 1)
    assert later[-1].text == "You said: and what now?" and later[-1].media_urls == ()
    second = gw.v1_contexts()[1]
    assert second["smsMedia"] == [] and second["smsSessionID"] == first["smsSessionID"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_duplicate_deliveries_make_one_turn(gw: Harness, provider: str) -> None:
    p = phone(gw, provider)
    message_id = inbound_sid(provider)
    statuses = await asyncio.gather(*(p.post("only once", message_id=message_id) for _ in range(15)))
    assert set(statuses) == {200}, "every delivery is acknowledged"
    await wait_sent(p, 1)
    await gw.settle()
    assert await p.post("only once", message_id=message_id) == 200  # a retry after processing: still a duplicate
    await asyncio.sleep(0.2)
    await gw.settle()
    assert len(gw.watson.of_kind("v1")) == 1 and len(p.sent()) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_forged_or_misaddressed_webhooks_are_403_and_store_nothing(gw: Harness, provider: str) -> None:
    p = phone(gw, provider)
    assert await p.post("transfer all my money", tamper=True) == 403
    assert await p.post("hello?", to_unknown=True) == 403
    await nothing_stored(gw, p)


@pytest.mark.parametrize(
    ("provider", "code", "message"),
    [
        ("twilio", "30003", "handset unreachable"),
        ("sinch", "RECIPIENT_NOT_REACHABLE", "handset unreachable"),
        ("telesign", "3031", telesign_description(3031)),  # TeleSign's callbacks carry its own descriptions
    ],
)
async def test_an_undelivered_reply_reaches_the_engine_as_sms_error(
    gw: Harness, provider: str, code: str, message: str
) -> None:
    p = phone(gw, provider)
    await p.send("hi")
    [reply] = await wait_sent(p, 1)
    assert await p.report(reply, delivered=False, code=code, message=message) == 200
    assert await p.report(reply, delivered=False, code=code, message=message) == 200  # repeated
    await p.send("are you there?")
    await wait_sent(p, 2)
    second = gw.v1_contexts()[1]
    assert second["smsError"] == {"code": code, "message": message, "messageID": reply.our_id}
    await p.send("third")
    await wait_sent(p, 3)
    assert gw.v1_contexts()[2].get("smsError") is None, "an error is told once"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_media_to_a_user_without_mms_go_as_links_and_the_engine_hears_of_it(gw: Harness, provider: str) -> None:
    p = phone(gw, provider)
    uk_user = "+447700900123"  # outside every provider's MMS countries
    await p.send("Here is the damage", [PHOTO], user=uk_user)
    [reply] = await wait_sent(p, 1)
    assert reply.media_urls == () and reply.text == "\n".join(["Thanks, 1 photo received.", *REPLY_MEDIA])
    assert gw.metric("smsgw_mms_fallbacks_total", provider=provider) == 1
    await p.send("ok", user=uk_user)
    await wait_sent(p, 2)
    second = gw.v1_contexts()[1]
    assert second["smsMediaFallback"] is True and second.get("smsError") is None
    assert second["smsMediaFallbackInfo"]["code"] == "mmsUnavailable"
    assert second["smsMediaFallbackInfo"]["messageID"] == reply.our_id
    await p.send("and again", user=uk_user)
    await wait_sent(p, 3)
    assert "smsMediaFallback" not in gw.v1_contexts()[2], "told once, then removed from the context"
