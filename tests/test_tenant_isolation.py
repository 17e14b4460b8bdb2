"""One tenant cannot act as another, over real HTTP: an engine sends only from its own tenant's number, and a
delivery status reaches a message only when it comes from the tenant that sent the message, whatever the provider.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from sms_gateway.config.model import Config, TenantConfig
from sms_gateway.providers.twilio import TwilioConfig
from tests.fakes.watson import text_output
from tests.harness import SOE, USER, V1, V2, Harness, running_gateway
from tests.phones import TeleSignPhone, wait_sent

TENANT_B_TOKEN = "tenant-b-auth-token"  # SOE's own Twilio account's token; V1 keeps the harness's


def soe_on_its_own_twilio_account(config: Config) -> Config:
    def own(tenant: TenantConfig) -> TenantConfig:
        assert isinstance(tenant.provider, TwilioConfig)
        return dataclasses.replace(tenant, provider=dataclasses.replace(tenant.provider, password=TENANT_B_TOKEN))

    return dataclasses.replace(config, tenants=tuple(own(t) if t.phone_number == SOE else t for t in config.tenants))


def v1_contexts(gw: Harness) -> list[dict[str, Any]]:
    """What V1's engine saw, turn by turn (other tenants' engines are the same fake)."""
    return [c for c in gw.v1_contexts() if c["smsTenantPhoneNumber"] == V1]


def our_message_id(status_callback: str | None) -> str:
    assert status_callback is not None
    return parse_qs(urlsplit(status_callback).query)["mid"][0]


# An engine speaks for its own tenant only -------------------------------------------------------------------
async def test_an_engine_cannot_send_from_another_tenants_number(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        send = {
            "command": "vgwActSendSMS",
            "parameters": {"message": "Your account is locked, call +15550000000", "tenantPhoneNumber": V2},
        }
        gw.watson.v1_dialog = lambda text, ctx: {"output": text_output(f"You said: {text}", vgwAction=send)}
        with structlog.testing.capture_logs() as logs:
            await gw.sms("hi")
            await gw.settle()
        assert [(m.from_, m.body) for m in gw.twilio.messages] == [(V1, "You said: hi")]
        refused = [e for e in logs if e["event"] == "command_ignored" and e.get("command") == "vgwActSendSMS"]
        assert len(refused) == 1 and "tenantPhoneNumber" in refused[0]["reason"]
        await gw.sms("again")
        await gw.settle()
        assert v1_contexts(gw)[1].get("smsError") is None, "the engine hears nothing of a send that never was"


# Statuses reach only the sending tenant's messages ----------------------------------------------------------
async def test_a_twilio_status_signed_by_another_tenant_cannot_touch_a_message(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, configure=soe_on_its_own_twilio_account) as gw:
        await gw.sms("hi")
        sent = (await gw.wait_sent(1))[0]
        assert sent.status_callback is not None
        # Tenant B signs a failure for A's message with its own token, From its own number.
        forged = {
            "MessageSid": sent.sid,
            "MessageStatus": "failed",
            "ErrorCode": "30007",
            "From": SOE,
            "To": USER,
            "AccountSid": sent.account_sid,
            "ApiVersion": "2010-04-01",
        }
        signature = gw.sign(sent.status_callback, forged, token=TENANT_B_TOKEN)
        async with gw.http.post(
            sent.status_callback, data=forged, headers={"X-Twilio-Signature": signature}
        ) as response:
            assert response.status == 403
        outbound = await gw.store.find_outbound(our_message_id(sent.status_callback))
        assert outbound is not None and outbound.provider_message_id in (None, sent.sid)
        await gw.sms("did you get it?")
        await gw.settle()
        assert v1_contexts(gw)[1].get("smsError") is None

        # The status of the tenant that sent it, signed with its token, still counts.
        assert await gw.post_status(sent, "failed", ErrorCode="30007") == 200
        await gw.sms("and now?")
        await gw.settle()
        assert v1_contexts(gw)[2]["smsError"]["code"] == "30007"


async def test_another_tenants_status_for_the_same_provider_id_does_not_silence_the_real_one(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, configure=soe_on_its_own_twilio_account) as gw:
        await gw.sms("hi")
        sent = (await gw.wait_sent(1))[0]
        # Tenant B reports A's Twilio id as undelivered, naming no message of ours: valid for B, about nothing of A.
        url = f"{gw.url}/sms.receiver/twilio/status"
        early = {
            "MessageSid": sent.sid,
            "MessageStatus": "undelivered",
            "ErrorCode": "30003",
            "From": SOE,
            "To": USER,
            "AccountSid": sent.account_sid,
            "ApiVersion": "2010-04-01",
        }
        async with gw.http.post(
            url, data=early, headers={"X-Twilio-Signature": gw.sign(url, early, token=TENANT_B_TOKEN)}
        ) as response:
            assert response.status == 200
        # A's own status, the same id and status name, still reaches A's engine.
        assert await gw.post_status(sent, "undelivered", ErrorCode="30003") == 200
        await gw.sms("did you get it?")
        await gw.settle()
        assert v1_contexts(gw)[1]["smsError"]["code"] == "30003"


async def test_a_status_of_another_providers_tenant_naming_a_message_is_ignored(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, telesign=True) as gw:
        await gw.sms("hi")
        twilio_sent = (await gw.wait_sent(1))[0]
        victim_id = our_message_id(twilio_sent.status_callback)
        telesign = TeleSignPhone(gw)
        await telesign.send("hello")
        (own,) = await wait_sent(telesign, 1)

        # TeleSign's tenant, with a valid signature of its account, reports a failure naming V1's message.
        forged = telesign.fake.deliver(own.raw, "failed")
        forged["external_id"] = victim_id
        with structlog.testing.capture_logs() as logs:
            status, _ = await telesign.fake.post_callback(gw.http, telesign.url, forged)
        assert status == 200  # the request is the TeleSign tenant's own and genuine; it only tells nothing of V1's
        outbound = await gw.store.find_outbound(victim_id)
        assert outbound is not None and outbound.provider_message_id in (None, twilio_sent.sid)
        await gw.sms("did you get it?")
        await gw.settle()
        assert v1_contexts(gw)[1].get("smsError") is None
        ignored = [e for e in logs if e["event"] == "status_ignored"]
        assert len(ignored) == 1 and ignored[0]["message_id"] == victim_id
