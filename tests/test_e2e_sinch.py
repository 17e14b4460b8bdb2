"""Sinch's own end-to-end cases, through real HTTP: a gateway with Twilio and Sinch tenants, token expiry, replayed
and stale callbacks, MMS falling back to SMS, and sends whose outcome is unknown."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sms_gateway.config.model import Config, TenantConfig
from tests.fakes.sinch import inbound_event, new_ulid, serialize, sign_webhook
from tests.harness import SINCH, USER, V1, Harness, running_gateway
from tests.phones import SinchPhone, TwilioPhone, wait_sent

CALLBACKS = "/sms.receiver/sinch"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sinch=True, allow_anonymous_control=True) as harness:
        yield harness


def sinch_reply_timeout(read_timeout_ms: int) -> Callable[[Config], Config]:
    """A `configure` for running_gateway: the Sinch tenant gives up on an answer after `read_timeout_ms`."""

    def configure(config: Config) -> Config:
        def shortened(t: TenantConfig) -> TenantConfig:
            return dataclasses.replace(t, provider=dataclasses.replace(t.provider, read_timeout_ms=read_timeout_ms))

        return dataclasses.replace(
            config, tenants=tuple(shortened(t) if t.phone_number == SINCH else t for t in config.tenants)
        )

    return configure


async def test_a_twilio_and_a_sinch_tenant_in_one_gateway(gw: Harness) -> None:
    twilio, sinch = TwilioPhone(gw, V1), SinchPhone(gw)
    await asyncio.gather(twilio.send("via twilio"), sinch.send("via sinch"))
    [by_twilio] = await wait_sent(twilio, 1)
    [by_sinch] = await wait_sent(sinch, 1)
    assert (by_twilio.text, by_twilio.from_) == ("You said: via twilio", V1)
    assert (by_sinch.text, by_sinch.from_) == ("You said: via sinch", SINCH)
    # Each tenant's reply went through its own provider only, and each turn knew its tenant.
    assert len(gw.twilio.messages) == 1 and gw.sinch is not None and len(gw.sinch.messages) == 1
    tenants = sorted(r.json["context"]["smsTenantPhoneNumber"] for r in gw.watson.of_kind("v1"))
    assert tenants == sorted([V1, SINCH])
    # A Twilio webhook for the Sinch tenant's number is not a webhook of that tenant.
    form_status = await TwilioPhone(gw, SINCH).post("wrong provider")
    assert form_status == 403


async def test_an_expired_token_is_refreshed_and_the_reply_sent_once(gw: Harness) -> None:
    sinch = SinchPhone(gw)
    await sinch.send("first")
    await wait_sent(sinch, 1)
    assert sinch.fake.token_requests == 1
    sinch.fake.expire_tokens()  # Sinch now answers 401 "token expired" to the cached token
    await sinch.send("second")
    sent = await wait_sent(sinch, 2)
    await gw.settle()
    assert [m.text for m in sent] == ["You said: first", "You said: second"]
    assert sinch.fake.token_requests == 2 and len(sinch.fake.messages) == 2


async def test_a_replayed_callback_is_refused_and_changes_nothing(gw: Harness) -> None:
    sinch = SinchPhone(gw)
    body = serialize(inbound_event(sinch.fake.app_id, USER.lstrip("+"), text="once", message_id=new_ulid()))
    headers = {**sign_webhook(sinch.fake.webhook_secret, body), "Content-Type": "application/json"}
    async with gw.http.post(sinch.url, data=body, headers=headers) as response:
        assert response.status == 200
    async with gw.http.post(sinch.url, data=body, headers=headers) as response:
        assert response.status == 403 and "already received" in await response.text()
    await wait_sent(sinch, 1)
    await gw.settle()
    assert len(gw.watson.of_kind("v1")) == 1 and len(sinch.sent()) == 1
    assert gw.metric("smsgw_webhooks_total", route="sinch", outcome="replayed") == 1


@pytest.mark.parametrize("age", [-400, 400])
async def test_a_stale_or_future_signature_is_refused(gw: Harness, age: int) -> None:
    sinch = SinchPhone(gw)
    event = inbound_event(sinch.fake.app_id, USER.lstrip("+"), text="old news")
    status, body = await sinch.fake.post_webhook(gw.http, sinch.url, event, timestamp=int(time.time()) - age)
    assert status == 403 and "timestamp" in body
    await asyncio.sleep(0.1)
    assert await gw.store.pending_inbound_count() == 0 and gw.watson.requests == []


async def test_mms_falling_back_to_sms_is_counted_and_told_not_reported_as_an_error(gw: Harness) -> None:
    sinch = SinchPhone(gw)
    await sinch.send("hi")
    [reply] = await wait_sent(sinch, 1)
    event = sinch.fake.deliver(
        reply.raw, "SWITCHING_CHANNEL", reason_code="RECIPIENT_NOT_REACHABLE", reason_description="MMS not reachable"
    )
    assert (await sinch.fake.post_webhook(gw.http, sinch.url, event))[0] == 200
    assert (await sinch.fake.post_webhook(gw.http, sinch.url, event))[0] == 200  # Sinch's retry: counted once
    assert (await sinch.report(reply, delivered=True)) == 200
    assert gw.metric("smsgw_delivery_statuses_total", status="switching_channel") == 1
    assert gw.metric("smsgw_delivery_statuses_total", status="delivered") == 1
    assert gw.metric("smsgw_mms_fallbacks_total", provider="sinch") == 1
    await sinch.send("still there?")
    await wait_sent(sinch, 2)
    context = gw.watson.of_kind("v1")[1].json["context"]
    assert context.get("smsError") is None and context["smsMediaFallback"] is True
    assert context["smsMediaFallbackInfo"] == {
        "code": "RECIPIENT_NOT_REACHABLE",
        "message": "MMS not reachable",
        "messageID": reply.our_id,
    }


async def test_a_reply_sinch_refuses_reaches_the_engine_as_sms_error(gw: Harness) -> None:
    sinch = SinchPhone(gw)
    sinch.fake.fail_next(1, 400, message="Invalid MMS_SENDER")
    await sinch.send("hi")
    await gw.settle()
    assert sinch.sent() == [] and sinch.fake.request_count == 1, "a refusal is not retried"
    await sinch.send("hello?")
    await wait_sent(sinch, 1)
    error = gw.watson.of_kind("v1")[1].json["context"]["smsError"]
    assert error["code"] == "400" and "Invalid MMS_SENDER" in error["message"]


async def test_a_throttled_send_is_retried_later(gw: Harness) -> None:
    sinch = SinchPhone(gw)
    sinch.fake.fail_next(1, 429, retry_after=0.2)
    await sinch.send("busy?")
    [reply] = await wait_sent(sinch, 1)
    assert reply.text == "You said: busy?" and sinch.fake.request_count == 2


async def test_a_send_whose_answer_was_lost_is_not_sent_twice(tmp_path: Path) -> None:
    """Sinch took the message but its answer came after our timeout: the next attempt finds it at Sinch (by our
    id in its metadata) instead of sending it again."""
    async with running_gateway(tmp_path, sinch=True, configure=sinch_reply_timeout(300)) as gw:
        sinch = SinchPhone(gw)
        sinch.fake.delay_next(1, 0.8)
        await sinch.send("slow")
        await wait_sent(sinch, 1)
        await gw.settle(timeout=15)
        assert len(sinch.fake.messages) == 1 and sinch.fake.request_count == 1
        assert sinch.fake.list_count >= 1, "the gateway asked Sinch before sending again"


async def test_a_reply_with_several_media_is_one_sinch_message_per_media(gw: Harness) -> None:
    """The REST API's one-off send: Sinch carries one media per message, so the text rides with the first."""
    sinch = SinchPhone(gw)
    media = [f"https://cdn.example.com/page-{n}.png" for n in range(3)]
    body = json.dumps(
        {"tenantPhoneNumber": SINCH, "userPhoneNumber": USER, "smsMessage": "Your documents", "smsMediaURL": media}
    ).encode()
    async with gw.http.post(
        gw.url + "/sms.gateway/messages", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 202, await response.text()
        assert len((await response.json())["messageIDs"]) == 3
    sent = await wait_sent(sinch, 3)
    assert [(m.text, m.media_urls) for m in sent] == [
        ("Your documents", (media[0],)),
        ("", (media[1],)),
        ("", (media[2],)),
    ]
    assert [m.raw.kind for m in sent] == ["card_message", "media_message", "media_message"]


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b"not json", "application/json", "JSON"),
        (b"[1, 2]", "application/json", "object"),
        (b"app_id=x", "application/x-www-form-urlencoded", "application/json"),
        (b'{"project_id": "p"}', "application/json", "app_id"),
    ],
)
async def test_malformed_callbacks_are_400_and_store_nothing(
    gw: Harness, body: bytes, content_type: str, fragment: str
) -> None:
    async with gw.http.post(gw.url + CALLBACKS, data=body, headers={"Content-Type": content_type}) as response:
        text = await response.text()
        assert response.status == 400 and fragment in text and "Traceback" not in text
    await asyncio.sleep(0.1)
    assert await gw.store.pending_inbound_count() == 0 and gw.watson.requests == []


async def test_a_malformed_message_of_a_known_app_is_400_after_its_signature(gw: Harness) -> None:
    sinch = SinchPhone(gw)
    event = inbound_event(sinch.fake.app_id, USER.lstrip("+"), text="x")
    del event["message"]["id"]
    status, body = await sinch.fake.post_webhook(gw.http, sinch.url, event)
    assert status == 400 and "message.id" in body
    unsigned = serialize(event)
    async with gw.http.post(sinch.url, data=unsigned, headers={"Content-Type": "application/json"}) as response:
        assert response.status == 403, "an unsigned request learns nothing about its body"
