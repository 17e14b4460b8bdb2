"""Voice Gateway pipes end to end: a simulated call, relays with retries, expiry, failure events; and
`vgwActSendSMS` from every place an engine answer can carry it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sms_gateway import pipes
from sms_gateway.config.model import Credentials
from sms_gateway.jobs import RetryPolicy
from sms_gateway.keys import CONVERSATIONS, JOBS
from sms_gateway.model import InboundMessage, Media
from sms_gateway.web.openapi import schema
from tests.fakes.vgw import FakeVoiceGateway, allow_vgw_callbacks, serve_fake_vgw
from tests.fakes.watson import text_output
from tests.harness import USER, V1, V2, Harness, running_gateway, twilio_media
from tests.redis_server import RedisServer, redis_available

VGW_AUTH = ("voice-gateway", "s3cret-pipe-password")
OVERRIDES = {"control_credentials": Credentials(*VGW_AUTH)}
OTHER_USER = "+15551239999"


def gateway_beside_vgw(tmp_path: Path, **options: Any) -> AbstractAsyncContextManager[Harness]:
    """A gateway whose operator lets pipes call back the Voice Gateway simulator, on 127.0.0.1."""
    return running_gateway(tmp_path, configure=allow_vgw_callbacks, **options)


@pytest.fixture
def fast_relay_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipes, "RELAY_POLICY", RetryPolicy(max_attempts=6, backoff_base=0.02, backoff_cap=0.1))


def engine_texts(gw: Harness) -> list[str]:
    return [r.json["input"]["text"] for r in gw.watson.of_kind("v1")]


@pytest.fixture(params=["sqlite", "memory", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param != "redis":
        yield f"sqlite:///{tmp_path / 'gw.db'}" if request.param == "sqlite" else "memory://"
        return
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server.url


async def test_a_voice_gateway_call_from_pipe_to_hang_up(tmp_path: Path, store_url: str) -> None:
    async with (
        gateway_beside_vgw(tmp_path, tenant_overrides=OVERRIDES, store_url=store_url) as gw,
        serve_fake_vgw() as vgw,
    ):
        call = await vgw.start_call(gw.http, gw.url, V1, USER, auth=VGW_AUTH)
        assert "5551230001" not in call.pipe_id and "5005550001" not in call.pipe_id
        assert len(call.pipe_id) >= 32 and call.created["expiresAt"].endswith("Z")

        # vgwActSendSMS during the call: an MMS with smsMediaURL reaches Twilio from the tenant number.
        status, answer = await call.send_sms("Here is your claim form", media="https://forms.example.com/claim.pdf")
        assert status == 202, answer
        sent = await gw.wait_sent(1)
        assert sent[0].to == USER and sent[0].from_ == V1
        assert sent[0].body == "Here is your claim form"
        assert sent[0].media_urls == ["https://forms.example.com/claim.pdf"]

        # The caller answers with an MMS: it goes to Voice Gateway, not to the engine.
        sid = await gw.sms("Signed, photo attached", media=[(twilio_media(0), "image/jpeg")])
        relays = await vgw.wait_relays(1)
        assert relays[0] == {
            "smsPipeID": call.pipe_id,
            "tenantPhoneNumber": V1,
            "userPhoneNumber": USER,
            "smsMessage": "Signed, photo attached",
            "smsMedia": [{"mediaURL": twilio_media(0), "mediaContentType": "image/jpeg"}],
            "messageID": sid,
        }
        jsonschema.Draft202012Validator(schema("pipe_relay")).validate(relays[0])
        assert [r.call_id for r in vgw.received] == [call.call_id]

        # Another user's messages to the same number still reach the engine.
        await gw.sms("I am not on the call", user=OTHER_USER)
        await gw.wait_sent(2)
        assert engine_texts(gw) == ["I am not on the call"]

        # The call ends: the next message from the caller goes to the engine again.
        assert await call.hang_up() == 204
        assert await call.hang_up() == 404
        await gw.sms("thanks, bye")
        sent = await gw.wait_sent(3)
        await gw.settle()
        assert engine_texts(gw) == ["I am not on the call", "thanks, bye"]
        assert sent[2].to == USER and sent[2].body == "You said: thanks, bye"
        assert len(vgw.relays) == 1 and vgw.problems == []


async def test_a_relay_survives_voice_gateway_being_down_and_arrives_once(
    tmp_path: Path, fast_relay_retries: None
) -> None:
    async with gateway_beside_vgw(tmp_path, allow_anonymous_control=True) as gw, serve_fake_vgw() as vgw:
        call = await vgw.start_call(gw.http, gw.url, V1, USER)
        vgw.fail_next(3, status=503)
        await gw.sms("first")
        await gw.sms("second")
        relays = await vgw.wait_relays(2)
        await gw.settle()
        assert [r["smsMessage"] for r in relays] == ["first", "second"], "in order, each once"
        assert [r.status for r in vgw.received] == [503, 503, 503, 200, 200]
        assert {r["smsPipeID"] for r in relays} == {call.pipe_id}
        assert gw.watson.requests == [] and gw.twilio.messages == []
        assert await gw.store.dead_letters(10) == []


async def test_a_relay_that_keeps_failing_is_dead_lettered_then_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipes, "RELAY_POLICY", RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_cap=0.05))
    async with gateway_beside_vgw(tmp_path, allow_anonymous_control=True) as gw, serve_fake_vgw() as vgw:
        await vgw.start_call(gw.http, gw.url, V1, USER)
        vgw.fail_next(2, status=500)
        await gw.sms("are you there?")
        await gw.settle()
        dead = await gw.store.dead_letters(10)
        assert [job.kind for job in dead] == [pipes.PIPE_RELAY]
        assert vgw.relays == [] and gw.watson.requests == [], "kept, never given to the engine"
        assert await gw.store.replay_dead_letter(dead[0].job_id, 0.0)
        gw.app[JOBS].notify()
        relays = await vgw.wait_relays(1)
        assert relays[0]["smsMessage"] == "are you there?"


async def test_voice_gateway_refusing_a_relay_is_final(tmp_path: Path, fast_relay_retries: None) -> None:
    async with gateway_beside_vgw(tmp_path, allow_anonymous_control=True) as gw, serve_fake_vgw() as vgw:
        await vgw.start_call(gw.http, gw.url, V1, USER)
        vgw.fail_next(1, status=404)
        await gw.sms("hello?")
        await gw.settle()
        assert [r.status for r in vgw.received] == [404]
        assert [job.kind for job in await gw.store.dead_letters(10)] == [pipes.PIPE_RELAY]
        assert gw.watson.requests == []


async def test_a_message_processed_twice_is_relayed_once(tmp_path: Path) -> None:
    async with gateway_beside_vgw(tmp_path, allow_anonymous_control=True) as gw, serve_fake_vgw() as vgw:
        await vgw.start_call(gw.http, gw.url, V1, USER)
        message = InboundMessage("twilio", "SM" + "7" * 32, V1, USER, "again?", (Media("https://x.example/a.png"),))
        await gw.app[CONVERSATIONS].handle_inbound(message)
        await gw.app[CONVERSATIONS].handle_inbound(message)  # e.g. re-run after a crash
        await vgw.wait_relays(1)
        await gw.settle()
        await asyncio.sleep(0.1)
        assert len(vgw.received) == 1
        assert vgw.relays[0]["smsMedia"] == [{"mediaURL": "https://x.example/a.png", "mediaContentType": None}]


async def test_a_message_that_arrived_during_the_call_reaches_it_after_hang_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipes, "RELAY_POLICY", RetryPolicy(max_attempts=5, backoff_base=0.3, backoff_cap=0.3))
    async with gateway_beside_vgw(tmp_path, allow_anonymous_control=True) as gw, serve_fake_vgw() as vgw:
        call = await vgw.start_call(gw.http, gw.url, V1, USER)
        vgw.fail_next(1)
        await gw.sms("last words")
        while not vgw.received:
            await asyncio.sleep(0.01)
        assert await call.hang_up() == 204  # while the relay waits for its retry
        relays = await vgw.wait_relays(1)
        assert relays[0]["smsMessage"] == "last words" and relays[0]["smsPipeID"] == call.pipe_id
        await gw.settle()
        assert gw.watson.requests == []


async def test_pipes_expire_and_the_engine_gets_the_messages_again(tmp_path: Path) -> None:
    async with gateway_beside_vgw(tmp_path, allow_anonymous_control=True) as gw, serve_fake_vgw() as vgw:
        call = await vgw.start_call(gw.http, gw.url, V1, USER, expiration=1)
        await gw.sms("during the call")
        await vgw.wait_relays(1)
        await asyncio.sleep(1.1)
        status, answer = await call.send_sms("too late")
        assert status == 404 and answer["error"]["code"] == "notFound"
        await gw.sms("after the call")
        sent = await gw.wait_sent(1)
        assert sent[0].body == "You said: after the call"
        assert engine_texts(gw) == ["after the call"] and len(vgw.relays) == 1


async def test_a_new_pipe_for_the_same_numbers_replaces_the_old_one(tmp_path: Path) -> None:
    async with gateway_beside_vgw(tmp_path, allow_anonymous_control=True) as gw, serve_fake_vgw() as vgw:
        first = await vgw.start_call(gw.http, gw.url, V1, USER)
        second = await vgw.start_call(gw.http, gw.url, V1, USER)
        assert first.pipe_id != second.pipe_id
        await gw.sms("which call?")
        relays = await vgw.wait_relays(1)
        assert relays[0]["smsPipeID"] == second.pipe_id and vgw.received[0].call_id == second.call_id
        assert (await first.send_sms("old"))[0] == 404


async def test_a_failed_pipe_send_is_reported_to_voice_gateway(tmp_path: Path) -> None:
    async with gateway_beside_vgw(tmp_path, allow_anonymous_control=True) as gw, serve_fake_vgw() as vgw:
        call = await vgw.start_call(gw.http, gw.url, V1, USER)
        gw.twilio.fail_next(status=400, code=21610, message="Attempt to send to unsubscribed recipient")
        status, answer = await call.send_sms("Your code is 1234")
        assert status == 202
        events = await vgw.wait_events(1)
        assert events[0] == {
            "smsPipeID": call.pipe_id,
            "tenantPhoneNumber": V1,
            "userPhoneNumber": USER,
            "event": "smsFailed",
            "messageID": answer["messageID"],
            "error": {"code": "21610", "message": "Attempt to send to unsubscribed recipient"},
        }
        jsonschema.Draft202012Validator(schema("pipe_event")).validate(events[0])
        await gw.settle()
        assert gw.twilio.messages == [] and vgw.relays == []
        assert await gw.store.pop_sms_errors(V1, USER) == [], "no session learns of it: the call does"


async def test_a_pipe_send_the_carrier_did_not_deliver_is_reported_too(tmp_path: Path) -> None:
    async with gateway_beside_vgw(tmp_path, allow_anonymous_control=True) as gw, serve_fake_vgw() as vgw:
        call = await vgw.start_call(gw.http, gw.url, V1, USER)
        status, answer = await call.send_sms("Your code is 1234")
        assert status == 202
        sent = (await gw.wait_sent(1))[0]
        assert await gw.post_status(sent, "undelivered", ErrorCode="30006", ErrorMessage="Landline") == 200
        assert await gw.post_status(sent, "undelivered", ErrorCode="30006", ErrorMessage="Landline") == 200
        events = await vgw.wait_events(1)
        assert events[0]["event"] == "smsFailed" and events[0]["messageID"] == answer["messageID"]
        assert events[0]["error"] == {"code": "30006", "message": "Landline"}
        await gw.settle()
        assert len(vgw.events) == 1, "a repeated status callback is one event"


async def test_pipe_sends_obey_the_sending_rules(tmp_path: Path) -> None:
    async with gateway_beside_vgw(tmp_path, allow_anonymous_control=True) as gw, serve_fake_vgw() as vgw:
        call = await vgw.start_call(gw.http, gw.url, V1, USER)
        media = [f"https://cdn.example.com/p{n}.jpg" for n in range(12)]
        status, answer = await call.send_sms("Your photos", media=media)
        assert status == 202 and len(answer["messageIDs"]) == 2 and answer["messageID"] == answer["messageIDs"][0]
        sent = await gw.wait_sent(2)
        assert [len(m.media_urls) for m in sent] == [10, 2] and sent[0].body == "Your photos"

        status, answer = await call.send_sms(
            "One good, one private", media=["https://cdn.example.com/ok.png", "http://10.0.0.5/secret.png"]
        )
        assert status == 202
        assert [w["code"] for w in answer["warnings"]] == ["mediaURLNotPublic"]
        sent = await gw.wait_sent(3)
        assert sent[2].media_urls == ["https://cdn.example.com/ok.png"]

        status, answer = await call.send_sms(media=["http://127.0.0.1/x.png", "http://intranet.local/y.png"])
        assert status == 400 and answer["error"]["code"] == "nothingToSend"
        assert answer["error"]["field"] == "smsMediaURL" and len(answer["error"]["details"]) == 2

        status, answer = await call.send_sms("word " * 700)  # 3,500 characters
        assert status == 202 and len(answer["messageIDs"]) == 3
        await gw.wait_sent(6)
        await gw.settle()
        assert all(len(m.body or "") <= 1600 for m in gw.twilio.messages)
        assert len(gw.twilio.messages) == 6


# vgwActSendSMS in an SMS session, from each place an answer can carry it ------------------------------------
SEND = {
    "command": "vgwActSendSMS",
    "parameters": {"message": "Your receipt", "mediaURL": ["https://r.example.com/1.pdf"]},
}


def _sent_pair(gw: Harness) -> tuple[Any, Any]:
    by_body = {m.body: m for m in gw.twilio.messages}
    return by_body["Your receipt"], by_body["Done."]


async def test_vgw_send_sms_from_output_vgw_action(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        gw.watson.v1_dialog = lambda text, ctx: {"output": text_output("Done.", vgwAction=SEND)}
        await gw.sms("receipt please")
        await gw.wait_sent(2)
        receipt, reply = _sent_pair(gw)
        assert receipt.media_urls == ["https://r.example.com/1.pdf"] and receipt.to == USER and receipt.from_ == V1
        assert reply.media_urls == []


async def test_vgw_send_sms_from_context_vgw_action_to_another_user(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        send = {
            "command": "vgwActSendSMS",
            "parameters": {  # the tenant's own number, written otherwise
                "message": "Your receipt",
                "userPhoneNumber": OTHER_USER,
                "tenantPhoneNumber": "1 (500) 555-0001",
            },
        }
        gw.watson.v1_dialog = lambda text, ctx: {"output": text_output("Done."), "context": {"vgwAction": send}}
        await gw.sms("send it to my wife")
        await gw.wait_sent(2)
        receipt, reply = _sent_pair(gw)
        assert receipt.to == OTHER_USER and receipt.from_ == V1
        assert reply.to == USER and reply.from_ == V1


async def test_vgw_send_sms_from_a_user_defined_item(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        gw.watson.v2_dialog = lambda text, ud: {
            "output": {
                "generic": [
                    {"response_type": "text", "text": "Done."},
                    {"response_type": "user_defined", "user_defined": {"vgwAction": SEND}},
                ]
            }
        }
        await gw.sms("receipt please", tenant=V2)
        await gw.wait_sent(2)
        receipt, reply = _sent_pair(gw)
        assert receipt.media_urls == ["https://r.example.com/1.pdf"] and receipt.to == USER and receipt.from_ == V2
        assert reply.to == USER and reply.media_urls == []


def test_the_simulator_rejects_a_relay_without_the_spec_shape() -> None:
    assert FakeVoiceGateway._check({"smsPipeID": "p"}) is not None
    assert (
        FakeVoiceGateway._check(
            {
                "smsPipeID": "p",
                "tenantPhoneNumber": "1",
                "userPhoneNumber": "2",
                "smsMessage": "",
                "smsMedia": [{"mediaURL": "u"}],
            }
        )
        is not None
    )
