"""Every command of SPEC 2.4, sessions, smsError and the failure reply, end to end over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sms_gateway.config.model import Config
from sms_gateway.model import Session
from tests.fakes.watson import text_output
from tests.harness import USER, V1, V2, running_gateway


def action(command: str, **parameters: Any) -> dict[str, Any]:
    return {"command": command, "parameters": parameters} if parameters else {"command": command}


async def test_terminate_session_starts_fresh_next_time(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:

        def dialog(text: str, context: dict[str, Any]) -> dict[str, Any]:
            if text == "bye":
                return {"output": text_output("Goodbye", smsAction=action("terminateSession"))}
            return {"output": text_output(f"You said: {text}"), "context": {"remembered": text}}

        gw.watson.v1_dialog = dialog
        await gw.sms("one")
        await gw.sms("bye")
        await gw.sms("two")
        sent = await gw.wait_sent(3)
        assert [m.body for m in sent] == ["You said: one", "Goodbye", "You said: two"]
        first, bye, fresh = gw.v1_contexts()
        assert bye["smsSessionID"] == first["smsSessionID"] and bye["remembered"] == "one"
        assert fresh["smsSessionID"] != first["smsSessionID"]
        assert "remembered" not in fresh and "conversation_id" not in fresh, "no context carried over"


async def test_session_create_via_sms_disabled_ignores_strangers(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, tenant_overrides={"allow_session_create_via_sms": False}) as gw:
        await gw.sms("anyone there?")
        await gw.settle()
        assert gw.watson.requests == [] and gw.twilio.messages == []


async def test_set_session_timeout_and_timeout_notification(tmp_path: Path) -> None:
    overrides = {"notify_on_session_timeout": True}
    async with running_gateway(tmp_path, tenant_overrides=overrides) as gw:

        def dialog(text: str, context: dict[str, Any]) -> dict[str, Any]:
            if text == "smsResponseTimeout":
                return {"output": text_output("We have not received any response. The chat session will end now.")}
            return {"output": text_output("ok", smsAction=action("setSessionTimeoutCount", count=1))}

        gw.watson.v1_dialog = dialog
        await gw.sms("hi")
        await gw.settle()
        session = await gw.store.load_session(V1, USER)
        assert session is not None and session.timeout_seconds == 1
        sent = await gw.wait_sent(2, timeout=5)
        assert sent[1].body.startswith("We have not received any response")
        last = gw.v1_contexts()[-1]
        assert gw.watson.of_kind("v1")[-1].json["input"]["text"] == "smsResponseTimeout"
        assert last["smsSessionID"] == session.session_id
        await asyncio.sleep(0.2)
        assert await gw.store.load_session(V1, USER) is None


async def test_expired_session_without_notification_ends_quietly(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, tenant_overrides={"timeout_for_session": 1}) as gw:
        await gw.sms("hi")
        await gw.wait_sent(1)
        first = gw.v1_contexts()[0]["smsSessionID"]
        await asyncio.sleep(1.5)
        assert await gw.store.load_session(V1, USER) is None
        await gw.sms("back again")
        await gw.wait_sent(2)
        assert len(gw.twilio.messages) == 2
        assert gw.v1_contexts()[1]["smsSessionID"] != first


async def test_force_no_input_turn(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:

        def dialog(text: str, context: dict[str, Any]) -> dict[str, Any]:
            if text == "smsNoInputTurn":
                return {"output": text_output("And here is the follow-up.")}
            return {"output": text_output("Checking...", smsAction=action("smsActForceNoInputTurn"))}

        gw.watson.v1_dialog = dialog
        await gw.sms("status?")
        sent = await gw.wait_sent(2)
        assert [m.body for m in sent] == ["Checking...", "And here is the follow-up."]
        assert [r.json["input"]["text"] for r in gw.watson.of_kind("v1")] == ["status?", "smsNoInputTurn"]


async def test_force_no_input_loop_is_capped(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        again = {"output": text_output("again", smsAction=action("smsActForceNoInputTurn"))}
        gw.watson.v1_dialog = lambda text, ctx: again
        await gw.sms("loop")
        await gw.settle()
        texts = [r.json["input"]["text"] for r in gw.watson.of_kind("v1")]
        assert texts == ["loop"] + ["smsNoInputTurn"] * 4, "capped at 5 chained turns"
        await gw.sms("still alive?")
        await gw.settle()
        assert gw.watson.of_kind("v1")[5].json["input"]["text"] == "still alive?"


async def test_set_conversation_config_switches_workspace_within_the_turn(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:

        def dialog(text: str, context: dict[str, Any]) -> dict[str, Any]:
            if "smsActSetConversationConfig" in str(context.get("switched")):
                return {"output": text_output("never")}
            return {
                "output": text_output(
                    "Transferring you to billing.", smsAction=action("smsActSetConversationConfig", workspaceID="WS2")
                )
            }

        def routed(text: str, context: dict[str, Any]) -> dict[str, Any]:
            return dialog(text, context)

        gw.watson.v1_dialog = routed
        await gw.sms("I have a billing question")
        # The second request of the turn goes to WS2; make WS2 answer differently.
        await gw.settle()
        paths = [r.path for r in gw.watson.of_kind("v1")]
        assert paths[:2] == ["/v1/workspaces/WS1/message", "/v1/workspaces/WS2/message"]
        second = gw.watson.of_kind("v1")[1].json
        assert second["input"]["text"] == "I have a billing question"
        assert "conversation_id" not in second["context"], "a new workspace starts a new context"
        assert second["context"]["smsSessionID"] == gw.watson.of_kind("v1")[0].json["context"]["smsSessionID"]
        body = gw.twilio.messages[0].body
        assert body.startswith("Transferring you to billing.\n"), "the texts of both workspaces are joined"
        # The session stays on WS2 for its next turn.
        await gw.sms("thanks")
        await gw.settle()
        assert gw.watson.of_kind("v1")[-1].path.endswith("/WS2/message")


async def test_soe_edit_of_output_text_is_the_reply_and_generic_media_still_sent(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        # What IBM's SOE samples do: Watson answered; the SOE rewrote output.text and left output.generic alone.
        output = text_output("Your balance is <balance>.")
        output["generic"].append({"response_type": "image", "source": "https://e.example.com/chart.png"})
        output["text"] = ["Your balance is $12.34."]
        gw.watson.v1_dialog = lambda text, ctx: {"output": output}
        await gw.sms("balance")
        (sent,) = await gw.wait_sent(1)
        assert sent.body == "Your balance is $12.34."
        assert sent.media_urls == ["https://e.example.com/chart.png"]


async def test_options_are_numbered_text_with_prefix(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        output = text_output("Let's get you a quote.")
        output["generic"].append(
            {
                "response_type": "option",
                "title": "Which of these items do you want to insure?",
                "options": [
                    {"label": label, "value": {"input": {"text": label}}} for label in ("Boat", "Car", "House")
                ],
            }
        )
        output["smsAction"] = action("smsActSetOptionsConfig", prefixText="Enter %s for ")
        gw.watson.v1_dialog = lambda text, ctx: {"output": output}
        await gw.sms("insurance")
        sent = await gw.wait_sent(1)
        assert sent[0].body == (
            "Let's get you a quote.\nWhich of these items do you want to insure?\n"
            "Enter 1 for Boat\nEnter 2 for Car\nEnter 3 for House"
        )
        # Answering with a number sends the option's value, as WA's own SMS channel does.
        gw.watson.v1_dialog = lambda text, ctx: {"output": text_output(f"You chose {text}")}
        await gw.sms("2")
        await gw.sms("2")
        sent = await gw.wait_sent(3)
        assert [m.body for m in sent[1:]] == ["You chose Car", "You chose 2"], "only right after the list"


async def test_vgw_send_sms_sends_its_own_message(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        send = {
            "command": "vgwActSendSMS",
            "parameters": {"message": "Your claim form", "mediaURL": "https://forms.example.com/claim.pdf"},
        }
        gw.watson.v1_dialog = lambda text, ctx: {
            "output": text_output("I have sent you the form.", vgwActionSequence=[send, {"command": "vgwActPlayText"}])
        }
        await gw.sms("send me the form")
        sent = await gw.wait_sent(2)
        by_body = {m.body: m for m in sent}
        assert by_body["Your claim form"].media_urls == ["https://forms.example.com/claim.pdf"]
        assert by_body["Your claim form"].to == USER and by_body["Your claim form"].from_ == V1
        assert by_body["I have sent you the form."].media_urls == []


async def test_v2_commands_from_user_defined_and_context(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:

        def dialog(text: str, user_defined: dict[str, Any]) -> dict[str, Any]:
            if text == "bye":
                return {
                    "output": {
                        "generic": [
                            {"response_type": "text", "text": "Bye"},
                            {
                                "response_type": "user_defined",
                                "user_defined": {"smsAction": action("terminateSession")},
                            },
                        ]
                    }
                }
            return {
                "output": {"generic": [{"response_type": "text", "text": "pic"}]},
                "user_defined": {"smsAction": action("smsActSendMedia", mediaURL=["https://e.example.com/a.png"])},
            }

        gw.watson.v2_dialog = dialog
        await gw.sms("pic please", tenant=V2)
        sent = await gw.wait_sent(1)
        assert sent[0].media_urls == ["https://e.example.com/a.png"]
        await gw.sms("bye", tenant=V2)
        await gw.wait_sent(2)
        await gw.settle()
        assert await gw.store.load_session(V2, USER) is None
        # The smsAction left in the v2 context does not fire again: it is cleared on the next turn.
        second = gw.watson.of_kind("v2_message")[1].json["context"]["skills"]["main skill"]["user_defined"]
        assert second.get("smsAction", "cleared") is None


async def test_unknown_commands_and_bad_parameters_are_not_fatal(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        gw.watson.v1_dialog = lambda text, ctx: {
            "output": text_output(
                "still here",
                smsAction=[
                    action("smsActTeleport"),
                    action("smsActSendMedia", mediaURL=5),
                    {"command": 7},
                    "junk",
                    action("setSessionTimeoutCount", count="soon"),
                ],
            )
        }
        await gw.sms("hi")
        sent = await gw.wait_sent(1)
        assert sent[0].body == "still here" and sent[0].media_urls == []


async def test_send_failure_becomes_sms_error_on_the_next_turn_once(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        gw.twilio.fail_next(1, status=400, code=21610, message="Attempt to send to unsubscribed recipient")
        await gw.sms("first")
        await gw.settle()
        assert gw.twilio.messages == [] and gw.twilio.request_count == 1, "a 21610 is not retried"
        await gw.sms("second")
        await gw.sms("third")
        await gw.wait_sent(2)
        first, second, third = gw.v1_contexts()
        assert first.get("smsError") is None
        assert second["smsError"]["code"] == "21610"
        assert "unsubscribed" in second["smsError"]["message"]
        assert "smsError" not in third, "reported once, then removed from the context"


@pytest.mark.parametrize("notify", [True, False])
async def test_an_sms_error_waiting_when_the_session_timed_out_reaches_the_engine_once(
    tmp_path: Path, notify: bool
) -> None:
    # No sweeper in the way: the user's message itself finds the session timed out.
    async with running_gateway(
        tmp_path, tenant_overrides={"notify_on_session_timeout": notify}, sweep_interval=3600
    ) as gw:
        await gw.store.save_session(Session.new(V1, USER, 60, now=time.time() - 120))
        await gw.store.push_sms_error(V1, USER, {"code": "30007", "message": "filtered"})
        await gw.sms("back again")
        await gw.settle()
        requests = gw.watson.of_kind("v1")
        texts = [r.json["input"]["text"] for r in requests]
        errors = [r.json["context"].get("smsError") for r in requests]
        if notify:  # the timeout turn, the last of the old session, is the next turn: it gets the error
            assert texts == ["smsResponseTimeout", "back again"]
            assert [e and e["code"] for e in errors] == ["30007", None]
        else:  # no timeout turn: the new session's first turn gets it
            assert texts == ["back again"] and errors[0]["code"] == "30007"
        assert await gw.store.pop_sms_errors(V1, USER) == []


async def test_an_sms_error_waits_while_a_stranger_is_ignored(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, tenant_overrides={"allow_session_create_via_sms": False}) as gw:
        await gw.store.push_sms_error(V1, USER, {"code": "30007", "message": "filtered"})
        await gw.sms("anyone there?")
        await gw.settle()
        assert gw.watson.requests == []
        assert await gw.store.pop_sms_errors(V1, USER) == [{"code": "30007", "message": "filtered"}]


async def test_provider_429_and_500_are_retried(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        gw.twilio.fail_next(1, status=429, code=20429, retry_after="0")
        gw.twilio.fail_next(1, status=500)
        await gw.sms("hi")
        sent = await gw.wait_sent(1)
        assert sent[0].body == "You said: hi" and gw.twilio.request_count == 3
        await gw.sms("next")
        await gw.settle()
        assert gw.v1_contexts()[1].get("smsError") is None


async def test_failed_delivery_status_becomes_sms_error_and_statuses_are_deduplicated(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        await gw.sms("hi")
        sent = (await gw.wait_sent(1))[0]
        assert await gw.post_status(sent, "sent") == 200
        assert await gw.post_status(sent, "undelivered", ErrorCode="30007") == 200
        assert await gw.post_status(sent, "undelivered", ErrorCode="30007") == 200
        await gw.sms("did you get it?")
        await gw.settle()
        assert gw.v1_contexts()[1]["smsError"]["code"] == "30007"
        async with gw.http.get(gw.url + "/metrics") as response:
            metrics = await response.text()
        assert 'smsgw_delivery_statuses_total{status="undelivered"} 1.0' in metrics
        assert 'smsgw_webhooks_total{outcome="duplicate",route="status"} 1.0' in metrics


async def test_status_callback_with_bad_signature_or_unknown_status(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        await gw.sms("hi")
        sent = (await gw.wait_sent(1))[0]
        assert sent.status_callback
        form = {"MessageSid": sent.sid, "MessageStatus": "delivered", "From": V1, "To": USER}
        async with gw.http.post(sent.status_callback, data=form, headers={"X-Twilio-Signature": "bad"}) as r:
            assert r.status == 403
        form["MessageStatus"] = "exploded"
        async with gw.http.post(
            sent.status_callback, data=form, headers={"X-Twilio-Signature": gw.sign(sent.status_callback, form)}
        ) as r:
            assert r.status == 400


async def test_engine_down_sends_the_failure_message_after_retries(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        gw.watson.fail(2, status=503)
        await gw.sms("hello?")
        sent = await gw.wait_sent(1)
        assert sent[0].body == "Sorry, we can't answer right now."
        assert len(gw.watson.of_kind("v1")) == 2, "one try plus WATSON_CONVERSATION_MAX_RETRY_NUM=1 retry"
        await gw.sms("and now?")
        sent = await gw.wait_sent(2)
        assert sent[1].body == "You said: and now?"


async def test_engine_timeout_and_bad_json_never_crash_the_worker(tmp_path: Path) -> None:
    def fast(config: Config) -> Config:
        tenants = tuple(
            dataclasses.replace(t, engine=dataclasses.replace(t.engine, read_timeout_ms=200)) for t in config.tenants
        )
        return dataclasses.replace(config, tenants=tenants)

    async with running_gateway(tmp_path, configure=fast) as gw:
        gw.watson.fail(2, status=200, body={"output": text_output("late")}, delay=0.5)
        await gw.sms("timeout")
        await gw.settle()
        gw.watson.fail(1, status=200, body="{not json", content_type="application/json")
        await gw.sms("bad json")
        await gw.settle()
        gw.watson.fail(1, status=200, body=["a", "list"])
        await gw.sms("a list")
        await gw.settle()
        await gw.sms("recovered")
        sent = await gw.wait_sent(4)
        assert [m.body for m in sent] == ["Sorry, we can't answer right now."] * 3 + ["You said: recovered"]


async def test_a_timed_out_send_twilio_did_accept_is_not_sent_again(tmp_path: Path) -> None:
    def slow_reads(config: Config) -> Config:
        tenants = tuple(
            dataclasses.replace(t, provider=dataclasses.replace(t.provider, read_timeout_ms=300))
            for t in config.tenants
        )
        return dataclasses.replace(config, tenants=tenants)

    async with running_gateway(tmp_path, configure=slow_reads) as gw:
        gw.twilio.delay_next(1, seconds=0.8)  # answers after the gateway gave up, but sends all the same
        await gw.sms("hello")
        await gw.wait_sent(1)
        await gw.settle(timeout=15)
        assert [m.body for m in gw.twilio.messages] == ["You said: hello"]
        assert gw.twilio.list_count >= 1, "the retry asked Twilio (ListMessage) before sending again"
        assert gw.twilio.request_count == 1


async def test_a_delivery_status_proves_a_timed_out_send_was_sent(tmp_path: Path) -> None:
    """A status for our message that arrives before the retry (the send's answer was lost) is proof enough: the
    retry neither asks the provider nor sends again."""

    def slow_reads(config: Config) -> Config:
        tenants = tuple(
            dataclasses.replace(t, provider=dataclasses.replace(t.provider, read_timeout_ms=500))
            for t in config.tenants
        )
        return dataclasses.replace(config, tenants=tenants)

    async with running_gateway(tmp_path, configure=slow_reads) as gw:
        gw.twilio.delay_next(1, seconds=0.7)  # accepted, but answered after the gateway gave up
        await gw.sms("hello")
        [sent] = await gw.wait_sent(1)
        assert await gw.post_status(sent, "sent") == 200  # before the retry (1 s after the timeout)
        await gw.settle(timeout=15)
        assert gw.twilio.request_count == 1 and gw.twilio.list_count == 0
        record = await gw.store.find_outbound(parse_qs(urlsplit(sent.status_callback or "").query)["mid"][0])
        assert record is not None and record.provider_message_id == sent.sid
