"""TeleSign's own end-to-end cases, through real HTTP: one gateway with a tenant on each provider, TeleSign's timed
MMS-to-SMS fallback seen in metrics and in the engine's state, a sender that cannot send MMS, digest auth,
refusals and throttling."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sms_gateway.config.model import Config, TenantConfig
from tests.fakes.watson import text_output
from tests.harness import SINCH, TELESIGN, USER, V1, Harness, running_gateway
from tests.phones import SinchPhone, TeleSignPhone, TwilioPhone, wait_sent

PHOTO = ("https://media.example.com/claims/4711/photo-front.jpg", "image/jpeg")
REPLY_PHOTO = "https://cdn.example.com/claim/receipt.png"
LONG_CODE = "+15005550021"  # a TeleSign tenant whose sender is not a short code: no MMS from it


def send_media_dialog(text: str, context: dict[str, Any]) -> dict[str, Any]:
    if context.get("smsMedia"):
        return {
            "output": text_output(
                "Got it.", smsAction={"command": "smsActSendMedia", "parameters": {"mediaURL": [REPLY_PHOTO]}}
            )
        }
    return {"output": text_output(f"You said: {text}")}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sinch=True, telesign=True) as harness:
        harness.watson.v1_dialog = send_media_dialog
        yield harness


def telesign_settings(**changes: Any) -> Callable[[Config], Config]:
    """A `configure` for running_gateway: the TeleSign tenant's settings changed."""

    def configure(config: Config) -> Config:
        def changed(t: TenantConfig) -> TenantConfig:
            return dataclasses.replace(t, provider=dataclasses.replace(t.provider, **changes))

        return dataclasses.replace(
            config, tenants=tuple(changed(t) if t.phone_number == TELESIGN else t for t in config.tenants)
        )

    return configure


async def test_a_tenant_on_each_provider_in_one_gateway_sends_and_receives_mms(gw: Harness) -> None:
    phones = [TwilioPhone(gw, V1), SinchPhone(gw), TeleSignPhone(gw)]
    await asyncio.gather(*(p.send("the damage", [PHOTO]) for p in phones))
    twilio, sinch, telesign = [await wait_sent(p, n) for p, n in zip(phones, (1, 1, 2), strict=True)]
    assert [(m.text, m.media_urls) for m in twilio] == [("Got it.", (REPLY_PHOTO,))]
    assert [(m.text, m.media_urls) for m in sinch] == [("Got it.", (REPLY_PHOTO,))]
    assert [(m.text, m.media_urls) for m in telesign] == [("Got it.", ()), ("", (REPLY_PHOTO,))]
    assert [m.from_ for m in (*twilio, *sinch, *telesign)] == [V1, SINCH, TELESIGN, TELESIGN]
    seen = sorted((c["smsTenantPhoneNumber"], c["smsMedia"][0]["mediaContentType"]) for c in gw.v1_contexts())
    assert seen == sorted([(V1, "image/jpeg"), (SINCH, "image/jpeg"), (TELESIGN, "image/jpeg")])
    # TeleSign's MMS goes with its SMS fallback: the link, after fallbackTime.
    mms = telesign[1].raw
    assert mms.channels == ["mms", "sms"] and mms.fallback_time == 300 and mms.sms_text == REPLY_PHOTO


async def test_telesigns_fallback_to_sms_is_counted_and_the_engine_hears_of_it(gw: Harness) -> None:
    telesign = TeleSignPhone(gw)
    await telesign.send("the damage", [PHOTO])
    _, mms = await wait_sent(telesign, 2)
    callback = telesign.fake.deliver(mms.raw, "mms_timeout")  # 3056 on MMS, then SMS delivered
    assert (await telesign.fake.post_callback(gw.http, telesign.url, callback))[0] == 200
    assert (await telesign.fake.post_callback(gw.http, telesign.url, callback))[0] == 200  # sent again: once
    assert gw.metric("smsgw_mms_fallbacks_total", provider="telesign") == 1
    assert gw.metric("smsgw_delivery_statuses_total", status="mms_fallback") == 1
    await telesign.send("and now?")
    await wait_sent(telesign, 3)
    context = gw.v1_contexts()[1]
    assert context["smsMediaFallback"] is True and context.get("smsError") is None
    assert context["smsMediaFallbackInfo"]["code"] == "3056"
    assert context["smsMediaFallbackInfo"]["messageID"] == mms.our_id


@pytest.mark.parametrize("final", ["mms_unsupported", "device_unsupported"])
async def test_mms_the_handset_cannot_take_falls_back_too(gw: Harness, final: str) -> None:
    telesign = TeleSignPhone(gw)
    await telesign.send("the damage", [PHOTO])
    _, mms = await wait_sent(telesign, 2)
    callback = telesign.fake.deliver(mms.raw, final)  # type: ignore[arg-type]
    assert (await telesign.fake.post_callback(gw.http, telesign.url, callback))[0] == 200
    assert gw.metric("smsgw_mms_fallbacks_total", provider="telesign") == 1
    await telesign.send("ok")
    await wait_sent(telesign, 3)
    assert (
        gw.v1_contexts()[1]["smsMediaFallbackInfo"]["code"]
        == {"mms_unsupported": "3062", "device_unsupported": "3055"}[final]
    )


async def test_a_tenant_without_a_short_code_sends_media_as_links(tmp_path: Path) -> None:
    def long_code_tenant(config: Config) -> Config:
        [telesign] = [t for t in config.tenants if t.phone_number == TELESIGN]
        long_code = dataclasses.replace(
            telesign, phone_number=LONG_CODE, provider=dataclasses.replace(telesign.provider, sender_id=None)
        )
        return dataclasses.replace(config, tenants=(*config.tenants, long_code))

    async with running_gateway(tmp_path, telesign=True, configure=long_code_tenant) as gw:
        gw.watson.v1_dialog = send_media_dialog
        assert gw.telesign is not None
        url = f"{gw.url}/sms.receiver/telesign/{LONG_CODE.lstrip('+')}"
        callback = TeleSignPhone(gw).callback("the damage", [PHOTO], USER)
        assert (await gw.telesign.post_callback(gw.http, url, callback))[0] == 200
        [reply] = await gw.telesign.wait_for(1)
        assert reply.channels == ["sms"] and reply.sms_text == f"Got it.\n{REPLY_PHOTO}" and reply.mms_url is None
        assert reply.sender_id == LONG_CODE.lstrip("+")
        assert gw.metric("smsgw_mms_fallbacks_total", provider="telesign") == 1


async def test_digest_authentication_end_to_end(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, telesign=True, configure=telesign_settings(auth_method="digest")) as gw:
        telesign = TeleSignPhone(gw)
        await telesign.send("signed, please")
        [reply] = await wait_sent(telesign, 1)
        assert reply.text == "You said: signed, please" and telesign.fake.rejected == []


async def test_a_refusal_reaches_the_engine_and_throttling_is_retried(gw: Harness) -> None:
    telesign = TeleSignPhone(gw)
    telesign.fake.fail_next(1, 400, code=3102)  # an invalid message type: sending again cannot help
    await telesign.send("hi")
    await gw.settle()
    assert telesign.sent() == [] and telesign.fake.request_count == 1
    telesign.fake.fail_next(1, 429, code=3204, retry_after=0.2)  # rate limited: later
    await telesign.send("hello?")
    [reply] = await wait_sent(telesign, 1)
    assert reply.text == "You said: hello?" and telesign.fake.request_count == 3
    assert gw.v1_contexts()[1]["smsError"]["code"] == "3102"


async def test_a_callback_signed_for_another_customer_or_key_is_refused(gw: Harness) -> None:
    telesign = TeleSignPhone(gw)
    callback = telesign.callback("hi", None, USER)
    other_key = "T3RoZXIga2V5IG9mIGFub3RoZXIgY3VzdG9tZXI="
    status, _ = await telesign.fake.post_callback(gw.http, telesign.url, callback, api_key=other_key)
    assert status == 403
    status, body = await telesign.fake.post_callback(gw.http, telesign.url, callback, as_tsa=False)
    assert status == 200, body  # the bare signature, as TeleSign's SDK checks it
    await asyncio.sleep(0.1)
    await gw.settle()
    assert len(gw.watson.of_kind("v1")) == 1
